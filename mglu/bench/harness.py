"""Timing, cache control and the machine's limits, measured in the same run.

A timed call is a :class:`Bound`: ``step()`` is the work timed, ``pre()`` (optional) is
untimed work that must precede it (the autograd forward before a timed backward). Given
``copies`` Bounds over distinct input copies, :func:`time_bounds` runs them round-robin:

    CUDA: per call, events recorded right before and after ``step()`` on the current
          stream; warm-up (25 ms) and compilation happen before; median, p20, p80 of
          ``end - start`` over ``ceil(100 ms / estimate)`` calls (triton.testing.do_bench's
          defaults), at least ``MIN_REPS``. Before each call a GPU sleep (NVBench's
          "blocking kernel") lasting ``HOLD_FACTOR`` x the call's host enqueue time holds
          the stream while the host queues the events and the call's launches, so the
          events time the kernels back to back: device time, without the host's launch
          latency or torch.compile's guard checks (seen on the H100: without it the
          compiled SwiGLU timed slower than eager at 1 token). A host-inclusive Bound
          (the ``eager`` rows of the public op) is timed instead as ``EAGER_LOOPS`` loops
          of back-to-back calls, no sleep: host and device time together, per call.
    CPU:  ``time.perf_counter`` around ``step()``; at least ``CPU_MIN_REPS`` calls.

Inputs of one copy that are smaller than ``ROTATE_L2_FACTOR`` x L2 are rotated through
``ceil(ROTATE_L2_FACTOR * L2 / bytes)`` copies so that every timed call reads HBM, not L2.
When a call needs a ``pre`` (which touches the same inputs right before), a buffer of
``ROTATE_L2_FACTOR`` x L2 is also overwritten between ``pre`` and ``step`` (as do_bench
flushes), untimed.

Limits: device-to-device copy bandwidth ``2 * bytes / t`` (read + write) of a buffer far
larger than L2, and the rate ``2 N^3 / t`` of an ``N x N`` matmul in each benched dtype.
"""

import math
import platform
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .cases import DTYPES

#: triton.testing.do_bench's defaults: 25 ms of warm-up, 100 ms of timed calls
CUDA_WARMUP_S = 0.025
CUDA_REP_S = 0.100
#: our choice for CPU: short, since CPU timings are indicative only (caches not controlled)
CPU_REP_S = 0.050
#: enough calls for p20/p80 to be distinct order statistics
MIN_REPS = 10
CPU_MIN_REPS = 5
#: bounds the event bookkeeping for very short calls (2000 x ~5 us is already 10 ms)
MAX_REPS = 2000
#: host-inclusive rows (Bound.host_inclusive) split their calls into this many loops,
#: one sample each: enough for p20 and p80 to be distinct order statistics
EAGER_LOOPS = 5
#: calls used to estimate the time per call before choosing the rep count
ESTIMATE_CALLS = 3
#: the blocking sleep lasts this many times the measured host enqueue time of one call
#: (margin for host jitter), and at least HOLD_MIN_US
HOLD_FACTOR = 2.0
HOLD_MIN_US = 20.0
#: cycles of torch.cuda._sleep timed once to convert microseconds to sleep cycles
SLEEP_CALIBRATION_CYCLES = 1_000_000
#: rotate while one copy of the inputs is smaller than this many L2s (an LRU-like L2 has
#: then seen 3 other L2-fulls of data before a copy comes back)
ROTATE_L2_FACTOR = 4
#: caps setup for tiny problems; rows that hit it report ``l2_cold = False``
MAX_COPIES = 512
#: H100 SXM L2 (NVIDIA H100 datasheet), used only when the device does not report its own
H100_L2_BYTES = 50 * 1024 * 1024
#: copy buffer: 1 GiB, ~20x the H100 L2, so the copy streams from HBM
CUDA_COPY_BYTES = 1 << 30
#: 8192^3 bf16 is where our H100 reached 744 TFLOP/s (docs NOTES "Peers' numbers")
CUDA_MATMUL_N = 8192
#: CPU limits: a copy far beyond a small machine's caches; a matmul small enough that even
#: half precision (no native CPU kernels: seen 2.3 s for 1024^3 bf16) stays near a second
CPU_COPY_BYTES = 256 << 20
CPU_MATMUL_N = 512
#: rep count of the limit measurements (each call is long: a median of 20 is plenty)
LIMIT_REPS = 20
CPU_LIMIT_REPS = 5


@dataclass
class Bound:
    """One timed call on one copy of the inputs: ``pre()`` untimed, then ``step()`` timed.

    ``step`` returns the call's outputs by name (``out``, ``dx``, ``dW``, ...) so the first
    call can be checked; ``read_bytes`` is what one call reads (sizes the rotation).
    """

    step: Callable[[], dict]
    read_bytes: int
    pre: Optional[Callable[[], None]] = None
    #: time back-to-back calls with the host's work included (no blocking sleep)
    host_inclusive: bool = False


@dataclass
class Timing:
    """Per-call samples in microseconds and how they were taken."""

    samples_us: list[float]
    copies: int
    l2_cold: Optional[bool]

    @property
    def median_us(self) -> float:
        return percentile(self.samples_us, 50)

    @property
    def p20_us(self) -> float:
        return percentile(self.samples_us, 20)

    @property
    def p80_us(self) -> float:
        return percentile(self.samples_us, 80)


def percentile(samples, q: float) -> float:
    """The ``q``-th percentile with linear interpolation between order statistics
    (numpy's default): position ``(len - 1) * q / 100`` in the sorted samples."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile: q must be in 0..100, got {q}")
    s = sorted(samples)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def l2_bytes(device: torch.device) -> tuple[int, str]:
    """``(bytes, source)`` of the device's L2; ``(0, ...)`` on CPU (no rotation there)."""
    if device.type != "cuda":
        return 0, "cpu: caches not controlled"
    size = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
    if size:
        return int(size), "torch.cuda.get_device_properties().L2_cache_size"
    return H100_L2_BYTES, "assumed 50 MiB (H100 datasheet): device did not report L2_cache_size"


def rotation_copies(read_bytes: int, l2: int) -> tuple[int, Optional[bool]]:
    """``(copies, l2_cold)``: how many input copies to cycle so each call reads from HBM."""
    if l2 <= 0:
        return 1, None
    target = ROTATE_L2_FACTOR * l2
    if read_bytes >= target:
        return 1, True
    want = math.ceil(target / max(read_bytes, 1))
    return min(want, MAX_COPIES), want <= MAX_COPIES


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _flusher(device: torch.device, l2: int) -> Optional[Callable[[], None]]:
    if device.type != "cuda" or l2 <= 0:
        return None
    buf = torch.empty(ROTATE_L2_FACTOR * l2, dtype=torch.uint8, device=device)
    return buf.zero_


def time_bounds(bounds: list[Bound], device: torch.device, rep_s: float | None = None,
                l2_cold: Optional[bool] = None, l2: int = 0) -> Timing:
    """Warm up, then time ``step()`` over ``bounds`` round-robin; see the module docstring."""
    cuda = device.type == "cuda"
    rep_s = rep_s if rep_s is not None else (CUDA_REP_S if cuda else CPU_REP_S)
    flush = _flusher(device, l2) if any(b.pre for b in bounds) else None
    n = len(bounds)

    def call(r: int) -> None:
        b = bounds[r % n]
        if b.pre:
            b.pre()
        b.step()

    synchronize(device)
    t0 = time.perf_counter()
    for r in range(ESTIMATE_CALLS):
        call(r)
    synchronize(device)
    est = max((time.perf_counter() - t0) / ESTIMATE_CALLS, 1e-7)
    n_warm = max(math.ceil(CUDA_WARMUP_S / est) if cuda else 1, ESTIMATE_CALLS)
    host_s = []
    for r in range(n_warm):
        t0 = time.perf_counter()
        call(r)
        host_s.append(time.perf_counter() - t0)
    n_rep = min(max(math.ceil(rep_s / est), MIN_REPS if cuda else CPU_MIN_REPS), MAX_REPS)
    if not cuda:
        return Timing(_time_cpu(bounds, n_rep), copies=n, l2_cold=l2_cold)
    if any(b.host_inclusive for b in bounds):
        return Timing(_time_cuda_loops(bounds, n_rep), copies=n, l2_cold=l2_cold)
    hold_us = max(HOLD_FACTOR * percentile(host_s, 50) * 1e6, HOLD_MIN_US)
    return Timing(_time_cuda(bounds, n_rep, flush, hold_us), copies=n, l2_cold=l2_cold)


_cycles_per_us: list[float] = []


def sleep_cycles_per_us() -> float:
    """``torch.cuda._sleep`` cycles per microsecond on this GPU, timed once per process."""
    if not _cycles_per_us:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(SLEEP_CALIBRATION_CYCLES // 10)
        start.record()
        torch.cuda._sleep(SLEEP_CALIBRATION_CYCLES)
        end.record()
        torch.cuda.synchronize()
        _cycles_per_us.append(SLEEP_CALIBRATION_CYCLES / (start.elapsed_time(end) * 1e3))
    return _cycles_per_us[0]


def _time_cuda(bounds: list[Bound], n_rep: int, flush, hold_us: float) -> list[float]:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_rep)]
    hold_cycles = int(hold_us * sleep_cycles_per_us())
    n = len(bounds)
    torch.cuda.synchronize()
    for r in range(n_rep):
        b = bounds[r % n]
        if b.pre:
            b.pre()
            if flush:
                flush()
        torch.cuda._sleep(hold_cycles)
        starts[r].record()
        b.step()
        ends[r].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]


def _time_cuda_loops(bounds: list[Bound], n_rep: int) -> list[float]:
    """Host-inclusive timing: ``EAGER_LOOPS`` loops of back-to-back calls (no sleep, no
    ``pre``) between two events each; a sample is one loop's time per call, so the host's
    validation, dispatch and launch cost shows wherever it exceeds the device time."""
    per_loop = max(n_rep // EAGER_LOOPS, 1)
    n = len(bounds)
    samples = []
    torch.cuda.synchronize()
    for _ in range(EAGER_LOOPS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for r in range(per_loop):
            bounds[r % n].step()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / per_loop)
    return samples


def _time_cpu(bounds: list[Bound], n_rep: int) -> list[float]:
    samples = []
    n = len(bounds)
    for r in range(n_rep):
        b = bounds[r % n]
        if b.pre:
            b.pre()
        t0 = time.perf_counter()
        b.step()
        samples.append((time.perf_counter() - t0) * 1e6)
    return samples


def peak_bytes(bound: Bound, device: torch.device) -> Optional[int]:
    """``max_memory_allocated`` during one ``step()`` minus what was allocated before it
    (outputs included); ``None`` on CPU, where PyTorch keeps no such counter."""
    if device.type != "cuda":
        return None
    if bound.pre:
        bound.pre()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = bound.step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    return int(peak)


@dataclass
class Limits:
    """The machine's ceilings, measured in this run."""

    device_name: str
    copy_bytes: int
    copy_GBps: float
    matmul_n: int
    matmul_TFLOPs: dict[str, float]
    l2_bytes: int
    l2_source: str


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _median_us(step: Callable[[], object], device: torch.device, reps: int, warm: int) -> float:
    for _ in range(warm):
        step()
    bounds = [Bound(step=step, read_bytes=0)]
    samples = _time_cuda(bounds, reps, None, HOLD_MIN_US) if device.type == "cuda" else _time_cpu(bounds, reps)
    return percentile(samples, 50)


def copy_GBps(device: torch.device, nbytes: int, reps: int, warm: int) -> float:
    """``2 * nbytes / t`` of ``dst.copy_(src)`` (one read and one write per byte)."""
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = _median_us(lambda: dst.copy_(src), device, reps, warm)
    return 2 * nbytes / (t * 1e-6) / 1e9


def matmul_TFLOPs(device: torch.device, dtype: torch.dtype, n: int, reps: int, warm: int) -> float:
    """``2 n^3 / t`` of an ``n x n`` product of random matrices (zeros run faster)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = _median_us(lambda: a @ b, device, reps, warm)
    return 2 * n**3 / (t * 1e-6) / 1e12


def measure_limits(device: torch.device, dtypes: list[str]) -> Limits:
    """Copy bandwidth and, per benched dtype, the matmul rate."""
    cuda = device.type == "cuda"
    reps = LIMIT_REPS if cuda else CPU_LIMIT_REPS
    warm = 3 if cuda else 1
    nbytes = CUDA_COPY_BYTES if cuda else CPU_COPY_BYTES
    n = CUDA_MATMUL_N if cuda else CPU_MATMUL_N
    l2, source = l2_bytes(device)
    return Limits(
        device_name=device_name(device),
        copy_bytes=nbytes,
        copy_GBps=copy_GBps(device, nbytes, reps, warm),
        matmul_n=n,
        matmul_TFLOPs={name: matmul_TFLOPs(device, DTYPES[name], n, reps, warm) for name in dtypes},
        l2_bytes=l2,
        l2_source=source,
    )
