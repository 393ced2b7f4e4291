"""The decode forward of the kernel backends, twice each, for Nsight Compute to profile.

numba, cuda and triton (and named cuda variants), at 1 token or at ``--tokens`` (the ring and
the tensor-core kernels): ``out (T, d_ff) = sum_i silu(gate_i) (total - gate_i)``,
``x (T, d_model)`` (``--tokens``, 1 by default), ``W (d_ff, d_model)``, random packed masks ``(n_masks, d_ff, d_model/8)``.

Usage (on the GPU):
    ncu --csv --page details -k regex:"decode_wide|mglu_rowdot_gemv|fwd_gemv" --section SpeedOfLight \
        --section Occupancy --section WarpStateStats --section SchedulerStats \
        --section MemoryWorkloadAnalysis python scripts/ncu_decode.py [--shape 4096x11008] [--n-masks 4] [--dtype fp16]

``python scripts/ncu_decode.py --summarize FILE`` prints, from ncu's ``--csv --page details``
output, each profiled kernel's metrics in one table (short kernel names); ``--summarize-raw
FILE`` the same from ``--csv --page raw`` output, for the metrics that say where a kernel's
time goes (RAW_METRICS: issue, pipes, stall reasons, shared memory, DRAM). The first call of
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


#: substrings of the raw page's metric names that --summarize-raw prints: throughput against
#: peak, issue activity, the pipes' utilisation, the warp stall reasons, instruction counts
RAW_METRICS = ("gpu__time_duration.sum", "dram__throughput.avg.pct", "sm__throughput.avg.pct",
               "l1tex__throughput.avg.pct", "lts__throughput.avg.pct", "smsp__issue_active.avg.pct",
               "sm__warps_active.avg.per_cycle_active", "smsp__inst_executed.sum", "pipe_tensor", "pipe_alu",
               "pipe_fma", "pipe_lsu", "pipe_shared", "mio", "issue_stalled", "data_pipe_lsu_wavefronts_mem_shared",
               "registers_per_thread", "shared_mem_per_block")


def summarize_raw(path) -> int:
    """The RAW_METRICS columns of ncu's ``--csv --page raw`` output, one column per launch."""
    with open(path) as f:
        rows = list(csv.reader(line for line in f if line.startswith('"')))
    head, units, launches = rows[0], rows[1], rows[2:]
    kname = head.index("Kernel Name")
    names = []
    for r in launches:
        m = re.search(r"decode_wide|mglu_rowdot_(gemv|ring|mma)[^(]*|fwd_gemv|fwd_wgmma|fwd_mma", r[kname])
        names.append(m.group(0) if m else r[kname][:20])
    print("launch: " + "; ".join(f"{i}={n}" for i, n in enumerate(names)))
    for c, name in enumerate(head):
        if any(k in name for k in RAW_METRICS):
            print(f"{name[:70]:70s} {units[c][:8]:8s} " + " ".join(f"{r[c][:11]:>11s}" for r in launches))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summarize", metavar="CSV", help="print the table of an ncu CSV and exit")
    ap.add_argument("--summarize-raw", metavar="CSV", help="the same for ncu's raw page")
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
    if args.summarize_raw:
        return summarize_raw(args.summarize_raw)
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
