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
#: The first seven are the H100 sweep at fddaa17 (MEASUREMENTS.md); sm_90 PTX without local
#: memory for every n_masks 1..16 (checked on CPU): scalar, v4, v4u2, v4s2, v4u2b256; v4u4
#: spills from n_masks 9, v4s4 from 12 (NVVM stops unrolling the word loop), v4s4w from 13 (its
#: FORWARD, fp16 and bf16); for the others no such check is recorded. v4s4wi (interleaved) is
#: the H200 lead of MEASUREMENTS_H200.md: numba and cuda, whose loads are ``16 span`` bytes
#: apart across a warp, fell to 64-73% of copy there while triton's coalesced GEMV held 81-88%;
#: the other H200 candidates (v4s2w, v4s2wi, v4s4wib256, v4s4r2wi, and v4s4w / v4s4wi under a
#: 64-register cap) tied or lost and were dropped (MEASUREMENTS_H200.md "H200 round"). Every
#: variant reads its mask words through the read-only path since H200 run 37
#: (MEASUREMENTS_H200.md, fifth H200 session). The ``l16`` and ``l8`` variants (16 or 8 lanes a
#: row: 2 or 4 rows a warp share the butterfly and the epilogue) are the seventh H200 session's
#: (MEASUREMENTS_H200.md; its x-staged variants lost at every point of run 46 and were dropped).
#: The eighth session's span-8 eight-lane variants (128 bytes of W in flight a lane) lost at
#: every point of run 49, 1.6-2.4x slower, and its gather variants (interleaved W, mask words
#: gathered by warp shuffles) at every point of run 50, 1.2-1.9x, as did span 2 at 8 lanes
#: (v4s2wl8, v4s2u2wl8: half the lines a load instruction touches, twice the mask loads) at
#: n_masks 4 in run 52, 1.11-1.15x, tying at 1 and 2: all dropped (MEASUREMENTS_H200.md). The
#: ninth session's (runs 53-61: rows split over warps, a pipelined loop, plane-outer bit tests,
#: whole mask segments by 16-byte loads, Triton's predicated-add chain with and without a
#: register cap) lost or tied against these defaults and were dropped (MEASUREMENTS_H200.md)
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
    "v4s4wil8": Wide(4, 1, 128, 1, True, True, lanes=8),
}
#: the decode variant by n_masks: (at most this many masks, variant), from the H200 sweeps of
#: the seventh session (scripts/numba_tune.py, bench timer, 1 token, fp16 and bf16, 4096x14336
#: and 4096x11008; MEASUREMENTS_H200.md has the tables). Run 47 (commit bc0abfa): n=1 v4s4wil8
#: 35.8 / 36.3 us fp16 / bf16 at 4096x14336 and 30.7 / 30.6 at 4096x11008, against v4s4wi 39.0 /
#: 38.8 and 32.2 / 31.6; n=2 v4s4wl8 40.5 / 40.4 and 34.9 / 35.4, the fastest; n=4 v4s4wl8 44.8
#: / 45.6 and 39.1 / 39.0; n=8 v4s4wl8 78.6 against v4s4w 63.9. Run 48 (commit 2beb5e1): n=4
#: v4s4wl8 44.1 / 44.6 and 38.3 / 38.5 against v4s4w 48.6 / 49.2 and 39.0 / 39.6 (v4s4wl8 in 64-
#: or 32-thread blocks within 1.6% of it, dropped). v4s4w was the fastest at n_masks 8 in the
#: H100 sweep at fddaa17 and ties v4s4wl16 there on the H200 (run 47); from 12 masks the span-4
#: kernels' sm_90 PTX holds their mask words in local memory (NVVM stops unrolling; checked on
#: CPU: v4s4 at 86fa957 from 12, v4s4w's FORWARD from 13), so there v4s2 runs, the fastest
#: variant without local memory at n_masks 8 in the sweep at commit 86fa957, which had no
#: shuffle variant; nothing is measured at n_masks >= 12. Run 50 (the eighth session, commit
#: 16653f5) confirms the table: n=4 v4s4wl8 44.1 / 44.1 and 38.2 / 38.7 against v4s4w 47.8 /
#: 48.1 and 39.1 / 38.6; n=1 v4s4wil8 35.5 / 35.9 and 29.9 / 30.4 against v4s4wl8 38.1 / 38.2
#: and 34.3 / 33.9; n=8 v4s4w 63.4 / 64.9 and 50.7 / 50.5 against v4s4wl8 77.7 / 78.0 and 53.2 /
#: 53.7
DECODE_DEFAULTS = ((1, "v4s4wil8"), (4, "v4s4wl8"), (11, "v4s4w"), (16, "v4s2"))


def twin(variant: str, **fields) -> str:
    """The variant whose shape is ``variant``'s with ``fields`` changed: ``interleave=False``
    (adjacent chunks) for a row that an interleaved variant cannot cover (``d_model / 8`` not
    a multiple of ``lanes * span``)."""
    shape = DECODE_VARIANTS[variant]._replace(**fields)
    return next(k for k, v in DECODE_VARIANTS.items() if v == shape)


def default_variant(n_masks: int) -> str:
    """The decode variant the forward uses for ``n_masks`` masks (DECODE_DEFAULTS)."""
    return next(v for most, v in DECODE_DEFAULTS if n_masks <= most)
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
