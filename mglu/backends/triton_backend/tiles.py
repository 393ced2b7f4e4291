"""Every tile and regime constant of the Triton backend, with where it came from.

``T`` tokens, ``n`` masks. The constants marked *H100* were chosen by the sweep in
``scripts/triton_tune.py`` on the device tool's H100 (numbers in MEASUREMENTS.md, the H200's in MEASUREMENTS_H200.md); the rest
follow from a hardware fact stated beside them.
"""

import functools
from dataclasses import dataclass

#: the CUDA-core GEMV serves one token (every n_masks); every other forward runs on
#: tensor cores. H100, 4096x14336 bf16: run 2 (the first GEMV) at T=2, n=4: GEMV 193.1 us
#: vs tl.dot tile 163.7 us; run 11 (this GEMV) at T=1, n=1: 54.7 us vs the tl.dot tile's
#: 63.5 us (run 2's first GEMV had lost at n=1: 75.1 vs 63.5)
GEMV_MAX_TOKENS = 1


@dataclass(frozen=True)
class Gemv:
    """``fwd_gemv``: ``BN`` rows x ``BG`` byte groups (8 columns each) per step, ``UNROLL``
    steps per loop iteration (their loads in flight together); ``maxnreg`` caps ptxas's
    registers (None: its own choice), which also moves where it schedules the loads."""

    BN: int
    BG: int
    num_warps: int
    UNROLL: int = 1
    maxnreg: int | None = None

    def __post_init__(self):
        if self.UNROLL not in (1, 2, 4):
            raise ValueError(f"Gemv.UNROLL is 1, 2 or 4 (kernels.fwd_gemv unrolls that far), got {self.UNROLL}")


@dataclass(frozen=True)
class Mma:
    """``fwd_mma`` / ``bwd_*``: a ``BN x BT`` output tile (W rows x tokens), ``BK`` deep."""

    BN: int
    BT: int
    BK: int
    num_warps: int
    num_stages: int
    #: most gate accumulators live per pass over K (fwd_mma's G; 1..MAX_GATE_ACCS)
    gates: int = 4
    #: read the masked tiles from ``M_i W`` staged in HBM (kernels.expand_masks) instead of
    #: building them from the bits in registers
    staged: bool = False
    #: build the masked tiles two 16-bit elements per inline PTX call (kernels._masked_pairs)
    #: where that applies: fp16/bf16 on a GPU, not staged (the interpreter runs no PTX)
    pairs: bool = False


@dataclass(frozen=True)
class Wgmma:
    """``wgmma.fwd_wgmma`` (Gluon, sm_90): 64 W rows (one warp group's wgmma M) x ``BT``
    tokens, ``BK`` deep, ``stages`` cp.async slots; ``gates`` accumulators a pass over K;
    ``wait``: when the wgmmas are waited for, one of WGMMA_WAITS (wgmma.fwd_wgmma says what
    each does). No defaults: ``wgmma_tiles`` says which values run and why."""

    BT: int
    BK: int
    stages: int
    gates: int
    wait: str

    def __post_init__(self):
        if self.stages < 2:
            raise ValueError(f"Wgmma.stages is at least 2 (one slot filling while one is read), got {self.stages}")
        if not 1 <= self.gates <= MAX_GATE_ACCS:
            raise ValueError(f"Wgmma.gates is 1..{MAX_GATE_ACCS} (fwd_wgmma names g0..g3), got {self.gates}")
        if self.wait not in WGMMA_WAITS:
            raise ValueError(f"Wgmma.wait is one of {', '.join(WGMMA_WAITS)}, got {self.wait!r}")


@dataclass(frozen=True)
class Expand:
    """``expand_masks``: a ``BN x BK`` tile of W per program, written once per mask."""

    BN: int
    BK: int
    num_warps: int


#: fwd_wgmma's ways of waiting for its wgmmas: each where issued, a stage's together, or
#: one in flight (the next mask's select beside the previous mask's MMA)
WGMMA_WAITS = ("each", "stage", "chain")
#: fwd_wgmma's W rows a program: the M of one warp group's wgmma (4 warps, 16 rows each)
WGMMA_BN = 64
#: tl.dot's smallest tile edge is 16
MIN_DOT = 16
#: programs that share operand tiles in L2 are launched GROUP at a time (Triton's tutorial)
GROUP = 8
#: the tensor-core forward keeps total, the running sum and G gate accumulators of
#: BN x BT fp32 live: at most 4 gates
MAX_GATE_ACCS = 4
#: the GEMV's gate accumulators per pass: fwd_gemv's code names 8 (a0..a7); each is one
#: register a thread (kernels._chain), so registers do not bound it
MAX_GEMV_ACCS = 8


@functools.cache
def gemv_tiles(n_masks: int) -> Gemv:
    """GEMV tiles for ``n_masks``. A thread's 8 consecutive 16-bit elements are one 16-byte
    load. BN=4, BG=32, 4 warps comes from H100 run 2 (the first GEMV: best or within 3% of
    best of 10 tilings) and was not re-timed with unroll and cap; run 10's uncapped
    unroll-4 rows hint at better shapes: n=1 BN=8 with 8 warps 56.3 us against 62.2, n=8
    BN=4 BG=16 2 warps 128.2 against 151.4 (a lead). Unroll and register cap by gate
    accumulators a pass, H100 run 11 (4096x14336 bf16, 1 token, do_bench; 8 settings
    each): n=1 unroll 4 at 200 registers 54.7 us (uncapped 61.8), n=2 unroll 4 at 168
    58.6 us (uncapped 65.2), n=4 unroll 4 at 128 71.7 us (no unroll 77.7, at 168: 80.9),
    n=8 unroll 2 uncapped 96.9 us (unroll 4: 169.2). A cap lets ptxas keep the loads of
    all the unrolled steps ahead of their arithmetic (SASS); at n=4 a higher cap costs
    occupancy (121 registers, 4 programs of 128 threads an SM, against 133 registers and
    3 at 168). H200 run 35 (`triton_tune.py chain` at commit 92e2dd2, now its `decode` part; do_bench, copy 4253 GB/s, every output
    checked), with one accumulator a thread and mask (kernels._chain), 4096x14336 bf16,
    the best of 8 unroll / cap settings against the per-element accumulators' tiles
    above: n=1 unroll 4 at 96 registers 42.0 us against 42.0; n=2 unroll 4 at 96 44.5
    against 47.2; n=4 unroll 2 at 80 53.1 against 62.2 (unroll 4 at 80: 56.8); n=8
    unroll 2 at 80 70.0 against 89.7. On 4096x11008 and 8192x28672, fp16 and bf16, these
    settings won at n=2, 4, 8 (n=4 8192x28672 fp16 162.1 against 192.5 us) and were within
    2% at n=1 (4096x14336 bf16 42.2 against 41.4, 8192x28672 124.4 against 126.9)."""
    g = gate_group(n_masks, MAX_GEMV_ACCS)
    if g <= 2:
        return Gemv(BN=4, BG=32, num_warps=4, UNROLL=4, maxnreg=96)
    return Gemv(BN=4, BG=32, num_warps=4, UNROLL=2, maxnreg=80)


#: batched decode on Hopper runs wgmma.fwd_wgmma (Gluon) from 2 to WGMMA_NARROW_TOKENS
#: tokens (a 16-token tile), and from there to WGMMA_MAX_TOKENS at up to
#: WGMMA_WIDE_MAX_MASKS masks (a 64-token tile); fp16/bf16, d_model % WGMMA_BK == 0,
#: 16-byte aligned tensors (launch.wgmma_ok). H200 run 74 (triton_tune.py wgmma, do_bench),
#: 4096x14336 bf16, 16 tokens, against fwd_mma's 16-token tile: n=1 45.4 against 47.9 us,
#: n=4 74.9 against 127.4, n=8 131.5 against 230.5; 4096x11008 and 8192x28672 the same
#: ordering (1.2-1.9x), 2 tokens as 16. H100 run 80 (the same script, graph replay), 64
#: tokens bf16, the 64-token tile against fwd_mma's: 4096x14336 n=1 52.5 against 61.2 us,
#: n=4 135.4 against 181.9; 4096x11008 n=1 47.7 against 59.0, n=4 133.5 against 179.9
#: (n >= 5 at 64 tokens not timed: fwd_mma keeps them)
WGMMA_NARROW_TOKENS = 16
WGMMA_MAX_TOKENS = 64
WGMMA_WIDE_MAX_MASKS = 4
#: fwd_wgmma's depth up to 16 tokens: whole 128-column stages (16 mask bytes, one 16-byte
#: copy a row); d_model must be a multiple (no K tail in the kernel)
WGMMA_BK = 128


def wgmma_serves(tokens: int, n_masks: int) -> bool:
    """The token and mask counts fwd_wgmma takes (launch.wgmma_ok adds device, dtype, depth
    and alignment)."""
    return GEMV_MAX_TOKENS < tokens <= WGMMA_MAX_TOKENS and (
        tokens <= WGMMA_NARROW_TOKENS or n_masks <= WGMMA_WIDE_MAX_MASKS)


@functools.cache
def wgmma_tiles(n_masks: int, tokens: int) -> Wgmma:
    """fwd_wgmma's tiles (cached: the op asks on every call, and a frozen dataclass's
    construction is host time).

    Up to 16 tokens: H200 run 75 (triton_tune.py wgmma at ca137d8, do_bench medians,
    outputs checked), 4096x14336 bf16, 16 tokens, us: the shift-and-prmt select that
    wgmma._masked keeps against the multiply form (removed): n=1 45.9 / 46.3, n=4 70.1 /
    71.5, n=8 124.5 / 130.1; 3 stages against 4: n=1 44.1 / 45.9, n=4 67.4 / 70.1;
    asynchronous wgmma: n=4 64.6 (4 stages), 62.9 (3 stages), n=8 119.6 / 119.3 against
    124.5 / 124.0 synchronous, but spilling 48 registers; 2 stages: n=1 49.6. So 3 stages
    and the asynchronous wgmma up to 4 masks, where it holds 255 registers without a spill;
    above 4 masks synchronous, though at n=8 the spilling asynchronous form was 4% faster
    in run 75 (a spill was kept out of the default; offline, ptxas spills it from n=5).
    H100 run 80 (graph replay, 16 tokens, bf16): 64 deep did not pay (4096x14336 n=4 71.4
    us asynchronous against 64.7 at 128), nor did K split over 2-4 programs a row block
    with fp32 partial sums and an epilogue kernel (n=4 74.8-81.7 against 64.7; 4096x11008
    60.0-68.4 against 59.2; the code was removed, MEASUREMENTS.md runs 79-80).

    17-64 tokens (H100 run 80, 64 tokens, bf16, graph replay): 64 deep, so that the five
    64x64 fp32 accumulators of n=4 and the operand tiles fit without a spill (offline
    ptxas: 255 registers, none spilled; at 128 deep 208 bytes of stack); n=1 4 stages,
    "stage" (4096x14336 52.5 us; 3 stages 54.5, "each" 53.0); n=4 3 stages, "each" (135.4;
    "stage" 143.6, 4 stages 137.6). How the wgmmas are waited for
    (H200 run 83, triton_tune.py wgmmawait, 64 tokens, bf16, graph replay, us, each /
    stage / chain): 4096x14336 n=1 50.6 / 50.1 / 49.9, n=2 74.0 / 70.4 / 70.5, n=3 95.6 /
    92.0 / 93.6, n=4 135.7 / 142.9 / 125.4; 4096x11008 n=2 73.4 / 70.8 / 70.9, n=3 92.7 /
    92.6 / 95.0, n=4 133.7 / 140.4 / 124.4. So n <= 3 "stage" and n=4 "chain" (the stage's
    4 masked tiles live cost it the overlap; chain keeps two). At 16 tokens "stage" stays
    (n=4 54.4 against chain 55.7 and each 61.0 at 4096x14336; n=2 all three within 1%).
    ``gates``: the 4 accumulators fwd_wgmma names."""
    if tokens <= WGMMA_NARROW_TOKENS:
        return Wgmma(BT=WGMMA_NARROW_TOKENS, BK=WGMMA_BK, stages=3, gates=MAX_GATE_ACCS,
                     wait="stage" if n_masks <= MAX_GATE_ACCS else "each")
    return Wgmma(BT=WGMMA_MAX_TOKENS, BK=64, stages=4 if n_masks == 1 else 3, gates=MAX_GATE_ACCS,
                 wait="chain" if n_masks == WGMMA_WIDE_MAX_MASKS else "stage")


def gate_group(n_masks: int, most: int = MAX_GATE_ACCS) -> int:
    """Gate accumulators per pass over K: ``ceil(n / passes)`` with the fewest passes."""
    passes = -(-n_masks // most)
    return -(-n_masks // passes)


def _pow2_at_least(v: int, lo: int) -> int:
    p = lo
    while p < v:
        p *= 2
    return p


#: expand_masks is a copy (2 + n/8 bytes read, 2n written per weight): 32 x 64 tiles, 4
#: warps (16 elements, 32 bytes of a 16-bit row per thread). H100 run 6: 268.4 us at
#: 4096x14336, n=4, 76.5% of copy bandwidth (no other tile timed)
EXPAND_TILES = Expand(BN=32, BK=64, num_warps=4)


#: ds_from_factors is element-wise (reads n + 2 planes, writes n + 1): DS_BLOCK elements
#: per program of DS_WARPS warps, 8 per thread (16-byte accesses in 16-bit dtypes). H100
#: run 7, as ds_from_gates (fp32 gates in, the activation in the pass): 172.7 us at 2048
#: tokens x 11008, n=4, 95.6% of copy bandwidth (no other size timed)
DS_BLOCK = 1024
DS_WARPS = 4


#: fp64 runs on CUDA cores (Triton 3.6 cannot lower an fp64 tl.dot whose operand is
#: built in registers); the (BN, BK, BT) product is BN*BK*BT/threads registers
FP64_TILES = Mma(BN=16, BT=16, BK=16, num_warps=4, num_stages=1)


#: from this many tokens (fp16/bf16) the forward, the backward's DS pass and dx read the
#: masked weights staged in HBM (kernels.expand_masks, 268 us at 4096x14336 n=4, 76.5% of
#: copy bandwidth) instead of building them in registers. H100 run 7, 4096x14336 bf16,
#: expansion included, staged vs unstaged: n=4 (128x64x64, 2 gates) 128 tokens 523 vs
#: 428 us, 256: 663 vs 855 us, 2048: 2.93 vs 6.00 ms; n=1 (128x128 vs 64x128) 256 tokens
#: 226 vs 179 us, 512: 321 vs 322 us, 1024: 488 vs 597 us. The backward's DS pass and dx
#: follow the forward's choice (their staged and unstaged tiles were timed at 2048 and
#: 8192 tokens only)
STAGED_MIN_TOKENS = 256
STAGED_MIN_TOKENS_ONE_MASK = 1024


def staged(tokens: int, n_masks: int, elem_bytes: int) -> bool:
    """Whether the tensor-core kernels read staged masked weights (fp16/bf16 only)."""
    return elem_bytes == 2 and tokens >= (STAGED_MIN_TOKENS_ONE_MASK if n_masks == 1 else STAGED_MIN_TOKENS)


def mma_fwd_tiles(tokens: int, n_masks: int, elem_bytes: int = 2) -> Mma:
    """Forward/DS-pass tiles. H100 run 2, 4096x14336 bf16: T <= 16 with BT=16, BN=64,
    BK=128 ran 63.5 us at n=1 (65% of copy bandwidth; BN=128 was the same); prefill n=1
    best of 4 tilings BN=64, BT=128, BK=64, 4 warps (404 TF/s); n=4 best BN=128, BT=64,
    BK=64, 8 warps (194 TF/s, spilling 18 registers); run 5: the same tile with 2 gate
    accumulators per pass (two passes over K) 212.4 TF/s vs 195.0 with 4, spilling 6.
    Staged (run 6, 8192 tokens, expansion included): n=1 BN=BT=128, 8 warps 581.5 TF/s
    (73.9% of matmul; 128x64: 405, the unstaged 64x128: 412); n=4 BN=128, BT=64 with 2
    gates per pass 426.8 TF/s (4 gates at BK=32: 427.8; 128x128 with 1 gate spilled 2.2 KB
    and ran 162 TF/s: total, the running sum and a gate are 3 x 64 fp32 registers a thread).
    The DS pass (MODE 1, 2048 tokens, 4096x11008): 2 gates 392.5 TF/s, 1 gate 365.7.
    Batched decode (H200 run 26, 4096x14336 bf16, do_bench, each output checked): at 64
    tokens BK=64 against the 128 deep tile, n=4 239.5 against 711.5 us (the 128 deep tile
    spilled 228 registers, the 64 deep one 22; 8 warps 353.8, BN=128 252.7), n=1 71.0
    against 76.5; at 16 tokens BK=128 stays (n=1 53.3 against 61.1, n=4 162.1 against
    163.3). BT=32 (17-32 tokens, not timed) takes BK=64 too: ptxas (CPU, triton 3.9, n=4)
    616 bytes of stack at BK=128, none at 64. Up to 64 tokens the masked tiles are built
    in inline PTX (``pairs``; H200, do_bench, outputs checked; run 33 without it: 16 tokens
    n=1 53.7 us, n=4 161.7, 64 tokens n=1 71.5, n=4 238.8; run 34 with its final form: 46.7,
    127.2, 64.9, 191.4; on every other tile tried it lost to this one); the larger unstaged
    tiles (65-255 tokens) were not timed with it and keep ``tl.where``."""
    bt = min(_pow2_at_least(tokens, MIN_DOT), 128)
    if bt <= 64:
        # fp32 at BT=64: 4 stages of (64x128 + 128x64) x 4 B is 262 KB, over the H100's
        # 227 KB of shared memory per block (seen: OutOfResources on the device); BK=64 halves it
        return Mma(BN=64, BT=bt, BK=128 if elem_bytes <= 2 and bt <= MIN_DOT else 64, num_warps=4, num_stages=4,
                   pairs=True)
    if staged(tokens, n_masks, elem_bytes):
        if n_masks == 1:
            return Mma(BN=128, BT=128, BK=64, num_warps=8, num_stages=3, gates=1, staged=True)
        return Mma(BN=128, BT=64, BK=64, num_warps=8, num_stages=3, gates=2, staged=True)
    if n_masks == 1:
        return Mma(BN=64, BT=128, BK=64, num_warps=4, num_stages=3)
    return Mma(BN=128, BT=64, BK=64, num_warps=8, num_stages=3, gates=2)


def mma_dx_tiles(tokens: int, from_staged: bool = False) -> Mma:
    """``bwd_dx``: one accumulator (BT x BK), the loop runs over d_ff in BN steps. H100 run
    2 (byte-gather bits): BK 64 and 128 within 2%. Staged (run 6, 4096x11008, n=4, 2048
    and 8192 tokens): BT=128, BN=64, BK=256 463.5 / 461.7 TF/s; BK=128 332 / 336; the
    unstaged 64-deep tile 220 / 218. Run 7: the same 466.3 / 470.0; BN=32 (no spill)
    404 / 410; BT=256 with 16 warps 437 / 387."""
    bt = min(_pow2_at_least(tokens, MIN_DOT), 128)
    if from_staged:
        return Mma(BN=64, BT=bt, BK=256, num_warps=8, num_stages=3, staged=True)
    return Mma(BN=64, BT=bt, BK=64, num_warps=8, num_stages=3)


def mma_dw_tiles() -> Mma:
    """``bwd_dw``: two accumulators (dW, P_i) of BN x BK, the loop runs over tokens BT at a
    time. H100 run 6, 4096x11008, n=4, 2048 / 8192 tokens: BN=128, BT=64, BK=128 386.2 /
    456.7 TF/s (spilling 66 registers), BK=64 with 4 stages 342.5 / 322.6, with 3 stages
    285.9 / 279.2 (run 2's choice). Run 7: BK=128 with 4 stages 386.0 / 487.6, 3 stages
    390.4 / 443.6; 16 warps and BT=128 were slower."""
    return Mma(BN=128, BT=64, BK=128, num_warps=8, num_stages=4)
