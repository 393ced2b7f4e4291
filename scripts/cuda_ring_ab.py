"""The ring kernel against its first form (commit 21e8261), in one process (a GPU machine).

Usage: PYTHONPATH=$PWD python scripts/cuda_ring_ab.py [--json PATH]

Run 63's first form of mglu_rowdot_ring (16-byte cp.async with guards recomputed every
stage, XOR-swizzled slot rows, 122 registers at one mask) ran 16 tokens at one mask in 38.9
us at 4096x14336, fp16, the current form 49.5 (run 66). This compiles the first form's text
(git show 21e8261, in a namespace) beside the package's kernels, also with the current
form's per-block starting stage patched in ("first+stagger"), and the current form with the
first form's XOR-swizzled 256-byte slot rows ("current+swizzle"), and times them with the
current one (ring3, fp16, 4096x14336 and 4096x11008, n_masks 1 and 4, 16 and 2 tokens)
with the bench's timer, each output checked against the float64 torch backend first.
"""

import argparse
import json
import subprocess
import sys

import cupy
import numpy as np
import torch

from mglu.backends import REGISTRY, cuda_backend
from mglu.backends.cuda_backend import launcher
from mglu.bench.harness import Bound, copy_GBps, l2_bytes, rotation_copies, time_bounds
from mglu.conformance.tolerances import bound, rel_error

DEV = torch.device("cuda", 0)
FIRST = "21e8261"


def first_forms(path: str | None = None) -> dict[str, str]:
    """Name -> source text of the first form (``path``, else git show) and of the first form
    with the stagger."""
    text = open(path).read() if path else subprocess.run(
        ["git", "show", f"{FIRST}:mglu/backends/cuda_backend/mglu_ring.cu"], capture_output=True, text=True,
        check=True).stdout
    text = text.replace('#include "mglu_common.cuh"\n', "")
    stagger = text.replace("    const int KT = d_model / RBK;\n",
                           "    const int KT = d_model / RBK;\n    const int k_first = blockIdx.x % KT;\n", 1)
    for call in ("(i64)s * RBK", "(i64)nk * RBK"):
        var = call.split(")")[1].split("*")[0].strip()
        stagger = stagger.replace(call, f"(i64)({var} + k_first < KT ? {var} + k_first : {var} + k_first - KT) * RBK")
    assert stagger.count("k_first") == 7
    current = (launcher.HERE / "mglu_ring.cu").read_text().replace('#include "mglu_common.cuh"\n', "")
    swizzled = current
    for old, new in (("W = RBN * RROW, X = 16 * RROW", "W = RBN * RBK * 2, X = 16 * RBK * 2"),
                     ("src.wd[j] = r * RROW + 16 * c;", "src.wd[j] = 16 * swz<16>(r, c);"),
                     ("src.xd[j] = R::W + t * RROW + 16 * c;", "src.xd[j] = R::W + 16 * swz<16>(t, c);"),
                     ("sx + a_row * RROW + 16 * (c + a_dc)", "sx + 16 * swz<16>(a_row, c + a_dc)"),
                     ("sw + b_row * RROW + 16 * (c + b_dc)", "sw + 16 * swz<16>(b_row, c + b_dc)")):
        assert old in swizzled, old
        swizzled = swizzled.replace(old, new)
    return {"first": text, "first+stagger": stagger, "current+swizzle": swizzled}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--shapes", type=int, default=2, help="how many of the two shapes")
    ap.add_argument("--first-source", help="the first form's mglu_ring.cu (default: git show %s)" % FIRST)
    args = ap.parse_args()
    base = launcher.source()
    modules = {}
    for name, text in first_forms(args.first_source).items():
        ns = name.replace("+", "_")
        src = base + f"\nnamespace {ns} {{\n{text}\n}}\n"
        exprs = [f"{ns}::mglu_rowdot_ring<mglu_f16, {n}>" for n in (1, 4)]
        mod = cupy.RawModule(code=src, options=launcher.nvrtc_options(torch.cuda.get_device_capability()),
                             name_expressions=exprs)
        modules[name] = {n: mod.get_function(e) for n, e in zip((1, 4), exprs)}
    copy = copy_GBps(DEV, 1 << 30, 20, 3)
    l2, _ = l2_bytes(DEV)
    print(f"copy {copy:.0f} GB/s", flush=True)
    rows, torch_be = [], REGISTRY["torch"]
    for d_model, d_ff in ((4096, 14336), (4096, 11008))[:args.shapes]:
        for n_masks in (1, 4):
            for tokens in (16, 2):
                nbytes = d_ff * d_model * (2 + n_masks / 8)
                copies, l2_cold = rotation_copies(int(nbytes), l2)
                gen = torch.Generator(device=DEV).manual_seed(n_masks + tokens)
                sets = [(torch.randn(tokens, d_model, device=DEV, generator=gen).half(),
                         (torch.randn(d_ff, d_model, device=DEV, generator=gen) / 64).half(),
                         torch.randint(0, 256, (n_masks, d_ff, d_model // 8), device=DEV, dtype=torch.uint8,
                                       generator=gen)) for _ in range(copies)]
                ref = torch_be.forward(*(t.double() if t.is_floating_point() else t for t in sets[0]), "silu").cpu()
                tol = bound(torch.float16, rel_error(torch_be.forward(*sets[0], "silu"), ref))
                stages = launcher.RING_VARIANTS["ring3"]
                # the first forms' slots: W and x rows of 256 bytes (swizzled), then the mask bytes
                first_smem = stages * ((32 + 16) * 256 + n_masks * 32 * 16)

                def first(s, fn):
                    x, w, m = s
                    out = torch.empty(tokens, d_ff, device=DEV, dtype=torch.float16)
                    with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
                        fn((-(-d_ff // 32),), (128,), (*(np.uint64(t.data_ptr()) for t in (x, w, m)), np.uint64(0),
                           np.uint64(out.data_ptr()), np.uint64(0),
                           *(np.int32(v) for v in (tokens, d_model, d_ff, 0, stages))), shared_mem=first_smem)
                    return out

                forms = {"current": lambda s: cuda_backend.forward(*s, "silu", variant="ring3")}
                for name, fns in modules.items():
                    fns[n_masks].max_dynamic_shared_size_bytes = first_smem
                    forms[name] = lambda s, fn=fns[n_masks]: first(s, fn)
                for name, run in forms.items():
                    err = rel_error(run(sets[0]), ref)
                    t = time_bounds([Bound(step=(lambda s=s: run(s)), read_bytes=int(nbytes)) for s in sets], DEV,
                                    rep_s=0.1, l2_cold=l2_cold, l2=l2)
                    row = dict(d_model=d_model, d_ff=d_ff, n_masks=n_masks, tokens=tokens, form=name,
                               us=t.median_us, pct_copy=100 * nbytes / t.median_us / 1e3 / copy, rel_error=err,
                               bound=tol, ok=err <= tol)
                    rows.append(row)
                    print(f"{d_model}x{d_ff} n={n_masks} T={tokens} {name:14s} {row['us']:7.1f} us "
                          f"{row['pct_copy']:5.1f}% err {err:.2e} {'ok' if row['ok'] else 'WRONG'}", flush=True)
                    if args.json:
                        with open(args.json, "w") as f:
                            json.dump({"copy_GBps": copy, "rows": rows}, f, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
