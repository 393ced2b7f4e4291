"""Time the CUDA backend's forward kernel variants side by side on a GPU; the source of the
launcher's defaults (launcher.GEMV_DEFAULTS_1_TOKEN, MMA_DEFAULTS_FEW_TOKENS, DEFAULT_*).

    out (T, d_ff) = sum_i act(gate_i) * (total - gate_i),   x (T, d_model), W (d_ff, d_model),
    packed masks (n_masks, d_ff, d_model / 8)

Usage: PYTHONPATH=$PWD python scripts/cuda_tune.py [--json PATH] [--shapes 4096x14336 ...]
[--n-masks 1 4 ...] [--tokens 1 16] [--check-shapes 4128x1001 ...]

First, at the odd check shapes (tails: d_model % 128 != 0 or % 32 != 0, d_ff not a multiple
of a block's rows) every variant of 1, 3 and 16 tokens (``--check-tokens``) is checked, not
timed; the ring variants (launcher.RING_VARIANTS) where they serve the shape (4224x1001; the mask-line ones at 2048x1001). Then for every
dtype (bf16, fp16), shape (d_model x d_ff), n_masks and token count (1: the decode kernel's
variants, launcher.GEMV_VARIANTS; 16: the tensor-core kernel's, MMA_VARIANTS; the ring
kernel's, RING_VARIANTS, at 1-16 tokens where it serves the call) it

- compiles each instantiation once and reports that first-call compile time (NVRTC through
  CuPy, plus module load), kept out of every timing;
- checks the output against the float64 torch backend with SPEC §4's rule
  (mglu.conformance.tolerances: rel_error <= bound(dtype, e_torch), e_torch the torch
  backend's error in the same dtype), outputs poisoned (NaN) first;
- times it with the bench's timer (mglu.bench.harness.time_bounds: CUDA events around each
  call after a GPU sleep that hides the host's launch latency, median of REP_S of calls
  after 25 ms of warm-up; inputs rotated through enough copies, rotation_copies, that every
  call reads HBM) on random inputs (never zeros), and prints us, GB/s and % of the copy
  bandwidth measured in the same run (torch copy of a 1 GiB buffer, bytes read + written),
  with bytes d_ff * d_model * (2 + n_masks / 8).

A variant that fails (compile, launch, wrong numbers) is reported as FAIL and the sweep goes
on; the exit status is 1 if any failed. The JSON file is rewritten after every row.
"""

import argparse
import json
import sys
import time
import traceback

import torch

from mglu.backends import REGISTRY
from mglu.backends import cuda_backend
from mglu.backends.base import poisoned_outputs
from mglu.backends.cuda_backend import launcher
from mglu.bench.harness import Bound, copy_GBps, device_name, l2_bytes, rotation_copies, time_bounds
from mglu.conformance.tolerances import bound, rel_error

DEV = torch.device("cuda")
#: the paper preset first, then the largest (the rows a cut-short run must not lose)
SHAPES = ("4096x14336", "8192x28672", "4096x11008")
#: tails of every path: 4128 = 32 * 129 (words paths with a 32-column tail step), 4104 =
#: 8 * 513 (bytes path), 4224 = 128 * 33 (the ring kernel's whole stages, 33 of them: the
#: ring's slots wrap), 2048 = 1024 * 2 (two lines of the ring's mask-line variants, whose
#: blocks start at line 0 or 1); d_ff odd (a partial last block)
CHECK_SHAPES = ("4128x1001", "4104x999", "4224x1001", "2048x1001")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
#: 1 GiB: far above the 50 MB L2, so the copy streams from HBM
COPY_BYTES = 1 << 30
#: seconds of timed calls per row (the bench takes 0.1): ~150 rows must fit one device call
REP_S = 0.05


def inputs(tokens, d_model, d_ff, n_masks, dtype, seed):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(tokens, d_model, device=DEV, generator=gen).to(dtype)
    w = (torch.randn(d_ff, d_model, device=DEV, generator=gen) / d_model**0.5).to(dtype)
    packed = torch.randint(0, 256, (n_masks, d_ff, (d_model + 7) // 8), device=DEV, dtype=torch.uint8, generator=gen)
    return x, w, packed


def judge(x, w, packed):
    """(reference out in float64, the SPEC bound for x.dtype)."""
    torch_fwd = REGISTRY["torch"].forward
    ref = torch_fwd(x.double(), w.double(), packed, "silu")
    e_torch = rel_error(torch_fwd(x, w, packed, "silu"), ref.cpu())
    return ref.cpu(), bound(x.dtype, e_torch)


def compile_seconds(plan, compiled: dict) -> float:
    """First-call compile (and load) time of the plan's instantiation, once per name."""
    if plan.name not in compiled:
        t0 = time.perf_counter()
        launcher._kernel(plan.name, DEV.index or 0)
        compiled[plan.name] = time.perf_counter() - t0
    return compiled[plan.name]


def check(x, w, packed, variant, ref, tol, compiled) -> dict:
    """Compile (timed once per instantiation), run once on poisoned outputs, judge."""
    tokens, d_model = x.shape
    d_ff, n_masks = w.shape[0], packed.shape[0]
    plan = launcher.rowdot_plan(x.dtype, n_masks, launcher.MODE_FWD, tokens, d_ff, d_model, variant)
    row = {"kernel": plan.name, "compile_s": compile_seconds(plan, compiled)}
    with poisoned_outputs():  # NaN where the kernel skipped an output
        out = cuda_backend.forward(x, w, packed, "silu", variant=variant)
    torch.cuda.synchronize()
    err = rel_error(out, ref)
    row.update(rel_error=err, bound=tol, ok=err <= tol)
    if not row["ok"]:
        raise AssertionError(f"rel_error {err:.3g} > bound {tol:.3g}")
    return row


def run_variant(sets, variant, ref, tol, compiled, copy_gbps, l2) -> dict:
    x, w, packed = sets[0]
    tokens, d_model = x.shape
    d_ff, n_masks = w.shape[0], packed.shape[0]
    row = check(x, w, packed, variant, ref, tol, compiled)
    nbytes = d_ff * d_model * (2 + n_masks / 8)
    copies, l2_cold = rotation_copies(int(nbytes), l2)
    bounds = [Bound(step=(lambda s=s: cuda_backend.forward(*s, "silu", variant=variant)), read_bytes=int(nbytes))
              for s in sets[:copies]]
    t = time_bounds(bounds, DEV, rep_s=REP_S, l2_cold=l2_cold, l2=l2)
    row.update(us=t.median_us, p20_us=t.p20_us, p80_us=t.p80_us, copies=copies, l2_cold=l2_cold,
               GBps=nbytes / (t.median_us * 1e-6) / 1e9)
    row["pct_copy"] = 100 * row["GBps"] / copy_gbps
    return row


def variants_for(tokens, dtype, n_masks, d_model, only=None):
    """(the variants of the kernel that runs ``tokens``, those in ``only`` if given; the one the
    launcher takes by default)."""
    names = list(launcher.GEMV_VARIANTS if tokens <= max(launcher.GEMV_TOKENS) else launcher.MMA_VARIANTS)
    # the ring kernel's variants where it serves the call (fresh inputs: 16-byte aligned)
    names += [v for v, (_, lines) in launcher.RING_VARIANTS.items()
              if launcher.ring_ok(dtype, n_masks, launcher.MODE_FWD, tokens, d_model, True, lines)]
    return [v for v in names if only is None or v in only], launcher.default_variant(
        dtype, n_masks, launcher.MODE_FWD, tokens, d_model)


def record(report, row, path):
    report["rows"].append(row)
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the rows here (rewritten after each row)")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), help="d_model x d_ff")
    ap.add_argument("--check-shapes", nargs="*", default=list(CHECK_SHAPES), help="checked only, not timed")
    ap.add_argument("--n-masks", nargs="+", type=int, default=[1, 4, 8])
    ap.add_argument("--tokens", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--variants", help="only these variants (a comma list; default: every one)")
    ap.add_argument("--check-tokens", nargs="+", type=int, default=[1, 3, 16], help="token counts of the check shapes")
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    args = ap.parse_args()
    only = None if args.variants is None else set(args.variants.split(","))

    start = time.perf_counter()
    copy_gbps = copy_GBps(DEV, COPY_BYTES, reps=20, warm=3)
    l2, _ = l2_bytes(DEV)
    report = {"device": device_name(DEV), "copy_GBps": copy_gbps, "copy_bytes": COPY_BYTES, "l2_bytes": l2,
              "rep_s": REP_S, "defaults": {"gemv_1_token": launcher.GEMV_DEFAULTS_1_TOKEN,
                                            "mma_few_tokens": launcher.MMA_DEFAULTS_FEW_TOKENS},
              "rows": [], "compile_s": {}}
    print(f"{report['device']}: copy {copy_gbps:.0f} GB/s (1 GiB, read + write)", flush=True)
    failed = 0
    for shape in args.check_shapes:
        d_model, d_ff = (int(v) for v in shape.split("x"))
        for dname in args.dtypes:
            for n_masks in (1, 4):
                for tokens in args.check_tokens:
                    x, w, packed = inputs(tokens, d_model, d_ff, n_masks, DTYPES[dname], seed=n_masks * 7 + tokens)
                    ref, tol = judge(x, w, packed)
                    for variant in variants_for(tokens, DTYPES[dname], n_masks, d_model, only)[0]:
                        row = {"check_only": True, "dtype": dname, "d_model": d_model, "d_ff": d_ff,
                               "n_masks": n_masks, "tokens": tokens, "variant": variant}
                        try:
                            row.update(check(x, w, packed, variant, ref, tol, report["compile_s"]))
                        except Exception as exc:
                            failed += 1
                            row.update(ok=False, error=f"{type(exc).__name__}: {exc}")
                            print(f"check {dname} {shape} n={n_masks} T={tokens} {variant} FAIL {row['error']}", flush=True)
                        record(report, row, args.json)
    checked = [r for r in report["rows"] if r.get("check_only")]
    print(f"check shapes: {sum(bool(r.get('ok')) for r in checked)} of {len(checked)} rows within SPEC bound", flush=True)
    print(f"{'dtype':5} {'shape':>10} {'n':>2} {'T':>3} {'variant':22} {'us':>8} {'GB/s':>6} {'%copy':>6} "
          f"{'rel err':>9} {'bound':>8} {'compile s':>9}", flush=True)
    for shape in args.shapes:
        d_model, d_ff = (int(v) for v in shape.split("x"))
        for dname in args.dtypes:
            for n_masks in args.n_masks:
                for tokens in args.tokens:
                    nbytes = d_ff * d_model * (2 + n_masks / 8)
                    copies, _ = rotation_copies(int(nbytes), l2)
                    sets = [inputs(tokens, d_model, d_ff, n_masks, DTYPES[dname], seed=n_masks * 100 + tokens + 1000 * c)
                            for c in range(copies)]
                    ref, tol = judge(*sets[0])
                    variants, default = variants_for(tokens, DTYPES[dname], n_masks, d_model, only)
                    for variant in variants:
                        row = {"dtype": dname, "d_model": d_model, "d_ff": d_ff, "n_masks": n_masks,
                               "tokens": tokens, "variant": variant, "default": variant == default}
                        try:
                            row.update(run_variant(sets, variant, ref, tol, report["compile_s"], copy_gbps, l2))
                            print(f"{dname:5} {shape:>10} {n_masks:2d} {tokens:3d} {variant + ('*' if row['default'] else ''):22} "
                                  f"{row['us']:8.1f} {row['GBps']:6.0f} {row['pct_copy']:6.1f} {row['rel_error']:9.2e} "
                                  f"{row['bound']:8.1e} {row['compile_s']:9.2f}", flush=True)
                        except Exception as exc:
                            failed += 1
                            row.update(ok=False, error=f"{type(exc).__name__}: {exc}")
                            print(f"{dname:5} {shape:>10} {n_masks:2d} {tokens:3d} {variant:22} FAIL {row['error']}", flush=True)
                            traceback.print_exc()
                        record(report, row, args.json)
                    del sets, ref
                    torch.cuda.empty_cache()
    names = sorted(report["compile_s"])
    print(f"first-call compile per instantiation (NVRTC + load), {len(names)} of them: "
          f"{min(report['compile_s'].values(), default=0):.2f} to {max(report['compile_s'].values(), default=0):.2f} s")
    print(f"total {time.perf_counter() - start:.0f} s, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
