"""Launch shapes and switches of the numba backend, each with where it comes from.

No numba import here: the capability check reads these without loading numba.
"""

from typing import NamedTuple

#: tokens up to which the forward uses the decode kernel (it re-reads each row of W, from
#: cache, once per token); to be measured on the H100
DECODE_MAX_TOKENS = 4
#: threads per block of the element-wise decode kernel ("scalar"): 4 warps; to be measured on the H100
DECODE_BLOCK = 128
class Wide(NamedTuple):
    """The shape of a ``decode_wide`` kernel (fp16/bf16, 16-byte loads; kernels.py)."""

    #: 16-byte chunks of a row per lane and mask word (one mask byte per chunk)
    span: int
    #: the loads of ``unroll`` words issued before use
    unroll: int
    #: threads per block
    block: int
    #: rows per slot of lanes (x read once for them)
    rows: int
    #: lanes summed by warp shuffles (else through shared memory)
    shuffle: bool
    #: a lane's chunks ``interleave``d over the lanes (each 16-byte load instruction of a
    #: warp reads 512 contiguous bytes; the mask bytes come one per chunk), else adjacent
    #: (each bit-plane read as one ``span``-byte word)
    interleave: bool
    #: at most this many lanes per row (a power of two <= 32)
    lanes: int = 32


#: decode kernels the tuner times (scripts/numba_tune.py): name -> None for the element-wise
#: ``decode`` kernel (every dtype and d_model), or the :class:`Wide` shape of ``decode_wide``.
#: The first seven are the H100 sweep at fddaa17 (DESIGN.md); sm_90 PTX without local memory
#: for every n_masks 1..16 (checked on CPU): scalar, v4, v4u2, v4s2, v4u2b256; v4u4 spills
#: from n_masks 9, v4s4 from 12 (NVVM stops unrolling the word loop), v4s4w from 13 (its
#: FORWARD, fp16 and bf16); for the others no such check is recorded. v4s4wi (interleaved)
#: is the H200 lead of DESIGN.md: numba and cuda, whose loads are ``16 span`` bytes apart
#: across a warp, fell to 64-73% of copy there while triton's coalesced GEMV held 81-88%; the
#: other H200 candidates (v4s2w, v4s2wi, v4s4wib256, v4s4r2wi, and v4s4w / v4s4wi under a
#: 64-register cap) tied or lost and were dropped (DESIGN.md "H200 round"). Every variant
#: reads its mask words through the read-only path since H200 run 37 (DESIGN.md, fifth H200
#: session). The ``l16`` and ``l8`` variants (16 or 8 lanes a row: 2 or 4 rows a warp share
#: the butterfly and the epilogue) are the seventh H200 session's (DESIGN.md; its x-staged
#: variants lost at every point of run 46 and were dropped)
DECODE_VARIANTS = {
    "scalar": None,
    "v4": Wide(1, 1, 128, 1, False, False),
    "v4u2": Wide(1, 2, 128, 1, False, False),
    "v4u4": Wide(1, 4, 128, 1, False, False),
    "v4s2": Wide(2, 1, 128, 1, False, False),
    "v4s4": Wide(4, 1, 128, 1, False, False),
    "v4u2b256": Wide(1, 2, 256, 1, False, False),
    "v4s4w": Wide(4, 1, 128, 1, True, False),
    "v4s4wb256": Wide(4, 1, 256, 1, True, False),
    "v4s4r2w": Wide(4, 1, 128, 2, True, False),
    "v4s8w": Wide(8, 1, 128, 1, True, False),
    "v4s4wi": Wide(4, 1, 128, 1, True, True),
    "v4s4wl16": Wide(4, 1, 128, 1, True, False, lanes=16),
    "v4s4wl8": Wide(4, 1, 128, 1, True, False, lanes=8),
    "v4s4wil16": Wide(4, 1, 128, 1, True, True, lanes=16),
    "v4s4wil8": Wide(4, 1, 128, 1, True, True, lanes=8),
    "v4s4wl8b64": Wide(4, 1, 64, 1, True, False, lanes=8),
    "v4s4wl8b32": Wide(4, 1, 32, 1, True, False, lanes=8),
    "v4s4wil8b64": Wide(4, 1, 64, 1, True, True, lanes=8),
    "v4s4wil8b32": Wide(4, 1, 32, 1, True, True, lanes=8),
    "v4s4wl4": Wide(4, 1, 128, 1, True, False, lanes=4),
}
#: the variant the forward uses where its wide loads apply: v4s4w was the fastest variant at
#: every point of the H100 sweep at commit fddaa17 (scripts/numba_tune.py, 1 token, fp16 and
#: bf16, 4096x14336 and 4096x11008, n_masks 1, 2, 4, 8; DESIGN.md has the table), e.g. fp16
#: 4096x14336: n=1 49.6 us (v4s4wb256 50.7, v4s4r2w 52.3, v4s4 58.2, v4s8w 68.0), n=4 60.1 us
#: (v4s4r2w 61.9, v4s4wb256 65.0, v4s4 70.3), n=8 75.4 us (v4s4wb256 79.3, v4s4 88.8)
DECODE_VARIANT = "v4s4w"
#: up to this many masks the forward takes DECODE_VARIANT_FEW_MASKS: on the H200 (runs 22
#: and 23, commits 60cad37 and dacede1, scripts/numba_tune.py, bench timer) the interleaved
#: v4s4wi beat v4s4w at every point of n_masks 1 and 2 (fp16 4096x14336 n=1 39.0 / 39.6 us
#: against 43.6 / 43.4; 4096x11008 31.7 / 32.0 against 35.5 / 35.5; n=2 44.3 against 45.7,
#: 36.8 against 37.0) and lost at every point of 4 and 8 (n=4 56.4 against 49.8; n=8 95.3
#: against 69.7, bf16): its mask bytes are 4 byte loads a plane and word instead of one
DECODE_FEW_MASKS = 2
DECODE_VARIANT_FEW_MASKS = "v4s4wi"
#: near this n_masks the span-4 kernels' sm_90 PTX holds their mask words in local memory
#: (NVVM stops unrolling; checked on CPU: v4s4 at 86fa957 from 12, v4s4w's FORWARD from 13 in
#: fp16 and bf16; the threshold stays at 12), so from it on the forward takes
#: DECODE_VARIANT_MANY_MASKS, the fastest variant without local memory at n_masks 8 in the
#: sweep recorded at commit 86fa957 (its DESIGN.md), a sweep that had no shuffle variant;
#: neither is measured at n_masks >= 12, where a shuffle span-2 kernel is the open lead
DECODE_MANY_MASKS = 12
DECODE_VARIANT_MANY_MASKS = "v4s2"


def twin(variant: str, **fields) -> str:
    """The variant whose shape is ``variant``'s with ``fields`` changed: ``interleave=False``
    (adjacent chunks) for a row that an interleaved variant cannot cover (``d_model / 8`` not
    a multiple of ``lanes * span``)."""
    shape = DECODE_VARIANTS[variant]._replace(**fields)
    return next(k for k, v in DECODE_VARIANTS.items() if v == shape)


def default_variant(n_masks: int) -> str:
    """The decode variant the forward uses for ``n_masks`` masks (see DECODE_VARIANT,
    DECODE_FEW_MASKS, DECODE_MANY_MASKS)."""
    if n_masks <= DECODE_FEW_MASKS:
        return DECODE_VARIANT_FEW_MASKS
    return DECODE_VARIANT if n_masks < DECODE_MANY_MASKS else DECODE_VARIANT_MANY_MASKS
#: lanes per row of the decode kernel: at most one warp, i.e. 8 * 32 = 256 elements of a
#: row per step; fewer (a power of two) when d_model is small
DECODE_MAX_LANES = 32
#: tiled kernel: TILE_T tokens x TILE_N rows per block, each thread TILE_TPT = 2 tokens of
#: one row (two accumulator arrays in kernels.py: a shared w and mask word feeds
#: 2 * (n_masks + 1) FMAs), d_model in steps of TILE_K; 128 threads. Sizes to be measured
#: on the H100; 4 tokens per thread spilled the accumulators to local memory at n_masks >= 12
#: (sm_90 PTX, tests/test_numba_build.py)
TILE_T, TILE_N, TILE_K, TILE_TPT = 8, 32, 32, 2
TILE_THREADS = TILE_N * TILE_T // TILE_TPT
#: shared rows of w and mask bits padded by one element, so that the 32 rows a warp reads
#: at one k fall in distinct banks (32 banks of 4 bytes: a hardware fact)
TILE_KP = TILE_K + 1
#: threads per block of the element-wise backward kernels (dx, dw); to be measured on the H100
ELEM_BLOCK = 128
#: Numba's simulator runs one OS thread per CUDA thread, about 1 ms per thread and barrier
#: on the 2-core CPU machine (measured: its block manager polls every thread under the
#: GIL), and every kernel line as Python. Every kernel strides over its work by
#: gridDim.x, so simulated launches are capped at 2 blocks (block offsets still tested),
#: and calls beyond SIM_MAX_MACS multiply-adds (tokens * d_ff * d_model * (n_masks + 1)),
#: or beyond SIM_MAX_WEIGHTS elements of W, are refused there
SIM_MAX_BLOCKS = 2
SIM_MAX_MACS = 100_000
SIM_MAX_WEIGHTS = 8192
#: a simulated barrier costs every thread of the block a GIL round trip, so the decode
#: kernel's cost there grows with d_ff * lanes * tokens: the simulator runs it with at most
#: 4 lanes per row (still a cross-lane reduction; lanes is a launch parameter)
SIM_MAX_LANES = 4
