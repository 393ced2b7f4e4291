"""``python -m mglu info | conformance | bench``: the project's command line."""

import argparse
import os
import platform
import sys

import torch

from .backends import BACKEND_NAMES, REGISTRY, Problem, auto_priority
from .bench.cli import add_arguments as add_bench_arguments
from .bench.cli import run as run_bench
from .bench.report import versions
from .conformance.cases import catalogue
from .conformance.checker import base_quantity, check_case, refusal
from .dispatch import ENV_VAR
from .dtypes import DTYPE_NAMES


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_info(args) -> int:
    device = torch.device(args.device)
    for package, version in versions().items():
        print(f"{package:12s} {version}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(f"device   {props.name} (sm_{props.major}{props.minor}, {props.multi_processor_count} SMs)")
    else:
        print(f"device   cpu ({platform.processor() or platform.machine()}, no CUDA device)")
    print(f"{ENV_VAR}={os.environ.get(ENV_VAR, '')!r} (unset means auto)")
    problem = Problem(1, 4096, 11008, 4, DTYPE_NAMES[args.dtype], device, "silu")
    print(f"backends, for a {args.dtype} call on {device.type} (1 token, d_model 4096, d_ff 11008, 4 masks):")
    print(f"  auto priority (forward): {', '.join(auto_priority(problem))}")
    for name in BACKEND_NAMES:
        reasons = REGISTRY[name].reasons(problem)
        status = "available" if not reasons else "unavailable: " + "; ".join(reasons)
        print(f"  {name:7s} {status}  ({REGISTRY[name].description})")
    return 0


def _fmt(result) -> list[str]:
    """One table row; a column shows the worst (largest error/bound) of the checks of that
    quantity (e.g. ``dx`` and ``dx (recomputed gates)``)."""
    worst = {}
    for q in result.quantities:
        name = base_quantity(q.name)
        if name not in worst or q.error / q.bound > worst[name].error / worst[name].bound:
            worst[name] = q
    errs = {name: f"{q.error:.2e}/{q.bound:.0e}" for name, q in worst.items()}
    grad = {True: "ok", False: "FAIL", None: "-"}[result.gradcheck]
    det = {True: "ok", False: "FAIL", None: "-"}[result.deterministic]
    return [result.case.id, *(errs.get(k, "-") for k in ("out", "dx", "dW", "dS")), grad, det, result.verdict]


def _shard(text: str) -> tuple[int, int]:
    part, _, parts = text.partition("/")
    if not (part.isdigit() and parts.isdigit() and 1 <= int(part) <= int(parts)):
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, got {text!r}")
    return int(part), int(parts)


def cmd_conformance(args) -> int:
    cases = catalogue(quick=args.quick)
    if args.dtype:
        cases = [c for c in cases if c.dtype == DTYPE_NAMES[args.dtype]]
    if args.shard:
        part, parts = args.shard
        cases = cases[part - 1::parts]
    named = args.backend or []
    backends = named or list(BACKEND_NAMES)
    status = 0
    header = ["case", "out err/bound", "dx", "dW", "dS", "gradcheck", "2 runs", "verdict"]
    for name in backends:
        runnable = [c for c in cases if not refusal(name, c, args.device)]
        if not runnable:
            reasons = sorted({r for c in cases for r in refusal(name, c, args.device)})
            print(f"\n== {name}: unavailable on {args.device}: {'; '.join(reasons)}")
            status = status or (2 if name in named else 0)
            continue
        print(f"\n== {name} on {args.device}")
        rows = []
        results = []
        for case in cases:
            result = check_case(name, case, args.device, args.seed)
            results.append(result)
            if args.verbose or not result.passed:
                rows.append(_fmt(result))
            if result.verdict == "FAIL":
                print(result.describe(), file=sys.stderr, flush=True)
            elif args.verbose:
                print(f"{result.verdict} {name} {case.id}", file=sys.stderr, flush=True)
        if rows:
            widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
            for row in [header] + rows:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        counts = {v: sum(r.verdict == v for r in results) for v in ("PASS", "FAIL", "skip")}
        print(f"{name}: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['skip']} skipped")
        if counts["FAIL"]:
            status = 1
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mglu",
        description="MGLU kernel lab: out = sum_i act(x @ (M_i W).T) * (x @ ((1-M_i) W).T)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="device, versions, and every backend with why it can or cannot run")
    info.add_argument("--device", choices=("cpu", "cuda"), default=_default_device(), help="default: cuda if present")
    info.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="dtype of the probe call")
    info.set_defaults(func=cmd_info)

    conf = sub.add_parser(
        "conformance",
        help="check backends against the float64 reference (SPEC §4); exit 1 on any failure",
        description="Runs the case catalogue on each backend: out, dx, dW, dS against the float64 "
        "reference with the bound max(2*e_torch, floor[dtype]); fp64 gradcheck; NaN-poisoned outputs; "
        "two runs bitwise equal. Prints failing rows (all rows with --verbose) and a summary per backend.",
    )
    conf.add_argument("--backend", action="append", choices=BACKEND_NAMES,
                      help="backend to check (repeatable; default: all; a named backend that can run nothing exits 2)")
    conf.add_argument("--quick", action="store_true", help="the quick subset of the catalogue")
    conf.add_argument("--dtype", choices=DTYPE_NAMES, help="only cases of this dtype")
    conf.add_argument("--device", choices=("cpu", "cuda"), default=_default_device(), help="default: cuda if present")
    conf.add_argument("--shard", type=_shard, metavar="K/N",
                      help="only every N-th case from the K-th (1-based), so N processes cover the catalogue")
    conf.add_argument("--seed", type=int, help="seed every case with this (default: fresh per case, printed on failure)")
    conf.add_argument("--verbose", "-v", action="store_true",
                      help="print every row, not only failures (and each verdict on stderr as it comes)")
    conf.set_defaults(func=cmd_conformance)

    bench = sub.add_parser(
        "bench",
        help="time backends against naive MGLU and PyTorch SwiGLU (SPEC §7)",
        description="Side-by-side benchmark (SPEC §7); see docs/BENCHMARKS.md.",
    )
    add_bench_arguments(bench)
    bench.set_defaults(func=run_bench)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
