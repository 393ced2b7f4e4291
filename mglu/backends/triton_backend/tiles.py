"""Every tile and regime constant of the Triton backend, with where it came from.

``T`` tokens, ``n`` masks. The constants marked *H100* were chosen by the sweep in
``scripts/triton_tune.py`` on the device tool's H100 (numbers in DESIGN.md); the rest
follow from a hardware fact stated beside them.
"""

from dataclasses import dataclass

#: decode regime: the CUDA-core GEMV serves T <= this (H100: see DESIGN.md, "switch")
GEMV_MAX_TOKENS = 1


@dataclass(frozen=True)
class Gemv:
    """``fwd_gemv``: ``BN`` rows x ``BG`` byte groups (8 columns each) per iteration."""

    BN: int
    BG: int
    num_warps: int


@dataclass(frozen=True)
class Mma:
    """``fwd_mma`` / ``bwd_*``: a ``BM x BT`` output tile (W rows x tokens), ``BK`` deep."""

    BN: int
    BT: int
    BK: int
    num_warps: int
    num_stages: int


#: tl.dot's smallest tile edge is 16
MIN_DOT = 16
#: programs that share operand tiles in L2 are launched GROUP at a time (Triton's tutorial)
GROUP = 8
#: the tensor-core forward keeps total, the running sum and G gate accumulators of
#: BN x BT fp32 live: at most 4 gates
MAX_GATE_ACCS = 4
#: the GEMV's gate accumulators are BN x BG partial sums: at most 8 (kernels.fwd_gemv)
MAX_GEMV_ACCS = 8


def gemv_tiles(n_masks: int) -> Gemv:
    """GEMV tiles: a thread's 8 consecutive 16-bit elements are one 16-byte load; each of
    the ``G + 1`` accumulators takes ``BN * BG / threads`` registers."""
    return Gemv(BN=8, BG=32, num_warps=4)


def gate_group(n_masks: int, most: int = MAX_GATE_ACCS) -> int:
    """Gate accumulators per pass over K: ``ceil(n / passes)`` with the fewest passes."""
    passes = -(-n_masks // most)
    return -(-n_masks // passes)


def _pow2_at_least(v: int, lo: int) -> int:
    p = lo
    while p < v:
        p *= 2
    return p


def mma_fwd_tiles(tokens: int, group: int) -> Mma:
    """Forward/DS-pass tiles: the token edge grows with T up to 128; with more gate
    accumulators live the tile shrinks (each fp32 BN x BT accumulator takes
    BN*BT/(32*num_warps) registers per thread)."""
    bt = min(_pow2_at_least(tokens, MIN_DOT), 128)
    if bt <= 64:
        return Mma(BN=64, BT=bt, BK=128, num_warps=4, num_stages=4)
    if group == 1:
        return Mma(BN=128, BT=128, BK=64, num_warps=8, num_stages=3)
    return Mma(BN=128, BT=64, BK=64, num_warps=8, num_stages=3)


def mma_dx_tiles(tokens: int) -> Mma:
    """``bwd_dx``: one accumulator (BT x BK), the loop runs over d_ff in BN steps."""
    bt = min(_pow2_at_least(tokens, MIN_DOT), 128)
    return Mma(BN=64, BT=bt, BK=128, num_warps=8, num_stages=3)


def mma_dw_tiles() -> Mma:
    """``bwd_dw``: two accumulators (dW, P_i) of BN x BK, the loop runs over tokens."""
    return Mma(BN=128, BT=64, BK=128, num_warps=8, num_stages=3)
