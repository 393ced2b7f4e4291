"""The numba kernels, one specialisation per (n_masks, activation, accumulator type, ...).

Shapes (all arrays are flat 1-D views of contiguous tensors, bf16 as int16 bits):
``x (T, K)``, ``w (N, K)``, ``packed (NM, N, G)`` uint8 with ``G = ceil(K/8)``,
``K = d_model``, ``N = d_ff``. Per ``(t, n)``, with ``total = x[t] . w[n]`` and
``gate_i = x[t] . (M_i[n] * w[n])``:

- ``mode == FORWARD``: ``out[t, n] = sum_i act(gate_i) * (total - gate_i)``.
- ``mode == GRAD`` (backward kernel A): ``D[i, t, n] = dout*(act'(gate_i)*(total-gate_i)
  - act(gate_i))`` and ``S[t, n] = sum_i dout*act(gate_i)``, rounded to the input dtype.

Two kernels compute the ``n_masks + 1`` dot products per ``(t, n)``: ``decode`` (few
tokens: a group of lanes per row streams ``w`` and the masks once per token, 8 elements
and one byte of each bit-plane per lane and step) and ``tiled`` (shared-memory tiles of
``x``, ``w`` and the expanded mask bits, one output per thread). Backward kernel ``dx``:
``dx[t, k] = sum_n w[n, k] * (S[t, n] + sum_i M_i[n, k] D[i, t, n])``; kernel ``dw``:
``P_i = D_i.T @ x``, ``dW = sum_i M_i * P_i + S.T @ x``, ``dM_i = w * P_i``.

``n_masks`` is a closure constant: every loop over masks has a constant trip count, so
NVVM unrolls it and keeps the ``cuda.local.array`` accumulators in registers (checked:
the sm_90 PTX of every specialisation has no local memory, tests/test_numba_build.py).
Each factory is cached in memory (``lru_cache``) and its kernel on disk (``cache=True``).
"""

from functools import lru_cache

from numba import cuda, float32, float64, int32, int64

from .constants import DECODE_BLOCK, TILE_K, TILE_KP, TILE_N, TILE_T, TILE_THREADS, TILE_TPT
from .numerics import SIMULATED, act, act_and_grad, device, halves, like, load, load_nc, load_v4, pick, store

FORWARD, GRAD = 0, 1
assert TILE_TPT == 2, "the tiled kernel holds two accumulator arrays (acc_a, acc_b)"


def _acc(acc64):
    return float64 if acc64 else float32


@lru_cache(maxsize=None)
def decode_kernel(n_masks, act_code, acc64, mode):
    """``[blocks, DECODE_BLOCK]`` kernel; ``rows = DECODE_BLOCK // lanes`` rows per block
    step, ``lanes`` (a power of two <= 32) threads per row; blocks stride over the
    ``ceil(N / rows)`` row blocks, tokens are looped inside."""
    NM, NACC, ACC, ACT, MODE, BLOCK = n_masks, n_masks + 1, _acc(acc64), act_code, mode, DECODE_BLOCK
    SHARED = NACC * BLOCK  # shared arrays need a constant size

    @cuda.jit(cache=True)
    def decode(x, w, packed, dout, out, dg, tokens, d_ff, d_model, lanes):
        part = cuda.shared.array(SHARED, ACC)
        sums = cuda.shared.array(SHARED, ACC)
        acc = cuda.local.array(NACC, ACC)
        bits = cuda.local.array(NM, int32)
        tid = cuda.threadIdx.x
        lane, r, rows = tid % lanes, tid // lanes, BLOCK // lanes
        groups = (d_model + 7) // 8
        for row_block in range(cuda.blockIdx.x, (d_ff + rows - 1) // rows, cuda.gridDim.x):
            n = row_block * rows + r
            for t in range(tokens):
                for j in range(NACC):
                    acc[j] = ACC(0)
                if n < d_ff:
                    for g in range(lane, groups, lanes):
                        for j in range(NM):
                            bits[j] = packed[(j * d_ff + n) * groups + g]
                        for b in range(8):
                            k = 8 * g + b
                            if k < d_model:
                                p = load(w, n * d_model + k) * load(x, t * d_model + k)
                                acc[NM] += p
                                for j in range(NM):
                                    if (bits[j] >> b) & 1:
                                        acc[j] += p
                finish_row(acc, part, sums, NACC, BLOCK, tid, lane, lanes, r, n, t, MODE, ACT, out, dout, dg,
                           tokens, d_ff)

    return decode


@lru_cache(maxsize=None)
def decode_wide_kernel(n_masks, act_code, mode, bf16, span, unroll, block, rows, shuffle, interleave, lanes_cap):
    """``[blocks, block]`` kernel, ``decode`` for fp16/bf16 with wide loads: ``x (T, K)`` and
    ``w (N, K)`` arrive as int32 words (two elements each), ``packed (NM, N, K/(8 span))`` as
    words of ``span`` bytes (uint8, int16, int32, int64; with ``interleave`` the bytes
    themselves, ``(NM, N, K/8)`` uint8); ``K % (8 span) == 0``, 16-byte
    aligned bases, every index below 2**31 (the launcher checks). A slot of ``lanes`` threads
    owns ``rows`` consecutive rows ``n0 .. n0 + rows - 1``; a lane reads, for mask words
    ``s = lane, lane + lanes, ...``, ``span`` 8-element chunks of ``x`` (once, shared by the
    ``rows`` rows) and of each row with one 16-byte ``load_v4`` each, and the ``span`` mask
    bytes of those chunks per bit-plane and row as one word; it issues the loads of
    ``unroll`` such words before using them. Word ``s``'s chunks are ``span s + c`` (a
    lane's chunks adjacent: one ``span``-byte load per plane, the warp's 16-byte loads
    ``16 span`` bytes apart), or with ``interleave`` ``span (s - lane) + lane + lanes c``
    (``c < span``: each 16-byte load instruction of the slot reads ``16 lanes`` contiguous
    bytes, the mask bytes arrive as ``span`` byte loads per plane, 32 contiguous bytes per
    warp instruction, and are joined into the word; needs ``K/8 % (lanes span) == 0``).
    Indices are int32 arithmetic. Each accumulator is summed
    over the slot's lanes by ``lane_sum`` (``shuffle``: a butterfly of warp shuffles, no
    barrier) or ``finish_row`` (shared memory, lane order, two barriers); accumulation in fp32.
    The mask words (or bytes) come through the read-only path (``load_nc``, ``ld.global.nc``)
    as W and x do: H200 run 37 against plain loads, bench timer, 4096x14336 / 4096x11008:
    n=1 interleaved 0.6-2.6% faster, n=2 and 4 within 2.4%, n=8 3.4-5.2% faster (MEASUREMENTS_H200.md).
    ``lanes_cap`` bounds ``lanes`` (the launcher's business; the kernel takes ``lanes``). With
    ``shuffle`` the FORWARD epilogue is spread over the lanes:
    lane ``j`` computes mask ``j``'s term (``j < n_masks``; rounds of ``lanes`` masks), and
    the terms are summed by the same butterfly."""
    NM, NACC, ACT, MODE, BLOCK, SPAN, UNROLL, BF16 = n_masks, n_masks + 1, act_code, mode, block, span, unroll, bf16
    ROWS, SHUFFLE, BITS_T, INTERLEAVE = rows, shuffle, int64 if span == 8 else int32, interleave
    SPREAD = shuffle and mode == FORWARD
    # constant sizes; with shuffles only the simulator's lane_sum uses shared memory
    SHARED = (BLOCK if SIMULATED else 1) if SHUFFLE else NACC * BLOCK
    WORDS, BITS, RACC = 4 * span * unroll * rows, n_masks * unroll * rows, (n_masks + 1) * rows

    @cuda.jit(cache=True)
    def decode_wide(x, w, packed, dout, out, dg, tokens, d_ff, d_model, lanes):
        part = cuda.shared.array(SHARED, float32)
        sums = cuda.shared.array(SHARED, float32)
        acc = cuda.local.array(RACC, float32)
        row = cuda.local.array(NACC, float32)
        wv = cuda.local.array(WORDS, int32)
        bits = cuda.local.array(BITS, BITS_T)
        tid, n_ff, n_lanes = int32(cuda.threadIdx.x), int32(d_ff), int32(lanes)
        lane, slot = tid % n_lanes, tid // n_lanes
        chunks = int32(d_model) // 8  # 16-byte chunks per row
        words = chunks // SPAN  # mask words per row and plane
        step = n_lanes if INTERLEAVE else int32(1)  # chunks between a lane's consecutive chunks of a word
        per_block = (BLOCK // n_lanes) * ROWS
        for row_block in range(int32(cuda.blockIdx.x), (n_ff + per_block - 1) // per_block, int32(cuda.gridDim.x)):
            n0 = int32(row_block * per_block + slot * ROWS)
            for t in range(int32(tokens)):
                for j in range(RACC):
                    acc[j] = float32(0)
                if n0 < n_ff:
                    for s0 in range(lane, words, n_lanes * UNROLL):
                        for u in range(UNROLL):
                            s = int32(s0 + u * n_lanes)
                            if s < words:
                                q0 = (s - lane) * SPAN + lane if INTERLEAVE else s * SPAN  # chunk c: q0 + c * step
                                for r in range(ROWS):
                                    nr = min(n0 + r, n_ff - 1)  # a row past the end re-reads the last
                                    first = int64(int32(nr * chunks + q0))  # c in 64 bits: an address offset
                                    for c in range(SPAN):
                                        a0, a1, a2, a3 = load_v4(w, first + c * step)
                                        e = 4 * ((u * ROWS + r) * SPAN + c)
                                        wv[e], wv[e + 1], wv[e + 2], wv[e + 3] = a0, a1, a2, a3
                                    for j in range(NM):
                                        if INTERLEAVE:
                                            byte0 = int32((j * n_ff + nr) * chunks + q0)
                                            word = BITS_T(0)
                                            for c in range(SPAN):
                                                word |= BITS_T(load_nc(packed, byte0 + c * step)) << (8 * c)
                                            bits[(u * ROWS + r) * NM + j] = word
                                        else:
                                            q = int32((j * n_ff + nr) * words + s)
                                            bits[(u * ROWS + r) * NM + j] = load_nc(packed, q)
                        for u in range(UNROLL):
                            s = int32(s0 + u * n_lanes)
                            if s < words:
                                q0 = (s - lane) * SPAN + lane if INTERLEAVE else s * SPAN
                                first = int64(int32(t * chunks + q0))
                                for c in range(SPAN):
                                    x0, x1, x2, x3 = load_v4(x, first + c * step)
                                    h0, h1 = halves(x0, BF16), halves(x1, BF16)
                                    h2, h3 = halves(x2, BF16), halves(x3, BF16)
                                    for r in range(ROWS):
                                        e, q, b = 4 * ((u * ROWS + r) * SPAN + c), (u * ROWS + r) * NM, 8 * c
                                        fma_word(acc, r * NACC, NM, bits, q, b, halves(wv[e], BF16), h0)
                                        fma_word(acc, r * NACC, NM, bits, q, b + 2, halves(wv[e + 1], BF16), h1)
                                        fma_word(acc, r * NACC, NM, bits, q, b + 4, halves(wv[e + 2], BF16), h2)
                                        fma_word(acc, r * NACC, NM, bits, q, b + 6, halves(wv[e + 3], BF16), h3)
                for r in range(ROWS):
                    for j in range(NACC):
                        row[j] = acc[r * NACC + j]
                    if SHUFFLE:
                        for j in range(NACC):
                            row[j] = lane_sum(row[j], n_lanes, part, tid)
                        if SPREAD:
                            y = spread_forward(row, NM, ACT, lane, n_lanes, part, tid)
                            if lane == 0 and n0 + r < n_ff:
                                store(out, t * d_ff + n0 + r, y)
                        elif lane == 0 and n0 + r < n_ff:
                            epilogue(row, NM, MODE, ACT, out, dout, dg, t, n0 + r, tokens, d_ff)
                    else:
                        finish_row(row, part, sums, NACC, BLOCK, tid, lane, n_lanes, slot, n0 + r, t, MODE, ACT, out,
                                   dout, dg, tokens, d_ff)

    return decode_wide


if SIMULATED:

    def lane_sum(v, lanes, scratch, tid):
        """The simulator's twin of the shuffle butterfly below (it has no warp intrinsics):
        the same sums in the same order, exchanged through shared ``scratch`` (one float per
        thread) with barriers that every thread of the block passes."""
        m = lanes >> 1
        while m:
            cuda.syncthreads()
            scratch[tid] = v
            cuda.syncthreads()
            v += scratch[tid ^ m]
            m >>= 1
        return v

else:

    @cuda.jit(device=True)
    def lane_sum(v, lanes, scratch, tid):
        """``v`` summed over the ``lanes`` (a power of two <= 32) lanes of an aligned group of
        the warp by a butterfly of ``shfl_xor``: ``v += v[lane ^ m]`` for ``m = lanes/2 .. 1``
        (lane 0's sum has a fixed order: bitwise the same every run). Every lane of the warp
        calls it; ``scratch`` is the simulator twin's and unused here."""
        for k in range(5):  # m = 16, 8, 4, 2, 1: constant operands, unrolled
            m = int32(16 >> k)
            s = cuda.shfl_xor_sync(0xFFFFFFFF, v, m)  # outside the test: no divergent shuffle
            if m < lanes:  # a predicated add; lanes >= 32 - m take another group's value, unused
                v += s
        return v


@device
def spread_forward(row, n_masks, act_code, lane, lanes, scratch, tid):
    """``sum_j act(g_j) (total - g_j)`` (``row`` = gates, then total; the same in every lane of
    the group) with mask ``j``'s term computed by lane ``j % lanes`` and the terms summed over
    the group by ``lane_sum``: the warp issues one activation a round of ``lanes`` masks
    instead of ``n_masks``. Every lane calls it and gets the sum."""
    total = row[n_masks]
    y = float32(0)
    j = int32(lane)
    while j < n_masks:  # lane j's masks j, j + lanes, ...; lanes past n_masks skip it
        g = row[0]
        for i in range(1, n_masks):  # row[j] without a run-time index (which would put row in local memory)
            g = pick(int32(i == j), row[i], g)
        y += act(g, act_code) * (total - g)
        j += int32(lanes)
    return lane_sum(y, lanes, scratch, tid)


@device
def epilogue(acc, n_masks, mode, act_code, out, dout, dg, t, n, tokens, d_ff):
    """The FORWARD or GRAD epilogue of token ``t`` of row ``n`` (acc = gates, then total)."""
    if mode == FORWARD:
        forward_epilogue(acc, n_masks, act_code, out, t * d_ff + n)
    else:
        grad_epilogue(acc, n_masks, act_code, dout, out, dg, t, n, tokens, d_ff)


@device
def finish_row(acc, part, sums, nacc, block, tid, lane, lanes, r, n, t, mode, act_code, out, dout, dg, tokens, d_ff):
    """End of one token of row ``n`` in the decode kernels: each of the ``nacc``
    accumulators is summed over the ``lanes`` threads of row slot ``r`` in lane order
    (through shared ``part`` and ``sums``, two barriers every thread of the block passes),
    then lane 0 runs the FORWARD or GRAD epilogue for token ``t``."""
    for j in range(nacc):
        part[j * block + tid] = acc[j]
    cuda.syncthreads()
    for j in range(lane, nacc, lanes):
        s = part[j * block + r * lanes]
        for m in range(1, lanes):
            s += part[j * block + r * lanes + m]
        sums[r * nacc + j] = s
    cuda.syncthreads()
    if lane == 0 and n < d_ff:
        for j in range(nacc):
            acc[j] = sums[r * nacc + j]
        epilogue(acc, nacc - 1, mode, act_code, out, dout, dg, t, n, tokens, d_ff)


@device
def fma_word(acc, a0, n_masks, bits, base, b, w, x):
    """Elements ``b``, ``b + 1`` of a mask word, ``w = (w_b, w_b+1)`` and ``x`` alike (fp32):
    ``p = w_b x_b`` into the total ``acc[a0 + n_masks]``, and into ``acc[a0 + j]`` where bit
    ``b`` of ``bits[base + j]`` is set; the same for ``b + 1``."""
    p, q = w[0] * x[0], w[1] * x[1]
    acc[a0 + n_masks] += p
    acc[a0 + n_masks] += q
    for j in range(n_masks):  # b is a constant after unrolling: each test becomes a bit test of a constant mask
        if (bits[base + j] >> b) & 1:
            acc[a0 + j] += p
        if (bits[base + j] >> (b + 1)) & 1:
            acc[a0 + j] += q


@lru_cache(maxsize=None)
def tiled_kernel(n_masks, act_code, acc64, mode):
    """``[blocks, TILE_THREADS]`` kernel, tokens ``t`` and ``t + 1`` of one row per thread
    (TILE_TPT = 2: accumulators ``acc_a`` and ``acc_b``); blocks stride over the
    ``ceil(N / TILE_N) * ceil(T / TILE_T)`` tiles, row tiles fastest."""
    NM, NACC, ACC, ACT, MODE = n_masks, n_masks + 1, _acc(acc64), act_code, mode
    SX, SW = TILE_T * TILE_K, TILE_N * TILE_KP  # shared arrays need a constant size

    @cuda.jit(cache=True)
    def tiled(x, w, packed, dout, out, dg, tokens, d_ff, d_model):
        sx = cuda.shared.array(SX, ACC)
        sw = cuda.shared.array(SW, ACC)
        sb = cuda.shared.array(SW, int32)
        acc_a = cuda.local.array(NACC, ACC)  # token tq: gates 0..NM-1, then total
        acc_b = cuda.local.array(NACC, ACC)  # token tq + 1
        tid = cuda.threadIdx.x
        nn, tq = tid % TILE_N, (tid // TILE_N) * TILE_TPT
        groups = (d_model + 7) // 8
        n_tiles = (d_ff + TILE_N - 1) // TILE_N
        for tile in range(cuda.blockIdx.x, n_tiles * ((tokens + TILE_T - 1) // TILE_T), cuda.gridDim.x):
            n0, t0 = (tile % n_tiles) * TILE_N, (tile // n_tiles) * TILE_T
            for j in range(NACC):
                acc_a[j] = ACC(0)
                acc_b[j] = ACC(0)
            for k0 in range(0, d_model, TILE_K):
                cuda.syncthreads()  # the previous step's (or tile's) readers are done
                for e in range(tid, TILE_T * TILE_K, TILE_THREADS):
                    t, k = t0 + e // TILE_K, k0 + e % TILE_K
                    sx[e] = load(x, t * d_model + k) if t < tokens and k < d_model else ACC(0)
                for e in range(tid, TILE_N * TILE_K, TILE_THREADS):
                    n, k = n0 + e // TILE_K, k0 + e % TILE_K
                    word = int32(0)
                    wv = ACC(0)
                    if n < d_ff and k < d_model:
                        wv = load(w, n * d_model + k)
                        for j in range(NM):
                            word |= ((int32(packed[(j * d_ff + n) * groups + k // 8]) >> (k % 8)) & 1) << j
                    s = (e // TILE_K) * TILE_KP + e % TILE_K
                    sw[s] = wv
                    sb[s] = word
                cuda.syncthreads()
                for kk in range(TILE_K):
                    wv = sw[nn * TILE_KP + kk]
                    word = sb[nn * TILE_KP + kk]
                    pa = wv * sx[tq * TILE_K + kk]
                    pb = wv * sx[(tq + 1) * TILE_K + kk]
                    acc_a[NM] += pa
                    acc_b[NM] += pb
                    for j in range(NM):
                        if (word >> j) & 1:
                            acc_a[j] += pa
                            acc_b[j] += pb
            n, t = n0 + nn, t0 + tq
            if n < d_ff:
                if MODE == FORWARD:
                    if t < tokens:
                        forward_epilogue(acc_a, NM, ACT, out, t * d_ff + n)
                    if t + 1 < tokens:
                        forward_epilogue(acc_b, NM, ACT, out, (t + 1) * d_ff + n)
                else:
                    if t < tokens:
                        grad_epilogue(acc_a, NM, ACT, dout, out, dg, t, n, tokens, d_ff)
                    if t + 1 < tokens:
                        grad_epilogue(acc_b, NM, ACT, dout, out, dg, t + 1, n, tokens, d_ff)

    return tiled


@device
def forward_epilogue(acc, n_masks, act_code, out, i):
    """``out[i] = sum_j act(acc[j]) * (acc[n_masks] - acc[j])`` (acc = gates, then total)."""
    total = acc[n_masks]
    y = like(total, 0.0)
    for j in range(n_masks):
        y += act(acc[j], act_code) * (total - acc[j])
    store(out, i, y)


@device
def grad_epilogue(acc, n_masks, act_code, dout, s_out, dg, t, n, tokens, d_ff):
    """``D[j, t, n] = dout*(act'(g_j)*(total-g_j) - act(g_j))``, ``S[t, n] = sum_j dout*act(g_j)``
    with ``g_j = acc[j]``, ``total = acc[n_masks]``."""
    total = acc[n_masks]
    d = load(dout, t * d_ff + n)
    s = like(total, 0.0)
    for j in range(n_masks):
        a, da = act_and_grad(acc[j], act_code)
        dv = d * a
        store(dg, (j * tokens + t) * d_ff + n, d * da * (total - acc[j]) - dv)
        s += dv
    store(s_out, t * d_ff + n, s)


@lru_cache(maxsize=None)
def dx_kernel(n_masks, acc64):
    """``[blocks, ELEM_BLOCK]`` kernel, grid-stride over the ``dx[t, k]``:
    ``dx[t, k] = sum_n w[n, k] * (S[t, n] + sum_i M_i[n, k] * D[i, t, n])``."""
    NM, ACC = n_masks, _acc(acc64)

    @cuda.jit(cache=True)
    def dx(w, packed, dg, s, dx_out, tokens, d_ff, d_model):
        for e in range(cuda.grid(1), tokens * d_model, cuda.gridsize(1)):
            t, k = e // d_model, e % d_model
            g, b = k // 8, k % 8
            groups = (d_model + 7) // 8
            y = ACC(0)
            for n in range(d_ff):
                coef = load(s, t * d_ff + n)
                for j in range(NM):
                    if (int32(packed[(j * d_ff + n) * groups + g]) >> b) & 1:
                        coef += load(dg, (j * tokens + t) * d_ff + n)
                y += coef * load(w, n * d_model + k)
            store(dx_out, e, y)

    return dx


@lru_cache(maxsize=None)
def dw_kernel(n_masks, acc64, with_dm):
    """``[blocks, ELEM_BLOCK]`` kernel, grid-stride over the ``(n, k)``:
    ``P_i = sum_t D[i, t, n] x[t, k]``, ``dW = sum_i M_i P_i + sum_t S[t, n] x[t, k]``,
    ``dM_i = w P_i`` (written when ``with_dm``). With 0 tokens it writes zeros."""
    NM, NACC, ACC, WITH_DM = n_masks, n_masks + 1, _acc(acc64), with_dm

    @cuda.jit(cache=True)
    def dw(x, w, packed, dg, s, dw_out, dm_out, tokens, d_ff, d_model):
        p = cuda.local.array(NACC, ACC)
        for e in range(cuda.grid(1), d_ff * d_model, cuda.gridsize(1)):
            n, k = e // d_model, e % d_model
            for j in range(NACC):
                p[j] = ACC(0)
            for t in range(tokens):
                xv = load(x, t * d_model + k)
                p[NM] += load(s, t * d_ff + n) * xv
                for j in range(NM):
                    p[j] += load(dg, (j * tokens + t) * d_ff + n) * xv
            groups = (d_model + 7) // 8
            wv = load(w, e)
            y = p[NM]
            for j in range(NM):
                if (int32(packed[(j * d_ff + n) * groups + k // 8]) >> (k % 8)) & 1:
                    y += p[j]
                if WITH_DM:
                    store(dm_out, j * d_ff * d_model + e, wv * p[j])
            store(dw_out, e, y)

    return dw
