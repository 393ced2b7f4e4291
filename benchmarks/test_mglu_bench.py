"""pytest-benchmark over the cases of ``python -m mglu bench`` (same plan, same checks).

Each test checks its row first (a failing row fails the test and is not timed), stores the
harness's device timing (median/p20/p80 us, GB/s, TFLOP/s, ...) in ``extra_info`` and lets
pytest-benchmark time ``ROUNDS`` synchronised calls, so ``pytest-benchmark compare`` works
across commits::

    .venv/bin/python -m pytest benchmarks -q --benchmark-autosave
    .venv/bin/pytest-benchmark compare --columns=median,iqr

``MGLU_BENCH_PRESET`` picks the preset (default as the CLI: decode on CUDA, quick on CPU),
``MGLU_BENCH_DEVICE`` the device. Not collected by ``make test`` (testpaths = tests).
"""

import os

import pytest
import torch

from mglu.backends import BACKEND_NAMES
from mglu.bench import cases, sweep
from mglu.bench.baselines import BASELINES, BackendRunner, Inputs
from mglu.bench.cli import default_preset
from mglu.bench.harness import measure_limits, synchronize

DEVICE = torch.device(os.environ.get("MGLU_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
PRESET = cases.PRESETS[os.environ.get("MGLU_BENCH_PRESET") or default_preset(DEVICE)]
#: wall-clock rounds per test: the device timing in extra_info is the careful one; these
#: rounds only feed `compare`, so a few suffice (keeps the CPU suite well under a minute)
ROUNDS = 5 if DEVICE.type == "cpu" else 20
#: on CPU torch.compile costs seconds per case: the CLI times it, this suite leaves it out
SKIPPED = {
    name: "torch.compile baselines are timed by `python -m mglu bench` on CPU, not here (compile is seconds per case)"
    for name, runner in BASELINES.items() if runner.compiled and DEVICE.type == "cpu"
}
TASKS = sweep.plan(
    cases.expand(PRESET.shapes, PRESET.tokens, PRESET.n_masks, PRESET.dtypes, "silu", "fwd"),
    list(BASELINES.values()), [BackendRunner(n) for n in BACKEND_NAMES], False, DEVICE, SKIPPED,
)
EXTRA = ("median_us", "p20_us", "p80_us", "reps", "copies", "l2_cold", "bytes", "flops", "GBps", "pct_copy_bw",
         "TFLOPs", "pct_matmul", "peak_mem_bytes", "first_call_s")


@pytest.fixture(scope="module")
def limits():
    return measure_limits(DEVICE, list(PRESET.dtypes))


@pytest.fixture(scope="module")
def refs() -> dict:
    """The sweep's reference cache (it holds one case's references at a time)."""
    return {}


def _id(task):
    c = task.case
    return f"{c.d_model}x{c.d_ff}-T{c.tokens}-n{c.n_masks}-{c.dtype}-{task.runner.name}"


@pytest.mark.parametrize("task", TASKS, ids=[_id(t) for t in TASKS])
def test_bench(benchmark, task, limits, refs):
    if task.status != "run":
        pytest.skip(f"{task.status}: {task.reason}")
    row = sweep.run_task(task, DEVICE, limits, refs, None)
    if row.status != "ok":
        pytest.fail(f"{row.runner} {row.status}: {row.reason}")
    benchmark.group = _id(task).rsplit("-", 1)[0]
    benchmark.extra_info.update({k: getattr(row, k) for k in EXTRA})
    benchmark.extra_info["device"] = limits.device_name
    bound = task.runner.prepare(task.case, DEVICE)(Inputs(task.case, DEVICE, 0))

    def setup():
        if bound.pre:
            bound.pre()

    def target():
        bound.step()
        synchronize(DEVICE)

    benchmark.pedantic(target, setup=setup, rounds=ROUNDS, warmup_rounds=1)
