"""Launch shapes and switches of the numba backend, each with where it comes from.

No numba import here: the capability check reads these without loading numba.
"""

#: tokens up to which the forward uses the decode kernel (it re-reads each row of W, from
#: cache, once per token); to be measured on the H100
DECODE_MAX_TOKENS = 4
#: threads per block of the decode kernel: 4 warps; to be measured on the H100
DECODE_BLOCK = 128
#: lanes per row of the decode kernel: at most one warp, i.e. 8 * 32 = 256 elements of a
#: row per step; fewer (a power of two) when d_model is small
DECODE_MAX_LANES = 32
#: tiled kernel: TILE_T tokens x TILE_N rows per block (one output per thread, 256
#: threads), d_model in steps of TILE_K; to be measured on the H100
TILE_T, TILE_N, TILE_K = 16, 16, 32
TILE_THREADS = TILE_T * TILE_N
#: shared rows of w and mask bits padded by one element, so that the 16 rows a warp reads
#: at one k fall in distinct banks (32 banks of 4 bytes: a hardware fact)
TILE_KP = TILE_K + 1
#: threads per block of the element-wise backward kernels (dx, dw); to be measured on the H100
ELEM_BLOCK = 128
#: CUDA's gridDim.y limit (a hardware fact); it bounds the token tiles of the tiled kernel
MAX_GRID_Y = 65535
#: the simulator runs one OS thread per CUDA thread and every kernel line as Python; calls
#: beyond this many multiply-adds (tokens * d_ff * d_model * (n_masks + 1)) take more than
#: a few seconds there (measured on the 2-core CPU machine, DESIGN.md)
SIM_MAX_MACS = 150_000
