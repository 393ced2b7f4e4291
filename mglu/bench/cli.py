"""``python -m mglu bench``: the side-by-side benchmark of SPEC §7.

Two entry points for the top-level CLI: :func:`add_arguments` fills a (sub)parser and
:func:`run` executes parsed arguments, returning the exit code: 0 when every row passed
its check, 1 when a row failed, 2 for unusable arguments.
"""

import argparse
import sys

import torch

from ..activations import ACTIVATIONS, DEFAULT_ACTIVATION
from ..backends import BACKEND_NAMES
from ..masks import MAX_MASKS
from . import cases, report, sweep
from .baselines import BASELINES, BackendRunner, OpRunner
from .harness import measure_limits

DESCRIPTION = """\
Side-by-side benchmark of MGLU (SPEC §7): the baselines naive PyTorch MGLU (masked weights
materialised per call, as in the paper), the same under torch.compile, PyTorch SwiGLU and
the same under torch.compile, then every available registered backend. Every row is
checked against the torch backend in fp32/fp64 on a reduced copy before it is timed; a
failing row is shown as failed, not timed. Copy bandwidth and matmul rate are measured in
the same run: decode rows (<= 64 tokens) report GB/s and % of copy bandwidth, prefill rows
TFLOP/s and % of the matmul rate; every row reports speed-ups vs swiglu and naive."""

EPILOG = "presets:\n" + "\n".join(f"  {name:<9}{p.help}" for name, p in cases.PRESETS.items()) + """

Without --preset or --quick the preset is decode on CUDA and quick without CUDA (or
with --device cpu); explicit --shapes/--tokens/--n-masks/--dtype override its fields.
Timing (CUDA): per-call CUDA events, 25 ms warm-up, 100 ms of calls, median and p20/p80;
inputs rotated through enough copies that each call reads HBM, not L2. See
docs/BENCHMARKS.md."""

#: the attributes this module adds to the namespace (recorded in the JSON ``args``)
DESTS = ("preset", "quick", "shapes", "tokens", "n_masks", "dtype", "activation", "mode", "backends",
         "baselines", "device", "rep_ms", "json", "plot")


def _list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bench options to ``parser`` (help text, presets and defaults included)."""
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    g = parser.add_argument_group("what to run")
    g.add_argument("--preset", choices=tuple(cases.PRESETS), help="a named sweep (listed below)")
    g.add_argument("--quick", action="store_true", help="same as --preset quick: small, seconds, runs on CPU")
    g.add_argument("--shapes", metavar="DMxDFF[,...]",
                   help="d_model x d_ff pairs, e.g. 4096x11008,2048x8192")
    g.add_argument("--tokens", metavar="T[,...]", help="token counts, e.g. 1,4,16,64")
    g.add_argument("--n-masks", dest="n_masks", metavar="N[,...]", help="mask counts (1..16), e.g. 1,2,4,8")
    g.add_argument("--dtype", metavar="DT[,...]", help="float16|bfloat16|float32|float64 (or fp16, bf16, ...)")
    g.add_argument("--activation", choices=ACTIVATIONS, default=DEFAULT_ACTIVATION,
                   help=f"gate activation (default {DEFAULT_ACTIVATION}); the GLU baselines use it too")
    g.add_argument("--mode", choices=cases.MODES, default="fwd",
                   help="fwd: packed masks, inference (default); bwd: backward only; fwdbwd: both "
                        "(bwd/fwdbwd use mask logits, training)")
    g.add_argument("--backends", metavar="NAME[,...]",
                   help=f"registered backends ({', '.join(BACKEND_NAMES)}); default every available one; "
                        "one named here that cannot run a case is shown as 'unavailable: <reasons>'")
    g.add_argument("--eager", action="store_true",
                   help="also time the public op mglu.mglu per backend, calls back to back with the "
                        "host's work included ('<backend> eager' rows; fwd only)")
    g.add_argument("--baselines", metavar="NAME[,...]",
                   help=f"baselines ({', '.join(BASELINES)}) or 'none'; default all")
    g.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available, else cpu")
    g.add_argument("--rep-ms", dest="rep_ms", type=float, metavar="MS",
                   help="timed calls per row, in ms (default 100 on CUDA as do_bench, 50 on CPU)")
    o = parser.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", help="write every row, the device, versions, commit, date, limits")
    o.add_argument("--plot", metavar="PATH", help="write a PNG: time against tokens, one line per runner (matplotlib)")


class UsageError(ValueError):
    """Arguments that cannot be run; ``run`` prints it and returns 2."""


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in _list(text))
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{option}: expected positive integers, got {text!r}")
    return values


def default_preset(device: torch.device) -> str:
    """The sweep without --preset: decode on CUDA; quick (seconds) on CPU."""
    return "decode" if device.type == "cuda" else "quick"


def resolve(args: argparse.Namespace) -> dict:
    """Device, cases and runners from the arguments (preset first, explicit lists over it)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.quick and args.preset not in (None, "quick"):
        raise UsageError(f"--quick conflicts with --preset {args.preset}")
    name = "quick" if args.quick else args.preset or default_preset(device)
    preset = cases.PRESETS[name]
    try:
        shapes = tuple(cases.parse_shape(s) for s in _list(args.shapes)) if args.shapes else preset.shapes
        dtypes = tuple(dict.fromkeys(cases.parse_dtype(d) for d in _list(args.dtype))) if args.dtype else preset.dtypes
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tokens = _ints(args.tokens, "--tokens") if args.tokens else preset.tokens
    n_masks = _ints(args.n_masks, "--n-masks") if args.n_masks else preset.n_masks
    if max(n_masks) > MAX_MASKS:
        raise UsageError(f"--n-masks: n_masks must be in 1..{MAX_MASKS} (SPEC §2), got {max(n_masks)}")
    if args.rep_ms is not None and not args.rep_ms > 0:
        raise UsageError(f"--rep-ms: expected a positive number of milliseconds, got {args.rep_ms}")
    explicit = args.backends is not None
    names = _list(args.backends) if explicit else list(BACKEND_NAMES)
    unknown = [n for n in names if n not in BACKEND_NAMES]
    if unknown:
        raise UsageError(f"--backends: unknown {', '.join(unknown)}; registered: {', '.join(BACKEND_NAMES)}")
    base_names = list(BASELINES) if args.baselines is None else (
        [] if args.baselines.strip() == "none" else _list(args.baselines))
    unknown = [n for n in base_names if n not in BASELINES]
    if unknown:
        raise UsageError(f"--baselines: unknown {', '.join(unknown)}; valid: {', '.join(BASELINES)}, none")
    return {
        "device": device,
        "preset": name,
        "cases": cases.expand(shapes, tokens, n_masks, dtypes, args.activation, args.mode),
        "baselines": [BASELINES[n] for n in BASELINES if n in base_names],
        "backends": [BackendRunner(n) for n in dict.fromkeys(names)]
        + ([OpRunner(n) for n in dict.fromkeys(names)] if args.eager else []),
        "explicit_backends": explicit,
        "dtypes": list(dtypes),
    }


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args``; print the tables; write --json/--plot."""
    try:
        cfg = resolve(args)
        if args.plot:
            report.require_matplotlib()
    except (UsageError, RuntimeError) as exc:
        print(f"mglu bench: {exc}", file=sys.stderr)
        return 2
    device = cfg["device"]
    meta = report.metadata(sys.argv)
    tasks = sweep.plan(cfg["cases"], cfg["baselines"], cfg["backends"], cfg["explicit_backends"], device, {})
    print(f"mglu bench: preset {cfg['preset']}, {len(cfg['cases'])} cases, {len(tasks)} rows on {device}; "
          "measuring limits ...", file=sys.stderr)
    limits = measure_limits(device, cfg["dtypes"])
    progress = report.Progress(len(tasks))
    raw = sweep.run_sweep(tasks, device, limits, None if args.rep_ms is None else args.rep_ms / 1e3,
                          lambda task, r: progress.update(
                              f"{r.d_model}x{r.d_ff} T={r.tokens} n={r.n_masks} {r.runner}: {r.status}"))
    progress.close()
    rows = sweep.finish(raw, cfg["cases"], paper=device.type == "cuda")
    print(report.format_header(limits, meta))
    print(report.format_table(rows))
    print(report.format_memory(report.memory_entries(rows)))
    paper = report.format_paper(rows, limits.device_name)
    if paper:
        print(paper)
    if args.json:
        resolved = {k: getattr(args, k, None) for k in DESTS}
        resolved.update(preset=cfg["preset"], device=str(device))
        report.write_json(args.json, rows, limits, meta, resolved)
        print(f"\nwrote {args.json}")
    if args.plot:
        report.write_plot(args.plot, rows)
        print(f"wrote {args.plot}")
    failed = [r for r in raw if r.status == "failed"]
    if failed:
        print(f"\n{len(failed)} row(s) failed their check; see above", file=sys.stderr)
    return 1 if failed else 0
