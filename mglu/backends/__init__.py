"""Registry of backends and the order ``auto`` tries them in.

Each module registers one :class:`~mglu.backends.base.Backend`. :func:`auto_priority` is
the order ``MGLU_BACKEND=auto`` walks for one problem; each rank comes from the benchmark
(``python -m mglu bench``) on the H100 or, since 2026-12-03, the H200, quoted beside the rule.
"""

from . import cuda_backend, numba_backend, torch_backend, triton_backend
from .base import Backend, Problem, new_output, poisoned_outputs

REGISTRY: dict[str, Backend] = {
    "torch": torch_backend.BACKEND,
    "triton": triton_backend.BACKEND,
    "cuda": cuda_backend.BACKEND,
    "numba": numba_backend.BACKEND,
}

BACKEND_NAMES: tuple[str, ...] = tuple(REGISTRY)
AUTO = "auto"
#: tokens above which the forward is prefill: triton's tensor cores lead (H100, bf16,
#: 4096x14336, 8192 tokens: n=1 4.65 ms vs cuda 33.3 ms, n=4 24.5 vs 59.8 ms)
PREFILL_TOKENS = 64
#: at one token triton's GEMV leads up to this many masks, cuda's row kernel above (H100
#: run 12, H200 runs 24 and 36; auto_priority)
ONE_TOKEN_TRITON_MASKS = 4
#: from 2 tokens up to this many cuda's tensor-core row kernel leads (its 16-token tile,
#: launcher.MMA_SPLIT_TOKENS), above it triton's tl.dot tile (H200 runs 23 and 26, auto_priority)
BATCHED_CUDA_TOKENS = 16
#: the forward's fallbacks after triton and cuda: numba before the torch backend up to this
#: many tokens, the torch backend first above (H200 run 82 of triton_backend/MEASUREMENTS.md,
#: `device_check.sh numbatorch`, bf16, us, torch backend against numba): 4 tokens
#: 4096x14336 n=1 537.6 against 118.8, n=4 2033.5 against 162.9 (4096x11008 426.2 / 97.2,
#: 1597.2 / 140.0); 8 tokens n=1 538.3 against 972.1 (n=4 2042.7 against 1121.6); 16
#: tokens n=4 4096x11008 1608.2 against 1763.6; 64 tokens 2084.0 against 7308.5
NUMBA_BEFORE_TORCH_TOKENS = 4


def auto_priority(problem: Problem) -> tuple[str, ...]:
    """The order ``auto`` tries backends in for ``problem``, from the H100 and H200 benches
    (see README "Choosing a backend").

    - CPU: torch (the kernel backends run on CPU only under their interpreters).
    - CUDA backward, more than ``PREFILL_TOKENS`` tokens: triton first (training step
      forward + backward on one backend, 4096x11008, 2048 tokens, n=4, bf16, H100 run 8 of
      triton_backend/MEASUREMENTS.md: triton 11.1 ms, the torch backend 19.7 ms; run 9, with the
      faster mask packing, triton 9.3 ms); fewer tokens: torch first (triton's backward is
      not measured there).
    - CUDA forward, 1 token: up to ``ONE_TOKEN_TRITON_MASKS`` masks triton first, then
      cuda; more masks cuda first (``python -m mglu bench --preset paper``, fp16, H100 run
      12 of triton_backend/MEASUREMENTS.md: 4096x14336 n=1 triton 45.5 us, cuda 46.7; n=2 48.9
      vs 51.6; n=4 61.9 vs 57.2; n=8 84.5 vs 72.7; 2048x8192 the same order). On the H100
      (run 12) numba's kernel beat triton's from four masks (59.8 and 74.9 us); on the H200
      it was the slowest of the three at all but two 1-token points of runs 36-38, and since
      its 8-lane defaults (run 49, bench, fp16 / bf16, 4096x14336 and 4096x11008, n 1 and 4)
      within 1.00-1.13x of triton in device time, ahead of cuda at 4 of the 8 points and level
      with triton at one (bf16 4096x14336 n=4: 44.7 against 45.2 us); an eager numba call
      costs 455.0 us (run 10) and 646.7 (run 12) against triton's 65.5 and 86.6 (bench
      --eager, 4096x14336, n=4, bf16), so numba stays after triton (H200 run 25,
      scripts/host_loop.py: eager loop numba 653.0 us a call, triton 87.1; run 31: 720.7 and
      53.4). H200 run 24 (bench, 1 token, fp16 / bf16, 4096x14336): n=1 triton 33.4 / 34.4 us,
      cuda 36.9 / 36.5; n=4 triton 52.7 / 53.5, cuda 47.2 / 48.5 (4096x11008 the same order).
      H200 run 36 (bench, after triton's GEMV took one accumulator a thread and mask): n=4
      triton first at 4096x14336 (44.0 / 46.4 us against cuda 47.7 / 48.9) and 4096x11008
      (34.9 / 37.1 against 38.0 / 39.1), cuda at 8192x28672 (149.2 / 149.8 against 155.6 /
      160.6, the one shape where the order is wrong); n=8 cuda at all three (59.0 against
      60.9 us at 4096x14336 fp16).
    - CUDA forward, 2..``BATCHED_CUDA_TOKENS`` tokens: cuda, then triton (H200 run 73, bench,
      16 tokens, fp16 / bf16, cuda's ring kernel: 4096x14336 n=1 cuda 36.6 / 36.8 us, triton
      44.6 / 44.5; n=4 60.1 / 60.0 against 122.8 / 123.0; 4096x11008 n=1 31.1 / 29.9 against
      44.5 / 44.5, n=4 47.6 / 47.8 against 121.7 / 121.8; 2-15 tokens of triton not timed,
      cuda's at 2, 4 and 8 in cuda_backend/MEASUREMENTS_H200.md).
    - CUDA forward, ``BATCHED_CUDA_TOKENS`` + 1 .. 64 tokens: triton, then cuda (64 tokens,
      bf16, 4096x14336: n=1 triton 75.9 us, cuda 329.0, H200 run 23, bench; n=4 triton
      239.5 us under do_bench with its L2 flush, H200 run 26, with the 64-deep tile of
      tiles.mma_fwd_tiles, against cuda's 449.6 in run 23; 17-32 tokens not timed).
    - CUDA forward, more tokens: triton, then cuda.
    - The forward's fallbacks: numba then torch up to ``NUMBA_BEFORE_TORCH_TOKENS`` tokens
      (numba's decode kernels lead the torch backend's materialised masked weights there by
      4-45x), torch then numba above (numba's tiled kernel has no tensor cores: at one mask
      1.8-1.9x behind at 8 tokens, at 64 tokens 3.4-11.1x; at four masks it still leads at 8
      tokens, by 1.7-1.8x, which the order gives away for one rule).
    """
    if problem.device.type != "cuda":
        return ("torch",)
    if problem.backward:
        if problem.tokens > PREFILL_TOKENS:
            return ("triton", "torch", "cuda", "numba")
        return ("torch", "triton", "cuda", "numba")
    if problem.tokens <= 1:
        first = ("triton", "cuda") if problem.n_masks <= ONE_TOKEN_TRITON_MASKS else ("cuda", "triton")
    elif problem.tokens <= BATCHED_CUDA_TOKENS:
        first = ("cuda", "triton")
    else:
        first = ("triton", "cuda")
    return first + (("numba", "torch") if problem.tokens <= NUMBA_BEFORE_TORCH_TOKENS else ("torch", "numba"))


__all__ = [
    "AUTO",
    "auto_priority",
    "BACKEND_NAMES",
    "REGISTRY",
    "Backend",
    "Problem",
    "new_output",
    "poisoned_outputs",
]
