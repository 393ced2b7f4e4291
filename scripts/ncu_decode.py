"""The decode forward of the numba, cuda and triton backends (and named cuda variants), twice
each, for Nsight Compute to profile: ``out (T, d_ff) = sum_i silu(gate_i) (total - gate_i)``,
``x (T, d_model)`` (``--tokens``, 1 by default), ``W (d_ff, d_model)``, random packed masks ``(n_masks, d_ff, d_model/8)``.

Usage (on the GPU):
    ncu --csv --page details -k regex:"decode_wide|mglu_rowdot_gemv|fwd_gemv" --section SpeedOfLight \
        --section Occupancy --section WarpStateStats --section SchedulerStats \
        --section MemoryWorkloadAnalysis python scripts/ncu_decode.py [--shape 4096x11008] [--n-masks 4] [--dtype fp16]

``python scripts/ncu_decode.py --summarize FILE`` prints, from ncu's ``--csv --page details``
output, each profiled kernel's metrics in one table (short kernel names). The first call of
each backend compiles; the second is the same kernel again (ncu profiles
both: compare them, the numbers should agree). Each output is checked against the torch
backend within SPEC §4's bound before the script exits (a wrong kernel's profile is worthless).
"""

import argparse
import csv
import re
import sys

import torch

from mglu.backends import REGISTRY
from mglu.backends.numba_backend import numerics  # noqa: F401  (aliases np.row_stack before numba loads)
from mglu.conformance.tolerances import bound, rel_error
from mglu.masks import packed_width

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def summarize(path) -> int:
    """One line per (metric, kernel launch) of ncu's CSV, kernels by short name."""
    with open(path) as f:
        rows = list(csv.DictReader(line for line in f if line.startswith('"')))
    launches = {}
    for r in rows:
        name = re.search(r"decode_wide|mglu_rowdot_(gemv|ring|mma)[^(]*|fwd_gemv", r["Kernel Name"])
        launches.setdefault(r["ID"], name.group(0) if name else r["Kernel Name"][:40])
    ids = list(launches)
    metrics = dict.fromkeys((r["Section Name"], r["Metric Name"], r["Metric Unit"]) for r in rows)
    values = {(r["ID"], r["Section Name"], r["Metric Name"]): r["Metric Value"] for r in rows}
    print("launch: " + "; ".join(f"{i}={launches[i]}" for i in ids))
    for sec, name, unit in metrics:
        print(f"{name[:44]:44s} {unit[:10]:10s} " + " ".join(f"{values.get((i, sec, name), '-')[:11]:>11s}" for i in ids))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summarize", metavar="CSV", help="print the table of an ncu CSV and exit")
    ap.add_argument("--shape", default="4096x11008", help="d_model x d_ff")
    ap.add_argument("--n-masks", type=int, default=4)
    ap.add_argument("--dtype", default="fp16", choices=list(DTYPES))
    ap.add_argument("--backends", default="numba,cuda,triton")
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--cuda-variants", default="", help="comma list of cuda variants (launcher tables) to run "
                    "beside the defaults, e.g. ring3")
    args = ap.parse_args()
    if args.summarize:
        return summarize(args.summarize)
    d_model, d_ff = (int(v) for v in args.shape.split("x"))
    dev, dtype = torch.device("cuda"), DTYPES[args.dtype]
    gen = torch.Generator(device=dev).manual_seed(7)
    x = torch.randn(args.tokens, d_model, device=dev, generator=gen).to(dtype)
    w = (torch.randn(d_ff, d_model, device=dev, generator=gen) / d_model**0.5).to(dtype)
    p = torch.randint(0, 256, (args.n_masks, d_ff, packed_width(d_model)), device=dev, dtype=torch.uint8, generator=gen)
    torch_be = REGISTRY["torch"]
    ref = torch_be.forward(x.double(), w.double(), p, "silu").cpu().numpy()
    limit = bound(dtype, rel_error(torch_be.forward(x, w, p, "silu"), ref))
    runs = [(name, lambda name=name: REGISTRY[name].forward(x, w, p, "silu")) for name in args.backends.split(",") if name]
    if args.cuda_variants:
        from mglu.backends import cuda_backend

        runs += [(f"cuda:{v}", lambda v=v: cuda_backend.forward(x, w, p, "silu", variant=v))
                 for v in args.cuda_variants.split(",")]
    bad = 0
    for name, run in runs:
        for _ in range(2):
            out = run()
        torch.cuda.synchronize()
        err = rel_error(out, ref)
        print(f"{name}: rel err {err:.2e} (bound {limit:.1e}) {'ok' if err <= limit else 'WRONG'}", flush=True)
        bad += not err <= limit
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
