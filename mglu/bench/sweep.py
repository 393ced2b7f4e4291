"""The sweep: plan the rows, check each one, time the ones that pass, derive the columns.

For each case and runner: bind copy 0 of the inputs, make the first call (compilation
happens here, untimed) under ``poisoned_outputs`` and judge it (:mod:`.checks`); a row
that fails is reported as failed and never timed. Passing rows are timed over enough
input copies to defeat L2 (:mod:`.harness`), then:

    GB/s    = bytes (cases.bytes_moved) / median time     % BW = GB/s / measured copy GB/s
    TFLOP/s = flops (cases.flops) / median time           % MM = TFLOP/s / measured matmul
    x swiglu = t(swiglu) / t(row);   x naive = t(naive) / t(row)   (eager baselines, same case)

GLU rows do not depend on ``n_masks``: they are measured once per (shape, tokens, dtype,
activation, mode) and repeated in each ``n_masks`` block.
"""

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch

from ..backends import poisoned_outputs
from . import checks
from .baselines import Inputs, Runner
from .cases import Case, bytes_moved, flops
from .harness import Limits, peak_bytes, rotation_copies, synchronize, time_bounds


@dataclass
class Row:
    """One line of the table and of the JSON ``rows``; times in microseconds."""

    d_model: int
    d_ff: int
    tokens: int
    n_masks: int
    dtype: str
    activation: str
    mode: str
    runner: str
    kind: str
    family: str
    regime: str
    status: str  # ok | failed | unavailable | skipped
    reason: str = ""
    median_us: Optional[float] = None
    p20_us: Optional[float] = None
    p80_us: Optional[float] = None
    reps: Optional[int] = None
    copies: Optional[int] = None
    l2_cold: Optional[bool] = None
    bytes: float = 0.0
    flops: int = 0
    GBps: Optional[float] = None
    pct_copy_bw: Optional[float] = None
    TFLOPs: Optional[float] = None
    pct_matmul: Optional[float] = None
    speedup_vs_swiglu: Optional[float] = None
    speedup_vs_naive: Optional[float] = None
    peak_mem_bytes: Optional[int] = None
    first_call_s: Optional[float] = None
    check: dict = field(default_factory=dict)
    paper_ms: Optional[float] = None
    paper_ratio: Optional[float] = None


@dataclass
class Task:
    case: Case
    runner: Runner
    status: str = "run"  # run | unavailable | skipped
    reason: str = ""


def plan(cases: list[Case], baselines: list[Runner], backends: list[Runner], explicit_backends: bool,
         device: torch.device, skipped: dict[str, str]) -> list[Task]:
    """Every row to produce, in table order. GLU baselines appear once per ``glu_key``;
    a backend that refuses a case appears (as unavailable) only if asked for by name;
    ``skipped`` maps a baseline name to the reason it is not run."""
    tasks, seen_glu = [], set()
    for case in cases:
        for r in baselines:
            if r.family == "glu":
                if case.glu_key in seen_glu:
                    continue
            if r.name in skipped:
                tasks.append(Task(case, r, "skipped", skipped[r.name]))
            else:
                tasks.append(Task(case, r))
        seen_glu.add(case.glu_key)
        for r in backends:
            reasons = r.reasons(case, device)
            if not reasons:
                tasks.append(Task(case, r))
            elif explicit_backends:
                tasks.append(Task(case, r, "unavailable", "; ".join(reasons)))
    return tasks


def _base_row(case: Case, runner: Runner, status: str, reason: str = "") -> Row:
    n = case.n_masks
    return Row(
        d_model=case.d_model, d_ff=case.d_ff, tokens=case.tokens, n_masks=n, dtype=case.dtype,
        activation=case.activation, mode=case.mode, runner=runner.name, kind=runner.kind,
        family=runner.family, regime=case.regime, status=status, reason=reason,
        bytes=bytes_moved(runner.family, case.mode, case.tokens, case.d_model, case.d_ff, n, case.elem_bytes),
        flops=flops(runner.family, case.mode, case.tokens, case.d_model, case.d_ff, n),
    )


def run_task(task: Task, device: torch.device, limits: Limits, refs: dict, rep_s: float | None) -> Row:
    """Check, then time one row; exceptions become a failed row with the error's text."""
    case, runner = task.case, task.runner
    if task.status != "run":
        return _base_row(case, runner, task.status, task.reason)
    try:
        return _measure(case, runner, device, limits, refs, rep_s)
    except Exception as exc:  # a crashing backend is a failed row, not a crashed sweep
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return _base_row(case, runner, "failed", f"raised {type(exc).__name__}: {first}"[:300])
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _reference(case: Case, family: str, device: torch.device, refs: dict):
    key = (case.glu_key if family == "glu" else case, family)
    if key not in refs:
        refs.clear()  # one case at a time: references of finished cases are not needed again
        refs[key] = checks.reference(case, family, device)
    return refs[key]


def _measure(case: Case, runner: Runner, device, limits: Limits, refs: dict, rep_s) -> Row:
    row = _base_row(case, runner, "ok")
    ref = _reference(case, runner.family, device, refs)
    bind = runner.prepare(case, device)
    b0 = bind(Inputs(case, device, 0))
    synchronize(device)
    t0 = time.perf_counter()
    with poisoned_outputs():
        if b0.pre:
            b0.pre()
        outputs = b0.step()
    synchronize(device)
    row.first_call_s = time.perf_counter() - t0
    verdict = checks.judge(runner.name, outputs, ref, case.torch_dtype)
    del outputs
    row.check = verdict.details
    if not verdict.ok:
        row.status, row.reason = "failed", verdict.message
        return row
    copies, cold = rotation_copies(b0.read_bytes, limits.l2_bytes)
    bounds = [b0] + [bind(Inputs(case, device, k)) for k in range(1, copies)]
    timing = time_bounds(bounds, device, rep_s=rep_s, l2_cold=cold, l2=limits.l2_bytes)
    row.median_us, row.p20_us, row.p80_us = timing.median_us, timing.p20_us, timing.p80_us
    row.reps, row.copies, row.l2_cold = len(timing.samples_us), copies, cold
    t = row.median_us * 1e-6
    row.GBps = row.bytes / t / 1e9
    row.pct_copy_bw = 100 * row.GBps / limits.copy_GBps
    row.TFLOPs = row.flops / t / 1e12
    mm = limits.matmul_TFLOPs.get(case.dtype)
    row.pct_matmul = 100 * row.TFLOPs / mm if mm else None
    del bounds
    row.peak_mem_bytes = peak_bytes(b0, device)
    return row


def finish(rows: list[Row], cases: list[Case], paper: bool) -> list[Row]:
    """Expand GLU rows to every ``n_masks`` block, add speed-ups and, when ``paper`` (a
    CUDA run: the paper's numbers are H100 latencies), the paper's latencies."""
    glu_rows = {}
    for r in rows:
        if r.family == "glu":
            glu_rows.setdefault((r.d_model, r.d_ff, r.tokens, r.dtype, r.activation, r.mode), []).append(r)
    out = []
    for case in cases:
        block = [replace(g, n_masks=case.n_masks) for g in glu_rows.get(case.glu_key, [])]
        block += [r for r in rows if r.family == "mglu" and _case_of(r) == case]
        t_glu = _median(block, "swiglu")
        t_naive = _median(block, "naive")
        for r in block:
            if r.status == "ok":
                r.speedup_vs_swiglu = t_glu / r.median_us if t_glu else None
                r.speedup_vs_naive = t_naive / r.median_us if t_naive else None
            r.paper_ms = _paper_ms(case, r) if paper else None
            if r.paper_ms is not None and r.status == "ok":
                r.paper_ratio = (r.median_us * 1e-3) / r.paper_ms
        out += block
    return out


def _paper_ms(case: Case, row: Row) -> Optional[float]:
    # eager baselines and backends only: the paper timed eager PyTorch and its kernel
    # (device time; the host-inclusive rows of the public op are not compared)
    if row.kind == "eager" or row.kind == "baseline" and row.runner not in ("naive", "swiglu"):
        return None
    return case.paper_ms(row.family, row.kind)


def _case_of(r: Row) -> Case:
    return Case(r.d_model, r.d_ff, r.tokens, r.n_masks, r.dtype, r.activation, r.mode)


def _median(block: list[Row], name: str) -> Optional[float]:
    return next((r.median_us for r in block if r.runner == name and r.status == "ok"), None)


def run_sweep(tasks: list[Task], device: torch.device, limits: Limits, rep_s: float | None,
              on_row: Callable[[Task, Row], None]) -> list[Row]:
    """Run every task in order; ``on_row`` is told after each (progress)."""
    refs: dict = {}
    rows = []
    for task in tasks:
        row = run_task(task, device, limits, refs, rep_s)
        rows.append(row)
        on_row(task, row)
    return rows
