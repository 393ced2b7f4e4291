"""Launch plans and the CuPy/NVRTC launcher of the CUDA backend.

Forward ``out (T, d_ff)`` = ``sum_i act(gate_i) * (total - gate_i)`` is one row-dot kernel;
backward is kernel A (the row-dot kernel in backward mode: ``D (n_masks, T, d_ff)``,
``S (T, d_ff)``), kernel B (``dx (T, d_model)``) and kernel C (``dW (d_ff, d_model)``,
``dM (n_masks, d_ff, d_model)``). From GEMM_MIN_TOKENS tokens (fp16/bf16) the masked weights
``WM_i = M_i * W`` are staged (``mglu_expand``) and each of those steps is one
shared-memory GEMM over the ``n_masks + 1`` planes (``mglu_gemm``, :func:`gemm_plan`). See DESIGN.md.

Everything up to the CuPy call is plain Python (:func:`rowdot_plan`, :func:`dx_plan`,
:func:`dw_plan`, :func:`instantiations`, :func:`source`), so that the CPU tests check the
plans against the set of template instantiations the build test compiles with nvcc.
CuPy is imported lazily, inside :func:`_function`, :func:`_kernel`, :func:`_allow_smem` and
:func:`launch`.
"""

import ctypes
import functools
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...activations import ACTIVATIONS, GELU_TANH_A, GELU_TANH_C
from ...masks import MAX_MASKS, MIN_MASKS

HERE = Path(__file__).parent
SOURCES = ("mglu_common.cuh", "mglu_fwd.cu", "mglu_bwd.cu", "mglu_gemm.cu", "mglu_ring.cu")

#: storage type of each dtype in the kernels (mglu_common.cuh)
CTYPE = {
    torch.float16: "mglu_f16",
    torch.bfloat16: "mglu_bf16",
    torch.float32: "float",
    torch.float64: "double",
}
MODE_FWD, MODE_BWD = 0, 1

#: token counts the decode kernel is instantiated for; T tokens take the smallest NT >= T
#: (tokens >= T are skipped, not computed). Up to 4 tokens, NT * (n_masks + 1) accumulators
#: stay in registers at n_masks = 16 (68 fp32; ptxas: 196 registers, no spill, for bf16, pred);
#: above, the tiled kernel (32 tokens x 32 rows per block) takes over. The switch point is
#: to be measured on the H100. NT = 2 is left out to keep the nvcc build test near 1 minute
#: per dtype on one core (each rowdot variant costs 16 x 2 instantiations per dtype).
GEMV_TOKENS = (1, 4)
#: tensor cores (mma.sync m16n8k16) take fp16/bf16 from 5 tokens; fp32 (IEEE, no TF32)
#: and fp64 stay on CUDA cores
MMA_DTYPES = (torch.float16, torch.bfloat16)
#: threads of the mma kernel: 4 warps of 16 tokens x 16 rows each
MMA_THREADS = 128
#: up to this many tokens (one 16-token tile) the mma kernel uses layout 1: its 4 warps
#: cover 2 row tiles x 2 K halves of one token tile instead of 2 token tiles x 2 row tiles,
#: so no warp idles on absent tokens and twice the blocks stream W; whether layout 1 also
#: wins from 17 to 32 tokens is to be measured on the H100
MMA_SPLIT_TOKENS = 16
#: decode kernel variants: name -> (template VAR, 32-bit mask words, warps per row, lanes per
#: row). VAR_PRED
#: (1): one warp per row; VAR_SPLIT (3): each row's rounds split over 2 or 4 warps (the
#: kernel's run-time ``split_arg``), the parts added in shared memory: smaller pieces of
#: work, against the wave quantisation of MEASUREMENTS.md; VAR_PRED_OCC (2), VAR_SPLIT_OCC (4):
#: the same under a register cap for more blocks per SM (GemvMinBlocks, mglu_common.cuh).
#: Mask loads: a byte per plane and chunk (``vec = 1``) or, where d_model % 32 == 0, a
#: 32-bit word per plane and 4 consecutive chunks (``vec = 2``). See mglu_rowdot_gemv.
#: The bytes twins of the tuned variants (same instantiations, ``vec = 1``) are the H200
#: lead of triton_backend/MEASUREMENTS_H200.md: each 16-byte load of a warp reads 512 contiguous bytes.
#: VAR_LANES8 (5): 8 lanes a row, 4 rows a warp, GEMV_LANES8_WARPS warps a block: the numba
#: backend's layout, its fastest at 2-4 masks on the H200 (numba_backend/DESIGN.md).
GEMV_VARIANTS = {
    "pred-bytes": (1, False, 1, 32),
    "pred-bytes-occ": (2, False, 1, 32),
    "pred-bytes-split4-occ": (4, False, 4, 32),
    "pred-words": (1, True, 1, 32),
    "pred-words-occ": (2, True, 1, 32),
    "pred-words-split2": (3, True, 2, 32),
    "pred-words-split4": (3, True, 4, 32),
    "pred-words-split2-occ": (4, True, 2, 32),
    "pred-words-split4-occ": (4, True, 4, 32),
    "lanes8-bytes": (5, False, 1, 8),
    "lanes8-words": (5, True, 1, 8),
}
#: tensor-core kernel variants: name -> (template VAR, 32-bit mask words): MMA_PRMT (1), 32-column
#: steps; MMA_WORDS (2), 128-column steps with a 32-bit mask word per plane (``vec = 2``);
#: MMA_WORDS_OCC (3), the same under a register cap (MmaMinBlocks, mglu_common.cuh)
MMA_VARIANTS = {"prmt": (1, False), "prmt-words": (2, True), "prmt-words-occ": (3, True)}
#: the variants of every regime but the tuned ones below, from one H100 run of
#: scripts/cuda_tune.py (commit 8c31847; do_bench; MEASUREMENTS.md "Round 2"): pred-words was the
#: fastest of select/pred x bytes/words in 22 of 24 points at 1 token, prmt beat the shift
#: pair masks in all 24 at 16 tokens
DEFAULT_GEMV_VARIANT = "pred-words"
DEFAULT_MMA_VARIANT = "prmt"
#: the fp16/bf16 forward at 1 token: (largest n_masks, variant), from run 2 of
#: scripts/cuda_tune.py (H100, commit 75fba74, bench timer; MEASUREMENTS.md "Round 3"), us summed
#: over fp16 and bf16 at 4096x14336, 8192x28672 and 4096x11008: n_masks 1, split4-occ
#: 507.8, split4 509.3, split2 513.2, split2-occ 515.2, pred-words 530.6 (fp16 4096x11008
#: 37.9 against 43.9; the one loss bf16 4096x14336, 50.8 against 47.8); n_masks 4,
#: pred-words-occ 609.8 against pred-words 635.9; n_masks 8, 771.1 against 830.3. Not
#: timed: n_masks 2, 3, 5-7 (capped at 64 / 80 registers). Above 8 masks the cap is off
#: (GemvMinBlocks 1), so pred-words itself, not the same kernel compiled again as -occ.
#: On the H200 (run 22, commit 60cad37, scripts/cuda_tune.py, bench timer,
#: MEASUREMENTS_H200.md), n_masks 1:
#: pred-bytes-split4-occ (added in that run) was the fastest variant at all four points,
#: fp16 / bf16 4096x14336 36.9 / 37.0 us, 4096x11008 30.3 / 29.7, against
#: pred-words-split4-occ's 40.7 / 46.3 and 33.1 / 36.8; n_masks 4: pred-words-occ still the
#: fastest (45.9 / 47.9 and 37.3 / 37.8; pred-bytes-occ 48.7 / 49.7 and 40.2 / 40.9).
#: H200 run 57 (commit d0073fc, cuda_tune.py, bench timer; MEASUREMENTS_H200.md), fp16 / bf16:
#: lanes8-words at n_masks 4 43.6 / 45.4 us at 4096x14336 and 37.6 / 39.4 at 4096x11008
#: against pred-words-occ's 47.6 / 47.9 and 37.2 / 37.9 (sum 166.0 against 170.6); n_masks
#: 2 38.7 / 40.5 and 33.3 / 35.4 against 42.3 / 44.7 and 34.6 / 35.0 (147.9 against 156.6);
#: n_masks 1 it lost to pred-bytes-split4-occ (141.0 against 135.7). n_masks 3 not timed;
#: from 5 masks pred-words-occ stays (lanes8 takes 94 registers at 8).
#: Run 58 (commit fa1ce40) at 8192x28672: lanes8-words lost, n_masks 4 157.4 / 158.9 against
#: pred-words-occ's 149.3 / 151.0, n_masks 2 156.1 / 150.7 against 137.6 / 137.4 (a row of
#: 8192 columns pays its warp reduction and epilogue half as often per byte, which the
#: 8 lanes a row amortise): rows longer than GEMV_LANES8_MAX_D_MODEL take GEMV_LONG_ROWS.
GEMV_DEFAULTS_1_TOKEN = ((1, "pred-bytes-split4-occ"), (4, "lanes8-words"), (8, "pred-words-occ"),
                         (MAX_MASKS, "pred-words"))
#: the longest row (d_model) that takes an 8-lane default (run 57: 4096 wins; run 58: 8192 loses)
GEMV_LANES8_MAX_D_MODEL = 4096
#: the 1-token variant of longer rows where the table names an 8-lane one (run 58's winner)
GEMV_LONG_ROWS = "pred-words-occ"
#: the fp16/bf16 forward at 2-4 tokens (NT = 4): (largest n_masks, variant), H200 run 62
#: (commit 649a0d6, cuda_tune.py --tokens 4, bench timer; MEASUREMENTS_H200.md), fp16 / bf16:
#: n_masks 1 pred-bytes 79.9 / 85.0 us at 4096x14336 and 69.6 / 73.4 at 4096x11008 against
#: pred-words' 94.0 / 100.2 and 78.2 / 82.0; n_masks 4 pred-words 152.9 / 157.1 and 123.2 /
#: 126.4, pred-bytes 1.33x and lanes8-words 1.08-1.29x slower. Timed at 4 tokens only (2 and
#: 3 run the same NT = 4 kernel), not at n_masks 2, 3 or above 4.
GEMV_DEFAULTS_4_TOKENS = ((1, "pred-bytes"), (MAX_MASKS, "pred-words"))
#: the fp16/bf16 forward at 5..MMA_SPLIT_TOKENS tokens (mma layout 1), (largest n_masks,
#: variant), timed at 16 tokens only (5-15 follow it untimed): prmt-words beat prmt at every shape, dtype and n_masks 1, 4, 8 at 16 tokens in
#: run 1 (commit d311605), by 1.25x to 2.21x; in run 2 prmt-words-occ was the fastest by the
#: sum over shapes and dtypes (n_masks 1: 563.7 us, n_masks 4: 761.7; prmt-words 655.7 and
#: 826.2 in that build, whose layout-2 code since reverted raised its registers; run 1's
#: prmt-words, today's code: 4096x14336 fp16 n_masks 4 89.6 us against run 2's occ 76.5).
#: Above 8 masks the words path was not timed and spills at 16 (ptxas: 12 bytes).
MMA_DEFAULTS_FEW_TOKENS = ((8, "prmt-words-occ"), (MAX_MASKS, "prmt"))
#: the cp.async ring kernel (mglu_ring.cu; the fp16/bf16 forward at 1..MMA_SPLIT_TOKENS
#: tokens): name -> (ring stages, a run-time argument: one instantiation per dtype and
#: n_masks; mask lines: mglu_rowdot_ring_lines, the mask bytes RING_LINE stages at a time,
#: a lead of the twelfth session not yet timed, d_model % (RING_K * RING_LINE) == 0). Rows of
#: RING_K columns (d_model % RING_K == 0) and 16-byte aligned x, W and masks only
#: (:func:`ring_ok`); instantiated up to RING_MAX_MASKS masks
RING_VARIANTS = {"ring2": (2, False), "ring3": (3, False), "ring4": (4, False), "ring2l": (2, True), "ring3l": (3, True)}
#: block tile of mglu_rowdot_ring: RING_ROWS rows of W, 16 tokens, RING_K columns a stage,
#: RING_THREADS threads (4 warps: 2 row tiles x 2 K halves); kept equal to the .cu enum.
#: Not swept: 32 rows give 448 blocks at d_ff 14336 (3.4 an SM, 4-5 fit); 128 columns are
#: 256 contiguous bytes of a row a stage (each warp copy instruction 4 whole 128-byte lines)
RING_ROWS, RING_K, RING_THREADS = 32, 128, 128
#: bytes of a W or x row in a ring slot: RING_K 16-bit elements, 16-byte chunks XOR-swizzled
#: (padded 272-byte rows ran 1.04-1.38x slower: H200 run 71)
RING_ROW = 2 * RING_K
RING_MAX_MASKS = 8
#: stages of mask bytes a line slot of mglu_rowdot_ring_lines holds: 8 x RING_K / 8 = 128
#: bytes of a plane's row, a whole L2 line (kept equal to the .cu enum)
RING_LINE = 8
#: the ring kernel's defaults where it serves the call (ring_ok), (largest n_masks, variant):
#: 2-4 tokens, and 5..MMA_SPLIT_TOKENS tokens. H200 runs 66-72
#: (cuda MEASUREMENTS_H200.md): ring3 at 2-4 tokens, ring2 at 5-16 (runs 66-67, padded slot
#: rows); with swizzled rows the ring also wins at one mask (run 72, 4096x14336 fp16, 16
#: tokens: ring3 37.4 us, ring2 39.9, prmt-words-occ 47.6), where ring3 beats ring2 by 6-19%
#: at 8 and 16 tokens; at 4 masks they tie (59.7 / 59.9), at 8 ring2 leads by 1-2%
RING_DEFAULTS_4_TOKENS = ((RING_MAX_MASKS, "ring3"),)
RING_DEFAULTS_FEW_TOKENS = ((1, "ring3"), (RING_MAX_MASKS, "ring2"))
#: the non-default variants are instantiated (and selectable) only in the regime they were
#: written and timed for: the fp16/bf16 forward
TUNED_DTYPES = (torch.float16, torch.bfloat16)
#: warps per decode block, one W row per warp (8 x 32 = 256 threads, the launch bound)
GEMV_WARPS = 8
#: warps per block of the 8-lane decode kernel (VAR_LANES8: 16 rows a block), as the numba
#: backend's v4s4wl8 (128-thread blocks; its H200 run 48: 64 or 32 threads within 1.6%)
GEMV_LANES8_WARPS = 4
THREADS = 256
#: tile sizes: mglu_rowdot_tiled's enum and mglu_rowdot_mma's 2 x 2 warps (32 x 32), mglu_bwd_dx (32 tokens x 64
#: columns), mglu_bwd_dw (32 rows x 64 columns); kept equal to the .cu constants
ROWDOT_TILE = (32, 32)
DX_TILE = (32, 64)
DW_TILE = (32, 64)
#: mglu_bwd_dx_mma (fp16/bf16): 2 x 2 warps of 16 tokens x 16 columns
DX_MMA_TILE = (32, 32)
#: mglu_bwd_dw_mma (fp16/bf16): 2 x 2 warps of 16 rows x 16 columns
DW_MMA_TILE = (32, 32)
#: CUDA's limit on gridDim.y, which counts token tiles (row-dot, dx) and row tiles (dW)
GRID_Y_MAX = 65535
#: a 16-byte vector load needs 16-byte aligned rows: d_model % 8 == 0 and aligned bases
VECTOR_BYTES = 16


#: fp16/bf16 calls of at least this many tokens take the staged-weight GEMM path
#: (mglu_gemm.cu) when d_model and d_ff are multiples of 8 and the bases 16-byte aligned.
#: 256 is the switch the Triton backend measured for its own staged path (triton MEASUREMENTS.md,
#: run 7: n_masks 4, 256 tokens staged 663 us vs 855); not measured for these kernels.
GEMM_MIN_TOKENS = 256
#: mglu_gemm's MODE: forward, backward kernel A (D, S), dx, dW/dM (mglu_gemm.cu enum)
GEMM_FWD, GEMM_DS, GEMM_DX, GEMM_DW = 0, 1, 2, 3
#: mglu_gemm's block tile (M, N), threads, K step and cp.async stages; kept equal to the .cu
#: enum (where the values come from: mglu_gemm.cu)
GEMM_TILE = (128, 128)
GEMM_THREADS = 256
GEMM_BK, GEMM_STAGES = 64, 3
#: mglu_expand: one thread per 8-column chunk, 256 threads a block
EXPAND_THREADS = 256


@dataclass(frozen=True)
class Launch:
    """One kernel launch: the template instantiation, grid and block."""

    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    #: the kernel takes a ``vec`` argument after ``act`` (16-byte aligned rows: vector loads)
    takes_vec: bool = False
    #: further int arguments, after ``vec`` (decode: warps per row; mma: the warp layout)
    tail: tuple[int, ...] = ()
    #: read the mask bits as 32-bit words where the rows allow it (``vec = 2``)
    word_masks: bool = False
    #: dynamic shared memory, bytes (mglu_gemm)
    smem: int = 0


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def rowdot_name(dtype, n_masks: int, mode: int, nt: int | None, var: int) -> str:
    """``mglu_rowdot_gemv<T, NM, MODE, NT, VAR>`` (``nt`` given), else the many-token kernel:
    ``mglu_rowdot_mma<T, NM, MODE, VAR>`` for fp16/bf16, ``mglu_rowdot_tiled<T, NM, MODE>``."""
    if nt is not None:
        return f"mglu_rowdot_gemv<{CTYPE[dtype]}, {n_masks}, {mode}, {nt}, {var}>"
    if dtype in MMA_DTYPES:
        return f"mglu_rowdot_mma<{CTYPE[dtype]}, {n_masks}, {mode}, {var}>"
    return f"mglu_rowdot_tiled<{CTYPE[dtype]}, {n_masks}, {mode}>"


def ring_name(dtype, n_masks: int, lines: bool = False) -> str:
    """``mglu_rowdot_ring<T, NM>`` or, with mask ``lines``, ``mglu_rowdot_ring_lines<T, NM>``
    (mglu_ring.cu; the fp16/bf16 forward only)."""
    return f"mglu_rowdot_ring{'_lines' if lines else ''}<{CTYPE[dtype]}, {n_masks}>"


def _variant(table: dict, default: str, variant: str | None, dtype, mode):
    """``table[variant]`` (``default`` for None); outside the fp16/bf16 forward only the
    base default (DEFAULT_GEMV_VARIANT, DEFAULT_MMA_VARIANT) is instantiated."""
    name = default if variant is None else variant
    if name not in table:
        raise ValueError(f"variant must be one of {sorted(table)} (got {variant!r})")
    if name not in (DEFAULT_GEMV_VARIANT, DEFAULT_MMA_VARIANT) and not (dtype in TUNED_DTYPES and mode == MODE_FWD):
        raise ValueError(f"variant {name!r} exists for the fp16/bf16 forward only (got {dtype}, mode {mode})")
    return table[name]


def ring_smem(n_masks: int, stages: int, lines: bool = False) -> int:
    """Bytes of dynamic shared memory of mglu_rowdot_ring: ``stages`` slots of W (RING_ROWS rows
    of RING_ROW bytes), x (16 rows) and the mask bytes (n_masks x RING_ROWS x RING_K / 8); the
    K halves' reduction after the loop reuses them (static_assert in the .cu). With mask
    ``lines`` the slots hold no mask bytes and two line slots of RING_LINE stages' follow."""
    masks = n_masks * RING_ROWS * RING_K // 8
    if lines:
        return stages * (RING_ROWS + 16) * RING_ROW + 2 * RING_LINE * masks
    return stages * ((RING_ROWS + 16) * RING_ROW + masks)


def ring_ok(dtype, n_masks: int, mode: int, tokens: int, d_model: int, aligned16: bool, lines: bool = False) -> bool:
    """mglu_rowdot_ring serves the call: the fp16/bf16 forward at 1..MMA_SPLIT_TOKENS tokens (one
    16-token tile), at most RING_MAX_MASKS masks, whole RING_K-column stages (with mask
    ``lines``, whole lines of RING_LINE stages), 16-byte aligned x, W and masks."""
    return (dtype in MMA_DTYPES and mode == MODE_FWD and 1 <= tokens <= MMA_SPLIT_TOKENS
            and n_masks <= RING_MAX_MASKS and d_model % (RING_K * (RING_LINE if lines else 1)) == 0 and aligned16)


def default_variant(dtype, n_masks: int, mode: int, tokens: int, d_model: int, aligned16: bool = True) -> str:
    """The variant a call gets without ``variant=``: the measured winners of the fp16/bf16
    forward at 1 token (by n_masks; an 8-lane variant only on rows of at most
    GEMV_LANES8_MAX_D_MODEL columns), at 2-4 tokens and at 5..MMA_SPLIT_TOKENS tokens (the
    ring kernel where it serves the call, :func:`ring_ok`; else by n_masks), the base
    defaults elsewhere."""
    tuned = dtype in TUNED_DTYPES and mode == MODE_FWD
    if tuned and tokens > 1 and ring_ok(dtype, n_masks, mode, tokens, d_model, aligned16):
        table = RING_DEFAULTS_4_TOKENS if tokens <= max(GEMV_TOKENS) else RING_DEFAULTS_FEW_TOKENS
        return next(v for top, v in table if n_masks <= top)
    nt = next((n for n in GEMV_TOKENS if tokens <= n), None)
    if nt is not None:
        if tuned and nt == 1:
            variant = next(v for top, v in GEMV_DEFAULTS_1_TOKEN if n_masks <= top)
            lanes = GEMV_VARIANTS[variant][3]
            return GEMV_LONG_ROWS if lanes < 32 and d_model > GEMV_LANES8_MAX_D_MODEL else variant
        if tuned:
            return next(v for top, v in GEMV_DEFAULTS_4_TOKENS if n_masks <= top)
        return DEFAULT_GEMV_VARIANT
    if tuned and tokens <= MMA_SPLIT_TOKENS:
        return next(v for top, v in MMA_DEFAULTS_FEW_TOKENS if n_masks <= top)
    return DEFAULT_MMA_VARIANT


def activation_id(activation: str) -> int:
    """The kernels' activation id: the index in ACTIVATIONS (the enum of mglu_common.cuh)."""
    return ACTIVATIONS.index(activation)


def dx_name(dtype) -> str:
    """Kernel B: ``mglu_bwd_dx_mma`` for fp16/bf16, else ``mglu_bwd_dx``."""
    return f"{'mglu_bwd_dx_mma' if dtype in MMA_DTYPES else 'mglu_bwd_dx'}<{CTYPE[dtype]}>"


def dw_name(dtype, dmask_dtype) -> str:
    """Kernel C (``mglu_bwd_dw_mma`` for fp16/bf16, ``mglu_bwd_dw``); without dM the
    instantiation with ``TM = T`` runs with a null dM pointer."""
    kernel = "mglu_bwd_dw_mma" if dtype in MMA_DTYPES else "mglu_bwd_dw"
    return f"{kernel}<{CTYPE[dtype]}, {CTYPE[dmask_dtype or dtype]}>"


@functools.lru_cache(maxsize=1024)
def rowdot_plan(dtype, n_masks, mode, tokens, d_ff, d_model, variant: str | None = None,
                aligned16: bool = True) -> Launch:
    """Decode kernel (a warp or 8 lanes per W row) for ``tokens <= max(GEMV_TOKENS)``, else the tile;
    ``variant``: a key of GEMV_VARIANTS, MMA_VARIANTS or RING_VARIANTS (None: the default);
    ``aligned16``: x, W and the masks are 16-byte aligned (a ring variant needs it, :func:`ring_ok`).
    Cached: a decode loop asks for the same plan on every call."""
    default = default_variant(dtype, n_masks, mode, tokens, d_model, aligned16)
    if (variant or default) in RING_VARIANTS:
        variant = variant or default
        stages, lines = RING_VARIANTS[variant]
        if not ring_ok(dtype, n_masks, mode, tokens, d_model, aligned16, lines):
            raise ValueError(f"variant {variant!r} needs the fp16/bf16 forward at 1.."
                             f"{MMA_SPLIT_TOKENS} tokens, n_masks <= {RING_MAX_MASKS}, "
                             f"d_model % {RING_K * (RING_LINE if lines else 1)} == 0 "
                             f"and 16-byte aligned inputs (got {dtype}, mode {mode}, {tokens} tokens, "
                             f"n_masks {n_masks}, d_model {d_model}, aligned {aligned16})")
        return Launch(ring_name(dtype, n_masks, lines), (_cdiv(d_ff, RING_ROWS), 1, 1),
                      (RING_THREADS, 1, 1), tail=(stages,), smem=ring_smem(n_masks, stages, lines))
    nt = next((n for n in GEMV_TOKENS if tokens <= n), None)
    if nt is not None:
        var, words, split, lanes = _variant(GEMV_VARIANTS, default, variant, dtype, mode)
        warps = GEMV_WARPS if lanes == 32 else GEMV_LANES8_WARPS
        grid = (_cdiv(d_ff, warps // split * (32 // lanes)), 1, 1)
        name = rowdot_name(dtype, n_masks, mode, nt, var)
        return Launch(name, grid, (warps * 32, 1, 1), takes_vec=True, tail=(split,), word_masks=words)
    bt, bn = ROWDOT_TILE
    if dtype not in MMA_DTYPES:
        if variant is not None:
            raise ValueError(f"the tiled kernel ({dtype}, {tokens} tokens) has no variants (got {variant!r})")
        return Launch(rowdot_name(dtype, n_masks, mode, None, 0), (_cdiv(d_ff, bn), _cdiv(tokens, bt), 1), (THREADS, 1, 1))
    var, words = _variant(MMA_VARIANTS, default, variant, dtype, mode)
    layout = 1 if tokens <= MMA_SPLIT_TOKENS else 0
    grid = (_cdiv(d_ff, bn), _cdiv(tokens, 16 if layout else bt), 1)
    name = rowdot_name(dtype, n_masks, mode, None, var)
    return Launch(name, grid, (MMA_THREADS, 1, 1), takes_vec=True, tail=(layout,), word_masks=words)


def dx_plan(dtype, tokens, d_model) -> Launch:
    mma = dtype in MMA_DTYPES
    bt, bk = DX_MMA_TILE if mma else DX_TILE
    block = (MMA_THREADS if mma else THREADS, 1, 1)
    return Launch(dx_name(dtype), (_cdiv(d_model, bk), _cdiv(tokens, bt), 1), block, takes_vec=mma)


def dw_plan(dtype, dmask_dtype, d_ff, d_model) -> Launch:
    mma = dtype in MMA_DTYPES
    bn, bk = DW_MMA_TILE if mma else DW_TILE
    block = (MMA_THREADS if mma else THREADS, 1, 1)
    return Launch(dw_name(dtype, dmask_dtype), (_cdiv(d_model, bk), _cdiv(d_ff, bn), 1), block)


def gemm_name(dtype, mode: int, dmask_dtype=None) -> str:
    """``mglu_gemm<T, MODE, TM>``; TM (dM's dtype) is T but in GEMM_DW with dM."""
    tm = dmask_dtype if mode == GEMM_DW and dmask_dtype is not None else dtype
    return f"mglu_gemm<{CTYPE[dtype]}, {mode}, {CTYPE[tm]}>"


def gemm_smem(mode: int, n_masks: int) -> int:
    """Bytes of dynamic shared memory: the cp.async ring (A and B tiles of 128 x GEMM_BK
    16-bit elements per stage), 64 fp32 ``total`` values per thread (GEMM_FWD, GEMM_DS), the
    epilogue's tile of dout / W (128 rows of 128 + 8 elements; GEMM_DS, GEMM_DW) and the mask
    bytes of every plane (n_masks x 128 rows x 16 bytes; GEMM_DW): 194 KB at most (GEMM_DS),
    162 KB at 16 masks (GEMM_DW), under the H100's 227 KB."""
    rows, cols = GEMM_TILE
    ring = GEMM_STAGES * 2 * rows * GEMM_BK * 2
    total = 64 * GEMM_THREADS * 4 if mode in (GEMM_FWD, GEMM_DS) else 0
    tile = rows * (cols + 8) * 2 if mode in (GEMM_DS, GEMM_DW) else 0
    return ring + total + tile + (n_masks * rows * cols // 8 if mode == GEMM_DW else 0)


def gemm_plan(dtype, mode: int, m: int, n: int, n_masks: int, dmask_dtype=None) -> Launch:
    """One mglu_gemm launch over an (m, n) output: a 1-D grid of 128 x 128 tiles (the kernel
    orders them in groups of 8 M tiles)."""
    tiles = _cdiv(m, GEMM_TILE[0]) * _cdiv(n, GEMM_TILE[1])
    return Launch(gemm_name(dtype, mode, dmask_dtype), (tiles, 1, 1), (GEMM_THREADS, 1, 1),
                  smem=gemm_smem(mode, n_masks))


def expand_plan(dtype, d_ff: int, d_model: int) -> Launch:
    """mglu_expand<T>: one thread per 8-column chunk of W (d_model % 8 == 0)."""
    return Launch(f"mglu_expand<{CTYPE[dtype]}>", (_cdiv(d_ff * (d_model // 8), EXPAND_THREADS), 1, 1),
                  (EXPAND_THREADS, 1, 1))


def gemm_shapes_ok(dtype, tokens: int, d_model: int, d_ff: int) -> bool:
    """The sizes allow the staged GEMM path (the caller checks the 16-byte alignment)."""
    return dtype in MMA_DTYPES and tokens >= GEMM_MIN_TOKENS and d_model % 8 == 0 and d_ff % 8 == 0


def grid_limits(tokens: int, d_ff: int) -> list[str]:
    """Reasons the launch grids cannot cover this problem (empty when they can)."""
    out = []
    if _cdiv(tokens, ROWDOT_TILE[0]) > GRID_Y_MAX or _cdiv(tokens, DX_TILE[0]) > GRID_Y_MAX:
        out.append(f"{tokens} tokens exceed the grid limit ({GRID_Y_MAX} tiles of {ROWDOT_TILE[0]} tokens)")
    if _cdiv(d_ff, DW_TILE[0]) > GRID_Y_MAX:
        out.append(f"d_ff={d_ff} exceeds the grid limit ({GRID_Y_MAX} tiles of {DW_TILE[0]} rows)")
    return out


def instantiations(dtype=None) -> list[str]:
    """Every template instantiation a plan can name (for ``dtype``, or all dtypes)."""
    names = []
    for dt in [dtype] if dtype is not None else list(CTYPE):
        for nm in range(MIN_MASKS, MAX_MASKS + 1):
            for mode in (MODE_FWD, MODE_BWD):
                tuned = dt in TUNED_DTYPES and mode == MODE_FWD
                gemv = {v[0] for v in GEMV_VARIANTS.values()} if tuned else {GEMV_VARIANTS[DEFAULT_GEMV_VARIANT][0]}
                mma = {v[0] for v in MMA_VARIANTS.values()} if tuned else {MMA_VARIANTS[DEFAULT_MMA_VARIANT][0]}
                names += [rowdot_name(dt, nm, mode, nt, v) for nt in GEMV_TOKENS for v in sorted(gemv)]
                names += [rowdot_name(dt, nm, mode, None, v) for v in sorted(mma if dt in MMA_DTYPES else {0})]
        if dt in MMA_DTYPES:
            names += [ring_name(dt, nm, lines) for lines in (False, True) for nm in range(MIN_MASKS, RING_MAX_MASKS + 1)]
        names.append(dx_name(dt))
        names += [dw_name(dt, dm) for dm in CTYPE]
        if dt in MMA_DTYPES:
            names += [gemm_name(dt, mode) for mode in (GEMM_FWD, GEMM_DS, GEMM_DX)]
            names += [gemm_name(dt, GEMM_DW, dm) for dm in CTYPE]
            names.append(expand_plan(dt, 8, 8).name)
    return names


@functools.cache
def source() -> str:
    """The kernels as one translation unit: activation constants, then the three files with
    their ``#include "mglu_common.cuh"`` and ``#pragma once`` lines dropped (so that CuPy's cache key, the
    source text, covers the header too)."""
    head = f"#define MGLU_GELU_TANH_C {GELU_TANH_C!r}\n#define MGLU_GELU_TANH_A {GELU_TANH_A!r}\n"
    parts = [(HERE / name).read_text() for name in SOURCES]
    body = "\n".join(re.sub(r'^#(include "mglu_common\.cuh"|pragma once)\n', "", p, flags=re.M) for p in parts)
    return head + body


def arch_option(capability: tuple[int, int]) -> str:
    return f"--gpu-architecture=sm_{capability[0]}{capability[1]}"


#: NVRTC options; CuPy appends the current device's ``-arch`` (the same architecture),
#: ``--device-as-default-execution-space`` and ``--pch``
def nvrtc_options(capability: tuple[int, int]) -> tuple[str, ...]:
    return ("-std=c++17", arch_option(capability))


@functools.cache
def _function(name: str, capability: tuple[int, int]):
    """The compiled kernel ``name`` for one architecture: compiled once per process (CuPy
    also keeps the binary in ~/.cupy/kernel_cache). Call it inside ``cupy.cuda.Device``."""
    import cupy

    module = cupy.RawModule(code=source(), options=nvrtc_options(capability), name_expressions=[name])
    return module.get_function(name)


def pointer(t: torch.Tensor | None) -> np.uint64:
    return np.uint64(0 if t is None else t.data_ptr())


def aligned(*tensors: torch.Tensor) -> bool:
    return all(t.data_ptr() % VECTOR_BYTES == 0 for t in tensors)


@functools.cache
def _kernel(name: str, index: int) -> int:
    """The ``CUfunction`` handle of kernel ``name`` on device ``index`` (compiled and loaded
    on the first call)."""
    import cupy

    with cupy.cuda.Device(index):
        return _function(name, _capability(index)).kernel.ptr


_smem_allowed: dict[tuple[str, int], int] = {}


def _allow_smem(name: str, index: int, nbytes: int) -> None:
    """Raise the kernel's dynamic shared-memory limit (48 KB by default) to ``nbytes`` where it
    is lower, once per device and size (a ring kernel's stages, a run-time argument, change
    its size: the limit only grows)."""
    import cupy

    if _smem_allowed.get((name, index), 0) >= nbytes:
        return
    with cupy.cuda.Device(index):
        _function(name, _capability(index)).max_dynamic_shared_size_bytes = nbytes
    _smem_allowed[(name, index)] = nbytes


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


#: struct codes of the launch arguments: a pointer (np.uint64) and an int (np.int32)
_ARG_CODES = {np.uint64: "Q", np.int32: "i"}
_blocks = threading.local()


def _param_block(fmt: str) -> tuple:
    """This thread's reusable argument block for one kernel signature (``fmt``, struct codes
    in native alignment): the buffer the values are packed into and the address of the
    array of pointers to each value that ``cuLaunchKernel`` reads (and copies at launch)."""
    blocks = _blocks.__dict__.setdefault("by_format", {})
    block = blocks.get(fmt)
    if block is None:
        buf = ctypes.create_string_buffer(struct.calcsize(fmt))
        base = ctypes.addressof(buf)
        offsets = [struct.calcsize(fmt[: k + 1]) - struct.calcsize(c) for k, c in enumerate(fmt)]
        pointers = (ctypes.c_void_p * len(fmt))(*(base + o for o in offsets))
        block = blocks[fmt] = (buf, ctypes.addressof(pointers), pointers)
    return block


def launch(plan: Launch, args: tuple, device: torch.device, what) -> None:
    """Run ``plan`` on torch's current stream of ``device``; a CUDA error (compile or launch)
    becomes a RuntimeError naming the kernel and ``what()`` (the problem, built only then).
    Nothing here waits for the device, so the call can be captured in a CUDA graph once
    compiled (the first call compiles).

    The launch is ``cuLaunchKernel`` through CuPy's driver binding with the arguments packed
    by ``struct``: CuPy's own ``RawKernel`` call under ``with Device, Stream.from_external``
    cost ~9 us more host time per launch on the H200 (15.98 against 6.69 us,
    ``scripts/cuda_host_probe.py``, run 31) and left the GPU waiting ~45 us per eager call
    (DESIGN.md, third H200 session)."""
    import cupy

    index = device.index
    try:
        if plan.smem:
            _allow_smem(plan.name, index, plan.smem)
        kernel = _kernel(plan.name, index)
        fmt = "".join([_ARG_CODES[type(a)] for a in args])
        buf, params, _ = _param_block(fmt)
        struct.pack_into(fmt, buf, 0, *args)
        stream = torch._C._cuda_getCurrentRawStream(index)
        if cupy.cuda.runtime.getDevice() == index:
            cupy.cuda.driver.launchKernel(kernel, *plan.grid, *plan.block, plan.smem, stream, params, 0)
        else:  # the handle belongs to that device's context
            with cupy.cuda.Device(index):
                cupy.cuda.driver.launchKernel(kernel, *plan.grid, *plan.block, plan.smem, stream, params, 0)
    except Exception as exc:
        raise RuntimeError(f"cuda backend: kernel {plan.name} grid={plan.grid} failed for {what()}: "
                           f"{type(exc).__name__}: {exc}") from exc
