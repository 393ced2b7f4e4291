"""Output: the stdout tables, ``--json``, ``--plot`` and the progress bar.

Table blocks are one case each, ``(d_model, d_ff, tokens, n_masks, dtype, mode,
activation)``; decode blocks (tokens <= 64) show GB/s and % of the measured copy
bandwidth, prefill blocks TFLOP/s and % of the measured matmul rate. Then the memory table
(weights + masks per layer against SwiGLU) and, for cases the paper timed, its H100
latencies beside ours with ``ratio = ours / paper``.
"""

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, TextIO

import torch

from .cases import PAPER_H100_MS, param_bytes
from .harness import Limits
from .sweep import Row

#: JSON layout version; bump when a field changes meaning
SCHEMA = "mglu-bench/1"
#: distributions whose versions the JSON records (importlib.metadata: nothing is imported)
VERSIONED = ("torch", "triton", "numba", "numba-cuda", "cupy-cuda13x", "cupy-cuda12x", "numpy", "mglu")
#: progress when stderr is not a terminal: one line at most this often, after this long
PROGRESS_LINE_S = 10.0
PROGRESS_AFTER_S = 5.0


def _fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: list[Row]) -> str:
    lines = []
    block_key = None
    for r in rows:
        key = (r.d_model, r.d_ff, r.tokens, r.n_masks, r.dtype, r.mode, r.activation)
        if key != block_key:
            block_key = key
            decode = r.regime == "decode"
            lines.append("")
            lines.append(
                f"d_model={r.d_model} d_ff={r.d_ff} tokens={r.tokens} n_masks={r.n_masks} {r.dtype} "
                f"{r.mode} {r.activation}  [{r.regime}: "
                + ("GB/s from SPEC bytes, % of copy BW]" if decode else "TFLOP/s, % of matmul rate]")
            )
            rate = "GB/s" if decode else "TFLOP/s"
            pct = "%BW" if decode else "%MM"
            lines.append(
                f"  {'runner':<16}{'kind':<9}{'median_us':>11}{'p20_us':>10}{'p80_us':>10}"
                f"{rate:>9}{pct:>7}{'x_swiglu':>9}{'x_naive':>9}{'peak_MiB':>10}{'copies':>7}"
            )
        if r.status != "ok":
            lines.append(f"  {r.runner:<16}{r.kind:<9}  {r.status}: {r.reason}")
            continue
        decode = r.regime == "decode"
        rate_v, pct_v = (r.GBps, r.pct_copy_bw) if decode else (r.TFLOPs, r.pct_matmul)
        mem = "n/a" if r.peak_mem_bytes is None else format(r.peak_mem_bytes / 2**20, ".1f")
        copies = f"{r.copies}{'*' if r.l2_cold is False else ''}"
        lines.append(
            f"  {r.runner:<16}{r.kind:<9}{r.median_us:>11.1f}{r.p20_us:>10.1f}{r.p80_us:>10.1f}"
            f"{_fmt(rate_v, '.4g'):>9}{_fmt(pct_v, '.1f'):>7}"
            f"{_fmt(r.speedup_vs_swiglu, '.2f'):>9}{_fmt(r.speedup_vs_naive, '.2f'):>9}"
            f"{mem:>10}{copies:>7}"
        )
    if any(r.l2_cold is False for r in rows):
        lines.append("\n* the inputs stay smaller than 4x L2 even at the copy cap: warm-cache timing")
    return "\n".join(lines)


def memory_entries(rows: list[Row]) -> list[dict]:
    """Per (shape, n_masks, dtype): bytes of the up projection's parameters."""
    seen, out = set(), []
    for r in rows:
        key = (r.d_model, r.d_ff, r.n_masks, r.dtype)
        if key in seen:
            continue
        seen.add(key)
        elem = torch.empty((), dtype=getattr(torch, r.dtype)).element_size()
        b = param_bytes(r.d_model, r.d_ff, r.n_masks, elem)
        out.append({"d_model": r.d_model, "d_ff": r.d_ff, "n_masks": r.n_masks, "dtype": r.dtype, **b,
                    "packed_over_swiglu": b["mglu_packed"] / b["swiglu"]})
    return out


def format_memory(entries: list[dict]) -> str:
    lines = ["", "Memory per layer (up projection): W + packed masks (inference), W + logits (training), "
             "SwiGLU's Wg + Wu; MiB"]
    lines.append(f"  {'d_model':>7}{'d_ff':>7}{'n':>4}  {'dtype':<9}{'mglu_packed':>12}{'mglu_train':>12}"
                 f"{'swiglu':>10}{'packed/swiglu':>15}")
    for e in entries:
        lines.append(
            f"  {e['d_model']:>7}{e['d_ff']:>7}{e['n_masks']:>4}  {e['dtype']:<9}"
            f"{e['mglu_packed'] / 2**20:>12.1f}{e['mglu_training'] / 2**20:>12.1f}"
            f"{e['swiglu'] / 2**20:>10.1f}{e['packed_over_swiglu']:>15.3f}"
        )
    return "\n".join(lines)


def format_paper(rows: list[Row], device: str) -> str:
    """Side by side with the paper's H100 table (SPEC §7), for the cases it timed."""
    blocks: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        if r.paper_ms is not None:
            blocks.setdefault((r.d_model, r.d_ff, r.n_masks), {})[r.runner] = r
    if not blocks:
        return ""
    lines = ["", f"Paper comparison: H100 decode, fp16, 1 token, ms; ours = device time on {device} "
             "(launch latency hidden, see docs/BENCHMARKS.md); ratio = ours / paper (< 1: we are faster); "
             "'best' = our fastest passing backend"]
    groups = ("FlashMGLU vs best", "torch GLU vs swiglu", "naive vs naive")
    lines.append((f"  {'':<27}" + "".join(f"   {g:<29}" for g in groups)).rstrip())
    lines.append(f"  {'shape':<12}{'n':>3}  {'best':<10}" + f"   {'paper':>9}{'ours':>10}{'ratio':>10}" * 3)
    for (dm, dff, n), by in blocks.items():
        paper = PAPER_H100_MS[(dm, dff)][n]
        backends = [r for r in by.values() if r.kind == "backend" and r.status == "ok"]
        best = min(backends, key=lambda r: r.median_us) if backends else None
        cells = ""
        for r, key in ((best, "flash"), (by.get("swiglu"), "glu"), (by.get("naive"), "naive")):
            ours = r.median_us * 1e-3 if r is not None and r.status == "ok" else None
            ratio = ours / paper[key] if ours is not None else None
            cells += f"   {paper[key]:>9.4f}{_fmt(ours, '.4f'):>10}{_fmt(ratio, '.2f'):>10}"
        lines.append(f"  {f'{dm}x{dff}':<12}{n:>3}  {best.runner if best else '-':<10}{cells}")
    return "\n".join(lines)


def format_header(limits: Limits, meta: dict) -> str:
    rates = ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in limits.matmul_TFLOPs.items())
    return (
        f"MGLU bench  device: {limits.device_name}  torch {meta['versions'].get('torch')}  "
        f"commit {meta['git_commit'][:12]}{' (dirty)' if meta['git_dirty'] else ''}  {meta['date']}\n"
        f"limits: copy {limits.copy_GBps:.0f} GB/s ({limits.copy_bytes / 2**20:.0f} MiB copied); "
        f"matmul {limits.matmul_n}^3: {rates}; L2 {limits.l2_bytes / 2**20:.0f} MiB ({limits.l2_source})\n"
        f"command: {meta['command']}"
    )


def git_state() -> tuple[str, bool | None]:
    """``(commit, dirty)`` of the checkout holding this package. ``$MGLU_GIT_COMMIT``, when
    set, names the commit instead, with ``dirty`` unknown (``None``): the device tool's
    copy carried a ``.git`` of the session's first commit under a newer tree (runs 10-13
    recorded 654de54, dirty). Outside git: ``('unknown', None)``."""
    if os.environ.get("MGLU_GIT_COMMIT"):
        return os.environ["MGLU_GIT_COMMIT"], None
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout
        return commit or "unknown", bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch_cuda": str(torch.version.cuda)}
    for dist in VERSIONED:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "not installed"
    found["torch"] = torch.__version__
    return found


def command_line(argv: list[str]) -> str:
    """``argv`` as typed: ``python -m mglu ...`` when run as a module."""
    if argv and argv[0].endswith("__main__.py"):
        return " ".join(["python -m mglu", *argv[1:]])
    return " ".join(argv)


def metadata(argv: list[str]) -> dict:
    commit, dirty = git_state()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
        "command": command_line(argv),
        "versions": versions(),
    }


def _strict(obj):
    """JSON has no NaN/Infinity: non-finite floats become the strings 'nan', 'inf', '-inf'."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json(path: str, rows: list[Row], limits: Limits, meta: dict, args: dict) -> None:
    doc = {
        "schema": SCHEMA,
        **meta,
        "device": {"name": limits.device_name, "l2_bytes": limits.l2_bytes, "l2_source": limits.l2_source},
        "limits": {
            "copy_GBps": limits.copy_GBps,
            "copy_bytes": limits.copy_bytes,
            "matmul_n": limits.matmul_n,
            "matmul_TFLOPs": limits.matmul_TFLOPs,
        },
        "args": args,
        "memory": memory_entries(rows),
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(_strict(doc), indent=2, default=str, allow_nan=False) + "\n")


def require_matplotlib():
    """Import matplotlib with the Agg backend, or raise a clear error (``--plot`` needs it)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib (it is in mglu's dev extra)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plot(path: str, rows: list[Row]) -> None:
    """Median time against tokens (or n_masks when one token count), one line per runner,
    one panel per (shape, dtype, mode and the other variable)."""
    plt = require_matplotlib()
    ok = [r for r in rows if r.status == "ok"]
    by_x = "tokens" if len({r.tokens for r in ok}) > 1 else "n_masks"
    other = "n_masks" if by_x == "tokens" else "tokens"
    panels: dict[tuple, dict[str, list[tuple[int, float]]]] = {}
    for r in ok:
        key = (r.d_model, r.d_ff, r.dtype, r.mode, r.activation, getattr(r, other))
        line = panels.setdefault(key, {}).setdefault(r.runner, [])
        line.append((getattr(r, by_x), r.median_us))
    n = max(len(panels), 1)
    cols = min(n, 2)
    rows_n = -(-n // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.5 * cols, 4.2 * rows_n), squeeze=False)
    for ax, (key, lines) in zip(axes.flat, panels.items()):
        dm, dff, dt, mode, act, o = key
        for name, pts in lines.items():
            pts = sorted(set(pts))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(by_x)
        ax.set_ylabel("median time per call (us)")
        ax.set_title(f"{dm}x{dff} {dt} {mode} {act}, {other}={o}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


class Progress:
    """A minimal progress bar on ``stream`` (stderr): redrawn in place on a terminal; off a
    terminal, a plain line at most every ``PROGRESS_LINE_S`` once the sweep passes
    ``PROGRESS_AFTER_S``."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, width: int = 30):
        self.total, self.stream, self.width = total, stream, width
        self.done = 0
        self.t0 = time.perf_counter()
        self.last_line = self.t0
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def update(self, label: str) -> None:
        self.done += 1
        now = time.perf_counter()
        elapsed = now - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        text = f"{self.done}/{self.total} rows  {elapsed:.0f}s elapsed  ~{eta:.0f}s left  {label}"
        if self.tty:
            filled = int(self.width * self.done / max(self.total, 1))
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r[{bar}] {text[:100]:<100}")
            self.stream.flush()
        elif elapsed >= PROGRESS_AFTER_S and now - self.last_line >= PROGRESS_LINE_S:
            self.last_line = now
            self.stream.write(f"progress: {text}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
