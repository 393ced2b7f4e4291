"""The conformance case catalogue: the one list tests, CLI and benchmarks check against.

A :class:`Case` fixes shapes ``x (*batch, d_model)``, ``W (d_ff, d_model)``, ``n_masks``
masks, an activation, a dtype, the mask content and form, and the memory layout of ``x``
and ``W``. :func:`make_inputs` draws fresh random tensors for it from a seed.
"""

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..activations import ACTIVATIONS
from ..dtypes import SUPPORTED_DTYPES
from ..masks import packed_width, pack_masks

DTYPES: tuple[torch.dtype, ...] = SUPPORTED_DTYPES
MASK_CONTENTS = ("random", "zeros", "ones", "garbage_tail")
FORMS = ("packed", "logits")
N_MASKS_SWEEP = (1, 2, 3, 4, 8, 16)


@dataclass(frozen=True)
class Case:
    """One problem. ``masks``: random | zeros | ones | garbage_tail (packed, tail bits set);
    ``form``: packed (frozen) | logits (trainable); ``noncontig``: strided ``x`` and ``W``."""

    name: str
    batch: tuple[int, ...]
    d_model: int
    d_ff: int
    n_masks: int
    dtype: torch.dtype = torch.float32
    activation: str = "silu"
    masks: str = "random"
    form: str = "packed"
    noncontig: bool = False
    quick: bool = True
    #: the dtypes the quick subset keeps this case in (None: all), for a case whose point
    #: is one dtype's code path and whose other dtypes are slow under Triton's interpreter
    quick_dtypes: tuple[torch.dtype, ...] | None = None
    #: the dtypes the catalogue has this case in at all (None: all), for a boundary of a
    #: code path some dtypes never take (fp64 runs no tensor-core tile), whose slow runs
    #: there would test nothing of it
    dtypes: tuple[torch.dtype, ...] | None = None

    @property
    def id(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return f"{self.name}-{dtype}-{self.form}"

    @property
    def tokens(self) -> int:
        return int(np.prod(self.batch))


#: the quick subset's dtypes for cases whose point (strides, odd sizes, many masks, a tile
#: tail) no kernel treats differently in fp64: fp64 keeps its own code paths in the quick
#: subset through one_token, zero_tokens, batch_3d, garbage_tail, masks_*, n_masks_1,
#: cuda_t1_split_tail and triton_gemv_k_tail (the GEMV; those up to the checker's
#: GRADCHECK_MAX_ELEMENTS are gradchecked), and has every case in the full
#: catalogue. Measured on the 2-core CPU machine (pytest --durations, the tests of commit
#: 9e243b5): these fp64 runs took 9-39 s each under Triton's interpreter and Numba's
#: simulator, 321 s in all, in a suite of 1094 s on two workers
_QUICK_NOT_FP64 = (torch.float32, torch.float16, torch.bfloat16)


def _base_cases() -> list[Case]:
    cases = [
        Case("one_token", (1,), 64, 96, 4),
        Case("zero_tokens", (0,), 32, 48, 2),
        Case("batch_3d", (2, 3), 40, 56, 4),
        Case("noncontig", (7,), 48, 40, 2, noncontig=True, quick_dtypes=_QUICK_NOT_FP64),
        Case("odd_dims", (5,), 37, 53, 3, quick_dtypes=_QUICK_NOT_FP64),
        Case("dims_not_16_64", (3,), 72, 80, 2, quick_dtypes=_QUICK_NOT_FP64),
        Case("garbage_tail", (4,), 29, 23, 2, masks="garbage_tail"),
        Case("masks_zeros", (5,), 24, 32, 2, masks="zeros"),
        Case("masks_ones", (5,), 24, 32, 2, masks="ones"),
        Case("mid", (33,), 256, 384, 4, quick=False),
    ]
    cases += [Case(f"n_masks_{n}", (6,), 24, 40, n, quick=n in (1, 16), quick_dtypes=_QUICK_NOT_FP64 if n == 16 else None)
              for n in N_MASKS_SWEEP]
    # every activation in the quick catalogue (CI runs the kernel backends on it), in fp32
    cases += [Case(f"act_{a}", (6,), 24, 40, 2, activation=a, quick_dtypes=(torch.float32,)) for a in ACTIVATIONS]
    logits = ("one_token", "batch_3d", "noncontig", "odd_dims", "masks_zeros", "masks_ones", "n_masks_16", "mid")
    by_name = {c.name: c for c in cases}
    cases += [replace(by_name[n], form="logits") for n in logits]
    cases += [replace(c, form="logits", quick=False) for c in cases if c.name.startswith("act_")]
    return cases + _triton_cases() + _cuda_cases() + _numba_cases()


# Each kernel backend adds the cases its own tiles and regime switches make interesting
# (tokens just below, at and above a switch; d_model around the load and block widths;
# d_ff not a multiple of any block). Every backend runs every case.


#: the dtypes of the GEMV's inline-PTX path and of the tensor-core tiles (fp64 takes
#: tl.where and CUDA-core tiles; triton_gemv_k_tail keeps the fp64 GEMV in the catalogue)
_NOT_FP64 = (torch.float32, torch.float16, torch.bfloat16)
#: the dtypes of the Hopper wgmma kernel
_HALF = (torch.float16, torch.bfloat16)


def _triton_cases() -> list[Case]:
    """Boundaries of mglu/backends/triton_backend (tiles.py): the GEMV serves 1 token and
    reads 256 columns (BG=32 byte groups) of 4 rows per step, 4 steps per loop iteration
    up to 4 gates a pass (2 above), then single steps, all unmasked (rows clamped), then
    a masked partial step, and takes 8 masks per pass over K (n=9: 5 + 4); the tensor-
    core kernel takes 16-token, 64-row tiles 128 columns deep (64 in fp32, 16 in fp64) and
    groups masks (n=5: 3 + 2 in a pass); up to 64 tokens in fp16/bf16 it builds the masked
    tiles in inline PTX, whose register pairs follow the layout Triton picks (8 columns a
    thread when the sizes divide by 16, one otherwise: the ``triton_pairs_*`` cases and
    the odd-sized ones cover both); from 256 tokens (1024 at one mask; fp16/bf16) it
    reads the masked weights staged in HBM instead of building them from the bits. On
    Hopper, 2-16 tokens in fp16/bf16 with d_model % 128 == 0 take the Gluon wgmma kernel
    (``triton_wgmma_*``: 2 and 16 tokens, a d_ff tail, 3 stages of 128 (as many as it keeps)
    and 9 (slots reused), mask groups 3 + 2, 4 + 4 and 4 x 4, and d_model 136, which falls
    back to fwd_mma; n 3 (and triton_token_tile_edge's 2) for asynchronous passes of 3 and
    2 accumulators, n 7 for a synchronous 4 + 3 split; with d_model % 128 == 0 there are no
    tail bits, so no garbage_tail case is in its regime), and 17-64 tokens at up to 4 masks
    its 64-token tile, 64 deep (``triton_wgmma_wide_*``: 17 tokens with a d_ff tail, 64
    tokens over 18 stages at one mask (4 slots, asynchronous), 40 tokens of 3 masks over 2
    stages (3 slots); 65 tokens and 17 tokens of 5 masks fall back to fwd_mma). Only the forward without
    autograd takes it (the autograd forward keeps the gradient factors, fwd_mma's MODE 2):
    the checker's no-grad ``out``. Elsewhere these run fwd_mma."""
    return [
        Case("triton_one_token_one_mask", (1,), 40, 37, 1, quick=False),
        Case("triton_gemv_k_tail", (1,), 257, 30, 5, masks="garbage_tail"),
        Case("triton_gemv_steps", (1,), 1283, 6, 4, masks="garbage_tail", dtypes=_NOT_FP64),
        Case("triton_gemv_two_passes", (1,), 515, 6, 9, masks="garbage_tail", dtypes=_NOT_FP64),
        Case("triton_mma_k_tail", (17,), 129, 67, 5, masks="garbage_tail", dtypes=_NOT_FP64),
        Case("triton_token_tile_edge", (16,), 128, 64, 2, quick=False),
        Case("triton_pairs_aligned", (16,), 256, 128, 4, dtypes=(torch.float16, torch.bfloat16)),
        Case("triton_pairs_aligned_64", (64,), 128, 64, 5, dtypes=(torch.float16, torch.bfloat16)),
        Case("triton_wgmma_two_tokens", (2,), 128, 64, 1, dtypes=_HALF, quick=False),
        Case("triton_wgmma_rows_tail", (16,), 256, 72, 4, dtypes=_HALF),
        Case("triton_wgmma_groups", (5,), 384, 72, 5, dtypes=_HALF, quick=False),
        Case("triton_wgmma_deep", (9,), 1152, 64, 8, dtypes=_HALF, quick=False),
        Case("triton_wgmma_sixteen", (16,), 128, 64, 16, dtypes=_HALF, quick=False),
        Case("triton_wgmma_three_masks", (7,), 256, 64, 3, dtypes=_HALF, quick=False),
        Case("triton_wgmma_four_three", (8,), 256, 64, 7, dtypes=_HALF, quick=False),
        Case("triton_wgmma_k_not_128", (16,), 136, 64, 2, dtypes=_HALF, quick=False),
        Case("triton_wgmma_wide_low", (17,), 256, 72, 4, dtypes=_HALF),
        Case("triton_wgmma_wide_top", (64,), 1152, 130, 1, dtypes=_HALF, quick=False),
        Case("triton_wgmma_wide_three", (40,), 128, 64, 3, dtypes=_HALF, quick=False),
        Case("triton_wgmma_wide_above", (65,), 256, 64, 2, dtypes=_HALF, quick=False),
        Case("triton_wgmma_wide_five", (17,), 256, 64, 5, dtypes=_HALF, quick=False),
        Case("triton_staged_below", (255,), 26, 20, 2, masks="garbage_tail", quick=False),
        Case("triton_staged", (256,), 20, 136, 3, masks="garbage_tail",
             quick_dtypes=(torch.float16, torch.bfloat16)),
        Case("triton_staged_one_mask", (1024,), 12, 24, 1, masks="garbage_tail",
             quick_dtypes=(torch.float16, torch.bfloat16)),
    ]


def _cuda_cases() -> list[Case]:
    """Boundaries of mglu/backends/cuda_backend (its tile constants).

    Decode kernel (tokens <= 4, NT = 1 or 4): one warp per W row, 8 warps per block, lanes
    over 8-column chunks (a warp round is 256 columns), 16-byte loads when d_model % 8 == 0,
    else a scalar path. From 5 tokens: tensor-core kernel (fp16/bf16; 16 tokens x 32 rows
    with two K halves up to 16 tokens, 32 x 32 above, 32-column steps) or the CUDA-core
    tiled kernel (fp32/fp64; 32 tokens x 32 rows, K steps of 32).
    Backward: dx tiles 32 tokens x 64 columns (16-row steps), dW tiles 32 rows x 64 columns
    (16-token steps); on tensor cores (fp16/bf16) 32 x 32 tiles of 16 x 16 warps, 32-row /
    32-token steps.
    The 1-token default at one mask splits a row over 4 warps (cuda_t1_split_tail: odd
    d_ff, the last block's last row idle, d_model on the 32-bit mask-word path); from 5
    to 16 tokens the tensor-core default steps 128 columns with one mask word a plane
    (cuda_t16_words_tail: one 128-column step, then a 32-column tail).
    fp16/bf16 from GEMM_MIN_TOKENS = 256 tokens with d_model, d_ff multiples of 8: staged
    masked weights and a GEMM of 128 x 128 tiles, K steps of 32, over the n_masks + 1 planes
    (cuda_gemm_tails: one token, 8 rows or columns and 8 of K past whole tiles in the products;
    cuda_gemm_logits: dM, a batch, 4 masks; cuda_gemm_many_masks: 17 planes;
    cuda_gemm_d_model_odd: d_model % 8 != 0 keeps the row-dot kernels at 256 tokens).
    The 1-token fp16/bf16 default at 2-4 masks (lanes8-words) runs 8 lanes a row, 4 rows a
    warp, 16 rows a block, 32-chunk rounds: cuda_lanes8_tail (one round and 4 chunks, the
    second block's last warp with one live row), cuda_lanes8_bytes (d_model % 32 != 0: the
    byte path), cuda_lanes8_scalar (d_model % 8 != 0: the scalar path, tail bits set).
    From 2 to 4 tokens at one mask the fp16/bf16 default reads the masks as bytes
    (pred-bytes) where the ring kernel does not serve the call: cuda_t3_bytes (3 tokens of
    NT = 4, 40 chunks: every lane's first chunk of the round, a second for lanes 0-7, the
    others' second chunk past the row's end; d_model 320 is not whole 128-column stages).
    The ring kernel (mglu_ring.cu: 2-16 tokens up to 8 masks, d_model % 128 == 0, 32-row
    blocks, 128-column stages through 2 or 3 slots, block b starting at stage b % (d_model
    / 128)): cuda_ring_t2 (2 stages, fewer than ring3's prologue; d_ff 33, a
    second block of one row), cuda_ring_t16_wrap (5 stages: the slots and the start wrap;
    a second block of 8 rows), cuda_ring_t9_masks8 (8 masks, 9 tokens), cuda_ring_t4_batch
    (a (2, 2) batch of tokens, one whole stage, one block).
    """
    half = (torch.float16, torch.bfloat16)  # the staged GEMM path exists for these only
    cases = [
        Case("cuda_t1_one_round", (1,), 256, 40, 1, quick=False),
        Case("cuda_t1_split_tail", (1,), 160, 7, 1),
        Case("cuda_t16_words_tail", (16,), 160, 40, 4, quick_dtypes=_QUICK_NOT_FP64),
        Case("cuda_t4_two_rounds", (4,), 264, 37, 16, activation="gelu", quick=False),
        Case("cuda_t2_scalar_tail", (2,), 255, 45, 3, masks="garbage_tail", quick=False),
        Case("cuda_t5_first_tile", (5,), 72, 33, 2, activation="relu", quick=False),
        Case("cuda_t16_split_k", (16,), 136, 40, 3, quick=False),
        Case("cuda_t17_two_token_tiles", (17,), 100, 40, 2, masks="garbage_tail", quick=False),
        Case("cuda_t32_full_tile", (32,), 64, 32, 16, activation="gelu_tanh", quick=False),
        Case("cuda_t33_tail", (33,), 67, 65, 4, masks="garbage_tail", quick=False),
        Case("cuda_t70_tiles", (70,), 130, 97, 1, activation="sigmoid", quick=False),
        Case("cuda_lanes8_tail", (1,), 288, 21, 3, dtypes=half, quick_dtypes=(torch.bfloat16,)),
        Case("cuda_t3_bytes", (3,), 320, 19, 1, activation="gelu_tanh", quick=False, dtypes=half),
        Case("cuda_lanes8_bytes", (1,), 200, 19, 2, activation="gelu", quick=False, dtypes=half),
        Case("cuda_lanes8_scalar", (1,), 77, 10, 4, masks="garbage_tail", quick=False, dtypes=half),
        Case("cuda_ring_t2", (2,), 256, 33, 1, dtypes=half),
        Case("cuda_ring_t16_wrap", (16,), 640, 40, 3, activation="gelu", dtypes=half, quick_dtypes=(torch.bfloat16,)),
        Case("cuda_ring_t9_masks8", (9,), 384, 40, 8, activation="sigmoid", quick=False, dtypes=half),
        Case("cuda_ring_t4_batch", (2, 2), 128, 32, 2, quick=False, dtypes=half),
        Case("cuda_gemm_tails", (257,), 40, 136, 2, dtypes=half),
        Case("cuda_gemm_logits", (2, 130), 48, 24, 4, activation="gelu", form="logits", dtypes=half),
        Case("cuda_gemm_many_masks", (300,), 72, 128, 16, activation="sigmoid", quick=False, dtypes=half),
        Case("cuda_gemm_d_model_odd", (256,), 100, 40, 2, quick=False, dtypes=half),
    ]
    logits = ("cuda_t4_two_rounds", "cuda_t33_tail")
    return cases + [replace(c, masks="random", form="logits") for c in cases if c.name in logits]


def _numba_cases() -> list[Case]:
    """Boundaries of mglu/backends/numba_backend (numba_backend/constants.py): the decode
    kernel up to DECODE_MAX_TOKENS = 4 tokens, 8 elements per lane, up to 32 lanes per row
    (256 elements a step); the tiled kernel above, tiles of 8 tokens x 32 rows x 32 of
    d_model, 2 tokens per thread. Small enough for the simulator (SIM_MAX_MACS), except
    numba_wide_full_warp (GPU only): the 16-byte decode kernel at 5 masks (v4s4w, 32 lanes a
    row, constants.DECODE_DEFAULTS) with 33 mask words a row, so all 32 lanes meet in the
    shuffle sum and lane 0 takes two words; numba_wide_eight_lanes the same row at 3 masks
    (v4s4wl8: 8 lanes a row, 4 rows a warp, lane 0 takes five words, the last warp of the
    d_ff 37 rows holds one real row). At 1 mask the wide kernel interleaves a row's chunks
    over its 8 lanes when they cover it in whole rounds of 32 chunks (d_model % 256 == 0 on
    the GPU): numba_wide_interleaved takes two rounds, numba_wide_interleaved_twin (d_model
    1056, not whole rounds) hands the row to the adjacent twin (GPU only, fp16/bf16: the
    wide kernel's dtypes). From 12 masks the wide kernel takes span-2 words (v4s2, int16
    mask words): numba_wide_many_masks, 16 masks at 1 token (4 words a row, 4 lanes)."""
    wide = (torch.float16, torch.bfloat16)
    return [
        Case("numba_decode_at_switch", (4,), 200, 5, 3, quick=False),
        Case("numba_wide_full_warp", (3,), 1056, 40, 5, quick_dtypes=wide),
        Case("numba_wide_eight_lanes", (1,), 1056, 37, 3, quick=False, dtypes=wide),
        Case("numba_wide_interleaved", (1,), 512, 37, 1, quick=False, dtypes=wide),
        Case("numba_wide_interleaved_twin", (1,), 1056, 40, 1, quick=False, dtypes=wide),
        Case("numba_wide_many_masks", (1,), 64, 40, 16, dtypes=wide),
        Case("numba_tiled_above_switch", (5,), 33, 17, 2, quick=False),
        Case("numba_tiled_two_by_two_tiles", (9,), 12, 40, 2, quick=False),
    ]


def catalogue(quick: bool = False) -> list[Case]:
    """Every base case in every dtype it names (all by default); ``quick`` keeps the cases
    marked quick."""
    cases = [replace(c, dtype=d) for d in DTYPES for c in _base_cases() if c.dtypes is None or d in c.dtypes]
    if not quick:
        return cases
    return [c for c in cases if c.quick and (c.quick_dtypes is None or c.dtype in c.quick_dtypes)]


@dataclass
class Inputs:
    """Tensors for one case: ``masks`` is what the op receives (packed or logits) and
    ``bool_masks`` the hard masks the reference uses."""

    x: torch.Tensor
    weight: torch.Tensor
    masks: torch.Tensor
    bool_masks: np.ndarray
    dout: torch.Tensor


def _strided(shape, dtype, gen, scale=1.0):
    """A view with a non-unit inner stride over a fresh buffer twice as wide."""
    full = torch.randn(*shape[:-1], 2 * shape[-1], generator=gen, dtype=torch.float64) * scale
    return full.to(dtype)[..., ::2]


def make_inputs(case: Case, seed: int, device="cpu") -> Inputs:
    """Fresh random inputs for ``case`` (never zeros); ``W`` scaled by ``1/sqrt(d_model)``."""
    gen = torch.Generator().manual_seed(seed)
    scale = case.d_model**-0.5
    shape_x = (*case.batch, case.d_model)
    if case.noncontig:
        x = _strided(shape_x, case.dtype, gen)
        weight = _strided((case.d_model, case.d_ff), case.dtype, gen, scale).T
    else:
        x = torch.randn(shape_x, generator=gen, dtype=torch.float64).to(case.dtype)
        weight = (torch.randn(case.d_ff, case.d_model, generator=gen, dtype=torch.float64) * scale).to(case.dtype)
    mshape = (case.n_masks, case.d_ff, case.d_model)
    magnitude = torch.rand(mshape, generator=gen, dtype=torch.float64) + 0.01
    sign = {
        "zeros": -1.0,
        "ones": 1.0,
    }.get(case.masks, torch.where(torch.rand(mshape, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0))
    logits = (magnitude * sign).to(case.dtype)
    bool_masks = (logits > 0).numpy()
    if case.form == "logits":
        masks = logits
    else:
        masks = pack_masks(logits)
        if case.masks == "garbage_tail":
            assert case.d_model % 8, "garbage_tail needs d_model % 8 != 0"
            tail = 0xFF << (case.d_model % 8) & 0xFF
            masks[..., packed_width(case.d_model) - 1] |= tail
    dout = torch.randn((*case.batch, case.d_ff), generator=gen, dtype=torch.float64).to(case.dtype)
    return Inputs(x.to(device), weight.to(device), masks.to(device), bool_masks, dout.to(device))
