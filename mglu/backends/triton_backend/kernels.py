"""Triton kernels of MGLU: the decode GEMV, the tensor-core forward (also the backward's
first pass), the masked-weight expansion, the saved-factors DS pass and the two backward
products.

Shapes: ``x (T, K)``, ``W (N, K)`` with ``K = d_model``, ``N = d_ff``; packed masks
``P (n_masks, N, KB)`` uint8, ``KB = ceil(K / 8)``; bit ``b`` of ``P[i, n, g]`` is
``M_i[n, 8g + b]``. ``total = x @ W.T``, ``gate_i = x @ (M_i W).T``.

- :func:`fwd_gemv` (few tokens, CUDA cores): ``out = sum_i act(gate_i) * (total - gate_i)``.
  W is read as ``(BN, BG, 8)`` tiles: the 8 elements of a group share one byte per mask.
- :func:`fwd_mma` (tensor cores): the same ``n_masks + 1`` products, ``tl.dot`` on
  ``where(bit_i, W, 0)`` built on chip, computed transposed (``acc (BN, BT) = W_i @ x.T``)
  so the masked tile is the register operand. ``MODE = 0`` writes ``out``; ``MODE = 2``
  also the gradient factors ``F[i] = act'(g_i) (total - g_i) - act(g_i)`` (``i <
  n_masks``) and ``F[n_masks] = sum_i act(g_i)`` for the backward; ``MODE = 1`` (backward
  pass 1 without saved factors) writes ``DS[i] = dout * F[i]`` in the input dtype.
- :func:`ds_from_factors`: the same ``DS`` element-wise from saved factors.
- :func:`bwd_dx`: ``dx = sum_{i <= n} DS[i] @ (M_i W)`` with ``M_n = 1``.
- :func:`expand_masks`: ``WM[i] = M_i W`` staged in HBM, the operand :func:`fwd_mma` and
  :func:`bwd_dx` read instead of building it from the bits (prefill and training sizes).
- :func:`bwd_dw`: ``P_i = DS[i].T @ x``; ``dW = sum_{i <= n} M_i * P_i``; ``dM_i = W * P_i``
  written from the accumulator (no ``(n_masks, N, K)`` fp32 buffer).

Under Triton's interpreter (CPU) ``UPCAST`` widens dot operands to fp32 right after the
load (its bf16 arithmetic is wrong otherwise; the widening is exact), and every result
stored in bf16 is rounded to nearest even by :func:`_narrow` (the interpreter truncates).
"""

import triton
import triton.language as tl

from . import interpreting
from .act import act, act_grad

#: Triton's interpreter (the CPU runs) narrows fp32 to bf16 by truncation (its cast drops
#: the low 16 bits; triton 3.6-3.9 runtime/interpreter.py), the GPU rounds to nearest even.
#: Two truncations (the saved gradient factor, then its product with dout) put the CPU's
#: bf16 dx 4x over the torch backend's error on a 7-row case (seed 1029160395 of
#: cuda_t1_split_tail: 0.0177 against 0.0040, bound 0.016) where round-to-nearest gives
#: 0.0038. The backend's own switch (TRITON_INTERPRET as triton read it at its import).
_INTERPRETED = tl.constexpr(interpreting())


@triton.jit
def _narrow(v, dtype: tl.constexpr):
    """``v`` in ``dtype``, rounded to nearest even as on the GPU: under the interpreter a
    bf16 result is rounded with integer ops (``bits + 0x7FFF + lsb``, NaN kept a NaN);
    compiled, ``v.to(dtype)`` (the GPU's cast rounds to nearest even itself)."""
    if _INTERPRETED and dtype == tl.bfloat16:
        b = v.to(tl.float32).to(tl.uint32, bitcast=True)
        r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
        r = tl.where(v != v, 0x7FC0, r)
        out = r.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        out = v.to(dtype)
    return out


@triton.jit
def _wide(v):
    """``v`` (a constexpr or an int32 scalar) as int64, the first factor of every plane
    offset: ``m T N`` or ``i N K`` pass 2**31 at SPEC sizes (n=4, d_ff 28672, 18.7k tokens;
    n >= 11 planes of 8192x28672), where int32 products wrap."""
    return tl.cast(v, tl.int64)


@triton.jit
def _gemv_load(x_ptr, w_ptr, p_ptr, rows, k0, K, KB, NKB, grp,
               N_MASKS: tl.constexpr, G: tl.constexpr, BN: tl.constexpr, BG: tl.constexpr,
               TAIL: tl.constexpr):
    """The loads of one step: columns ``k0 .. k0 + 8 BG`` of W's rows ``rows (BN, 1)``
    (clamped in range) and of x, and the ``(BN, BG)`` bytes of masks ``grp .. grp + G``
    covering them (zeros past ``N_MASKS``). Without ``TAIL`` the step lies inside K and no
    load is masked (no predicate for ptxas to keep beside the mask bits' ``R2P``)."""
    cols = k0 + tl.arange(0, 8 * BG)[None, :]
    gcol = k0 // 8 + tl.arange(0, BG)[None, :]
    if TAIL:
        w = tl.load(w_ptr + rows * K + cols, mask=cols < K, other=0.0)
        # x in W's layout (a broadcast pointer): no layout conversion between the two
        xv = tl.load(x_ptr + cols + rows * 0, mask=cols < K, other=0.0)
    else:
        w = tl.load(w_ptr + rows * K + cols)
        xv = tl.load(x_ptr + cols + rows * 0)
    bp = p_ptr + rows * KB + gcol + _wide(grp) * NKB
    bytes = ()
    for j in tl.static_range(G):
        if grp + j >= N_MASKS:
            byte = tl.zeros((BN, BG), tl.uint8)
        elif TAIL:
            byte = tl.load(bp + j * NKB, mask=gcol < KB, other=0)
        else:
            byte = tl.load(bp + j * NKB)
        bytes = bytes + (byte,)
    return w, xv, bytes


@triton.jit
def _eight(v):
    """The 8 elements of each thread's group of ``v (BN, BG, 8)`` as eight ``(BN, BG)``
    tensors, elements ``0, 4, 2, 6, 1, 5, 3, 7`` in that order (three in-thread splits)."""
    shape: tl.constexpr = (v.shape[0], v.shape[1])
    even, odd = tl.split(tl.reshape(v, shape + (4, 2)))
    e0, e2 = tl.split(tl.reshape(even, shape + (2, 2)))
    o0, o2 = tl.split(tl.reshape(odd, shape + (2, 2)))
    v0, v4 = tl.split(e0)
    v2, v6 = tl.split(e2)
    v1, v5 = tl.split(o0)
    v3, v7 = tl.split(o2)
    return v0, v4, v2, v6, v1, v5, v3, v7


#: the elements :func:`_eight` returns, in order (tests/test_triton_index.py checks it)
EIGHT_ORDER = (0, 4, 2, 6, 1, 5, 3, 7)
#: :func:`_chain`'s PTX: operand ``3 + i`` is element ``EIGHT_ORDER[i]``, added where that bit is set
_CHAIN_ASM = tl.constexpr("{\n.reg .pred p;\n.reg .b32 t;\nmov.b32 $0, $1;\n" + "".join(
    f"and.b32 t, $2, {1 << e};\nsetp.ne.b32 p, t, 0;\n@p add.f32 $0, $0, ${3 + i};\n"
    for i, e in enumerate(EIGHT_ORDER)) + "}")


@triton.jit
def _chain(acc, byte, prod, ASM: tl.constexpr):
    """``acc (BN, BG) + sum_b prod[:, :, b]`` over the bits ``b`` set in ``byte (BN, BG)``,
    ``prod (BN, BG, 8)``.

    With ``ASM`` the 8 predicated adds of a thread's group go into one register in one
    inline PTX block (``and``, ``setp``, ``@p add.f32``), which ptxas turns into one ``R2P``
    a byte and 8 predicated ``FFMA`` (the multiply of ``prod`` folded in), as in the cuda
    backend's ``fma_if``. One accumulator a thread and mask: the first form kept ``(BN, BG,
    8)`` per-element partial sums, 8 registers each (121 registers at n=4 against 65-70
    now) and ran 18-22% slower at n=4 and 26-32% at n=8 (H200 run 35, MEASUREMENTS_H200.md). Without ``ASM``
    (Triton's interpreter, which runs no PTX, and fp64) the same sum through ``tl.where``."""
    if ASM:
        p0, p4, p2, p6, p1, p5, p3, p7 = _eight(prod)
        r = tl.inline_asm_elementwise(_CHAIN_ASM, "=r" + ",r" * 10, [acc, byte, p0, p4, p2, p6, p1, p5, p3, p7],
                                      dtype=tl.float32, is_pure=True, pack=1)
    else:
        bit = 1 << tl.arange(0, 8)[None, None, :]
        r = acc + tl.sum(tl.where((byte[:, :, None] & bit) != 0, prod, 0.0), axis=2)
    return r


@triton.jit
def _gemv_step(loaded, grp, at, a0, a1, a2, a3, a4, a5, a6, a7,
               G: tl.constexpr, BN: tl.constexpr, BG: tl.constexpr, ASM: tl.constexpr, ACC: tl.constexpr):
    """One step's arithmetic on :func:`_gemv_load`'s ``loaded``: ``at += w x`` (first
    pass) and ``a_j += w x`` where mask ``grp + j``'s bit is set, all ``(BN, BG)``: one
    sum a thread."""
    w, xv, bytes = loaded
    prod = tl.reshape(w.to(ACC) * xv.to(ACC), (BN, BG, 8))
    if grp == 0:
        at += tl.sum(prod, axis=2)
    for j in tl.static_range(G):
        byte = bytes[j].to(tl.int32)
        if j == 0:
            a0 = _chain(a0, byte, prod, ASM)
        elif j == 1:
            a1 = _chain(a1, byte, prod, ASM)
        elif j == 2:
            a2 = _chain(a2, byte, prod, ASM)
        elif j == 3:
            a3 = _chain(a3, byte, prod, ASM)
        elif j == 4:
            a4 = _chain(a4, byte, prod, ASM)
        elif j == 5:
            a5 = _chain(a5, byte, prod, ASM)
        elif j == 6:
            a6 = _chain(a6, byte, prod, ASM)
        else:
            a7 = _chain(a7, byte, prod, ASM)
    return at, a0, a1, a2, a3, a4, a5, a6, a7


@triton.jit
def _gemv_term(acc, total, res, valid, ACT: tl.constexpr):
    """``res + act(g) (total - g)`` with ``g (BN,)`` the sum of ``acc (BN, BG)``; ``res``
    unchanged where ``valid`` is false (a gate slot past ``n_masks``)."""
    g = tl.sum(acc, axis=1)
    return res + tl.where(valid, act(g, ACT) * (total - g), 0.0)


@triton.jit
def fwd_gemv(x_ptr, w_ptr, p_ptr, out_ptr, N, K, KB,
             N_MASKS: tl.constexpr, G: tl.constexpr, ACT: tl.constexpr,
             BN: tl.constexpr, BG: tl.constexpr, UNROLL: tl.constexpr, ASM: tl.constexpr,
             ACC: tl.constexpr):
    """``out[t, n] = sum_i act(gate_i) (total - gate_i)`` for one token ``t = program_id(0)``
    and ``BN`` rows ``n`` of W (``x (T, K)``, ``W (N, K)``, packed ``(n_masks, N, KB)``).

    A ``(BN, 8 BG)`` tile of W per step, 8 consecutive elements a thread (one 16-byte
    load at 16 bits), reshaped to ``(BN, BG, 8)`` so that the byte of each bit-plane
    covering them is a ``(BN, BG)`` load in the same threads (no layout conversion).
    ``UNROLL`` (1, 2 or 4) such steps per loop iteration put their loads in flight
    together. ``G`` (1..8) gate accumulators per pass over K; ``total`` comes from the
    first pass.
    """
    tl.static_assert(UNROLL == 1 or UNROLL == 2 or UNROLL == 4, "UNROLL is 1, 2 or 4")
    t = tl.program_id(0)
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)
    rows = tl.minimum(offs_n, N - 1)[:, None]
    x_row = x_ptr + t * K
    NKB = N * KB
    k_full = K - K % (8 * BG)
    k_main = K - K % (UNROLL * 8 * BG)
    total = tl.zeros((BN,), ACC)
    res = tl.zeros((BN,), ACC)
    for grp in tl.static_range(0, N_MASKS, G):
        at = tl.zeros((BN, BG), ACC)
        a0 = tl.zeros((BN, BG), ACC)
        a1 = tl.zeros((BN, BG), ACC)
        a2 = tl.zeros((BN, BG), ACC)
        a3 = tl.zeros((BN, BG), ACC)
        a4 = tl.zeros((BN, BG), ACC)
        a5 = tl.zeros((BN, BG), ACC)
        a6 = tl.zeros((BN, BG), ACC)
        a7 = tl.zeros((BN, BG), ACC)
        for k0 in range(0, k_main, UNROLL * 8 * BG):
            # every load of the UNROLL steps first, so that they are in flight together
            l0 = _gemv_load(x_row, w_ptr, p_ptr, rows, k0, K, KB, NKB, grp, N_MASKS, G, BN, BG, False)
            if UNROLL > 1:
                l1 = _gemv_load(x_row, w_ptr, p_ptr, rows, k0 + 8 * BG, K, KB, NKB, grp, N_MASKS, G, BN, BG, False)
            if UNROLL > 2:
                l2 = _gemv_load(x_row, w_ptr, p_ptr, rows, k0 + 16 * BG, K, KB, NKB, grp, N_MASKS, G, BN, BG, False)
                l3 = _gemv_load(x_row, w_ptr, p_ptr, rows, k0 + 24 * BG, K, KB, NKB, grp, N_MASKS, G, BN, BG, False)
            at, a0, a1, a2, a3, a4, a5, a6, a7 = _gemv_step(
                l0, grp, at, a0, a1, a2, a3, a4, a5, a6, a7, G, BN, BG, ASM, ACC)
            if UNROLL > 1:
                at, a0, a1, a2, a3, a4, a5, a6, a7 = _gemv_step(
                    l1, grp, at, a0, a1, a2, a3, a4, a5, a6, a7, G, BN, BG, ASM, ACC)
            if UNROLL > 2:
                at, a0, a1, a2, a3, a4, a5, a6, a7 = _gemv_step(
                    l2, grp, at, a0, a1, a2, a3, a4, a5, a6, a7, G, BN, BG, ASM, ACC)
                at, a0, a1, a2, a3, a4, a5, a6, a7 = _gemv_step(
                    l3, grp, at, a0, a1, a2, a3, a4, a5, a6, a7, G, BN, BG, ASM, ACC)
        for k0 in range(k_main, k_full, 8 * BG):
            at, a0, a1, a2, a3, a4, a5, a6, a7 = _gemv_step(
                _gemv_load(x_row, w_ptr, p_ptr, rows, k0, K, KB, NKB, grp, N_MASKS, G, BN, BG, False),
                grp, at, a0, a1, a2, a3, a4, a5, a6, a7, G, BN, BG, ASM, ACC)
        if k_full < K:
            at, a0, a1, a2, a3, a4, a5, a6, a7 = _gemv_step(
                _gemv_load(x_row, w_ptr, p_ptr, rows, k_full, K, KB, NKB, grp, N_MASKS, G, BN, BG, True),
                grp, at, a0, a1, a2, a3, a4, a5, a6, a7, G, BN, BG, ASM, ACC)
        if grp == 0:
            total = tl.sum(at, axis=1)
        res = _gemv_term(a0, total, res, True, ACT)
        if G > 1:
            res = _gemv_term(a1, total, res, grp + 1 < N_MASKS, ACT)
        if G > 2:
            res = _gemv_term(a2, total, res, grp + 2 < N_MASKS, ACT)
        if G > 3:
            res = _gemv_term(a3, total, res, grp + 3 < N_MASKS, ACT)
        if G > 4:
            res = _gemv_term(a4, total, res, grp + 4 < N_MASKS, ACT)
        if G > 5:
            res = _gemv_term(a5, total, res, grp + 5 < N_MASKS, ACT)
        if G > 6:
            res = _gemv_term(a6, total, res, grp + 6 < N_MASKS, ACT)
        if G > 7:
            res = _gemv_term(a7, total, res, grp + 7 < N_MASKS, ACT)
    tl.store(out_ptr + t * N + offs_n, _narrow(res, out_ptr.dtype.element_ty), mask=offs_n < N)


@triton.jit
def _grouped(pid, n_tiles_a, n_tiles_b, GROUP: tl.constexpr):
    """Tile ``(a, b)`` of program ``pid``, walking ``GROUP`` tiles of ``a`` per column of
    ``b`` so that neighbouring programs share operand tiles in L2 (Triton's matmul tutorial)."""
    per_group = GROUP * n_tiles_b
    first = (pid // per_group) * GROUP
    size = tl.minimum(n_tiles_a - first, GROUP)
    a = first + (pid % per_group) % size
    b = (pid % per_group) // size
    return a, b


@triton.jit
def _mask_bytes(p_ptr, m, offs_n, kb0, N, KB, valid, BG: tl.constexpr):
    """``(BN, BG)`` uint8: bytes ``P[m, n, kb0 ..]``, 255 (all bits set) past the rows and
    the bytes of the plane and where ``valid`` is false (the plane ``M_n = 1``)."""
    g = kb0 + tl.arange(0, BG)
    return tl.load(p_ptr + _wide(m) * N * KB + offs_n[:, None] * KB + g[None, :],
                   mask=valid & (offs_n[:, None] < N) & (g[None, :] < KB), other=255)


@triton.jit
def _bits(p_ptr, m, offs_n, kb0, N, KB, valid, BG: tl.constexpr):
    """``(BN, 8 BG)`` int1: bit ``c % 8`` of byte ``P[m, n, c // 8]`` for the columns
    ``c = 8 kb0 ..``; all-ones where ``valid`` is false (the plane ``M_n = 1``). One byte
    load per 8 columns, expanded in registers (``(BN, BG, 8)`` reshaped): a per-column
    byte gather ran 5-7x slower on the H100 (MEASUREMENTS.md run 2)."""
    byte = _mask_bytes(p_ptr, m, offs_n, kb0, N, KB, valid, BG)
    bits = (byte[:, :, None] >> tl.arange(0, 8).to(tl.uint8)[None, None, :]) & 1
    return tl.reshape(bits, (offs_n.shape[0], 8 * BG)) != 0


@triton.jit
def _dot(a, b, acc, PREC: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if a.dtype == tl.float64:
        # Triton 3.6 cannot lower fp64 tl.dot with an operand built in registers
        # ("fp64 don't support largeK MMA"): CUDA-core FMAs on small tiles instead
        r = acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    else:
        r = tl.dot(a, b, acc, input_precision=PREC, out_dtype=acc.dtype)
    return r


#: ``where(bit, w, 0)`` for two 16-bit elements of one register (:func:`_masked_pairs`;
#: wgmma.py shares PAIRS_CONSTRAINTS): inputs ``w`` (the pair), each element's byte,
#: ``2**(15 - j)`` and ``2**(31 - j)`` for its bit ``j``, 32-bit each (``pack=2``)
PAIRS_ASM = tl.constexpr("{\n.reg .b32 a, b, m;\nmul.lo.u32 a, $2, $4;\nmul.lo.u32 b, $3, $7;\n"
                         "prmt.b32 m, a, b, 0xFF99;\nand.b32 $0, $1, m;\n}")
PAIRS_CONSTRAINTS = tl.constexpr("=r,r,r,r,r,r,r,r")


@triton.jit
def _masked_pairs(w, p_ptr, m, offs_n, kb0, N, KB, valid, BG: tl.constexpr):
    """``where(bit, w, 0)`` for a 16-bit ``(BN, 8 BG)`` tile ``w``, the two elements of a
    32-bit register per inline PTX call: ``byte * 2**(15 - j)`` moves the low element's bit
    ``j`` to bit 15, ``byte * 2**(31 - j)`` the high element's to bit 31, a
    sign-replicating ``prmt`` spreads them over the two halves and an ``and`` applies them:
    4 instructions a pair, against about 8 an element for the select (bit shift, compare,
    select and repacking of :func:`_bits`; SASS of triton 3.6, MEASUREMENTS_H200.md run 33). Each element
    brings its own byte and ``j``: which two elements share a register depends on the
    layout Triton picks (8 consecutive columns a thread for 16-divisible sizes, one for
    others: offline TTGIR; the first form, which assumed the former, failed the GPU
    conformance, MEASUREMENTS_H200.md run 34)."""
    byte = _mask_bytes(p_ptr, m, offs_n, kb0, N, KB, valid, BG)
    j = tl.arange(0, 8)[None, None, :]
    shape: tl.constexpr = (offs_n.shape[0], BG, 8)
    r = tl.inline_asm_elementwise(
        PAIRS_ASM, PAIRS_CONSTRAINTS,
        [tl.reshape(w, shape), tl.broadcast_to(byte.to(tl.int32)[:, :, None], shape),
         tl.broadcast_to(1 << (15 - j), shape), tl.broadcast_to(1 << (31 - j), shape)],
        dtype=w.dtype, is_pure=True, pack=2)
    return tl.reshape(r, w.shape)


@triton.jit
def _masked(w, wm_ptr, p_ptr, m, offs_n, kcol, kb0, N, K, KB, valid, BK: tl.constexpr, STAGED: tl.constexpr,
            PAIRS: tl.constexpr = False):
    """``(BN, BK)`` tile of ``M_m W`` at columns ``kcol = 8 kb0 ..``: loaded from the staged planes
    ``WM (n_masks, N, K)`` (``STAGED``), or built from the bits as ``where(bit, w, 0)``
    (``PAIRS``: in inline PTX, :func:`_masked_pairs`, 16-bit ``w`` on a GPU only)."""
    if STAGED:
        r = tl.load(wm_ptr + _wide(m) * N * K + offs_n[:, None] * K + kcol[None, :],
                    mask=valid & (offs_n[:, None] < N) & (kcol[None, :] < K), other=0.0)
    elif PAIRS:
        r = _masked_pairs(w, p_ptr, m, offs_n, kb0, N, KB, valid, BK // 8)
    else:
        r = tl.where(_bits(p_ptr, m, offs_n, kb0, N, KB, valid, BK // 8), w, 0.0)
    return r


@triton.jit
def expand_masks(w_ptr, p_ptr, wm_ptr, N, K, KB, N_MASKS: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """``WM[i] = M_i * W`` for ``i < n_masks``: ``WM (n_masks, N, K)`` in W's dtype, one
    ``BN x BK`` tile of every plane per program (the staged operand of :func:`fwd_mma` and
    :func:`bwd_dx` at prefill sizes)."""
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    kcol = tl.program_id(1) * BK + tl.arange(0, BK)
    tile = (offs_n[:, None] < N) & (kcol[None, :] < K)
    w = tl.load(w_ptr + offs_n[:, None] * K + kcol[None, :], mask=tile, other=0.0)
    for i in tl.static_range(N_MASKS):
        m = tl.where(_bits(p_ptr, i, offs_n, tl.program_id(1) * (BK // 8), N, KB, True, BK // 8), w, 0.0)
        tl.store(wm_ptr + _wide(i) * N * K + offs_n[:, None] * K + kcol[None, :], m, mask=tile)


@triton.jit
def _gate_epilogue(g, total, side, res, aux_ptr, m, offs_t, offs_n, T, N,
                   N_MASKS: tl.constexpr, ACT: tl.constexpr, MODE: tl.constexpr):
    """Mask ``m``'s terms, nothing for ``m >= N_MASKS``; returns ``(res, side)``.

    MODE 0: ``res += act(g) (total - g)``. MODE 2: the same, and the gradient factor
    ``F[m] = act'(g) (total - g) - act(g)`` goes to ``aux`` while ``side`` sums ``act(g)``
    (``F[n_masks]``). MODE 1: ``side`` is ``dout``; ``DS[m] = dout F[m]`` goes to ``aux``
    and ``res += dout act(g)`` (``DS[n_masks]``)."""
    live = m < N_MASKS
    om = (offs_n[:, None] < N) & (offs_t[None, :] < T) & live
    plane = aux_ptr + _wide(m) * T * N + offs_t[None, :] * N + offs_n[:, None]
    if MODE == 0:
        term = act(g, ACT) * (total - g)
    else:
        a, da = act_grad(g, ACT)
        f = da * (total - g) - a
        if MODE == 1:
            tl.store(plane, _narrow(side * f, aux_ptr.dtype.element_ty), mask=om)
            term = side * a
        else:
            tl.store(plane, _narrow(f, aux_ptr.dtype.element_ty), mask=om)
            term = a * (total - g)
            side += tl.where(live, a, 0.0)
    return res + tl.where(live, term, 0.0), side


@triton.jit
def ds_from_factors(f_ptr, dout_ptr, ds_ptr, TN, N_MASKS: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """``DS[i] = dout F[i]`` for ``i <= n_masks`` from the forward's gradient factors
    ``F (n + 1, T, N)`` (MODE 2 of :func:`fwd_mma`), element-wise over the ``TN = T * N``
    positions, in the input dtype."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < TN
    dout = tl.load(dout_ptr + offs, mask=ok, other=0.0).to(ACC)
    for i in range(N_MASKS + 1):
        f = tl.load(f_ptr + _wide(i) * TN + offs, mask=ok, other=0.0).to(ACC)
        tl.store(ds_ptr + _wide(i) * TN + offs, _narrow(dout * f, ds_ptr.dtype.element_ty), mask=ok)


@triton.jit
def fwd_mma(x_ptr, w_ptr, p_ptr, wm_ptr, out_ptr, aux_ptr, T, N, K, KB,
            N_MASKS: tl.constexpr, G: tl.constexpr, ACT: tl.constexpr, MODE: tl.constexpr,
            BN: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr,
            STAGED: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, ACC: tl.constexpr,
            PAIRS: tl.constexpr = False):
    """Tile ``(BN rows of W) x (BT tokens)``; masks in groups of ``G`` (1..4) accumulators.

    ``out_ptr``: ``out (T, N)`` (MODE 0 and 2) or ``DS (n_masks + 1, T, N)`` (MODE 1).
    ``aux_ptr``: ``dout (T, N)`` (MODE 1), ``F (n_masks + 1, T, N)`` to fill with the
    gradient factors (MODE 2), unused in MODE 0.
    ``STAGED``: the masked tiles are read from ``WM`` (:func:`expand_masks`), else built
    from the bits in registers.
    """
    n_tiles = tl.cdiv(N, BN)
    pid_n, pid_t = _grouped(tl.program_id(0), n_tiles, tl.cdiv(T, BT), GROUP)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_t = pid_t * BT + tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    wp = w_ptr + offs_n[:, None] * K
    xp = x_ptr + offs_t[None, :] * K
    total = tl.zeros((BN, BT), ACC)
    res = tl.zeros((BN, BT), ACC)
    # MODE 1: dout; MODE 2: sum_i act(g_i); unused in MODE 0
    side = tl.zeros((BN, BT), ACC)
    # where the epilogue writes each gate's plane: DS (MODE 1), F (MODE 2)
    if MODE == 2:
        planes = aux_ptr
    else:
        planes = out_ptr
    if MODE == 1:
        om = (offs_n[:, None] < N) & (offs_t[None, :] < T)
        side = tl.load(aux_ptr + offs_t[None, :] * N + offs_n[:, None], mask=om, other=0.0).to(ACC)
    for grp in tl.static_range(0, N_MASKS, G):
        g0 = tl.zeros((BN, BT), ACC)
        g1 = tl.zeros((BN, BT), ACC)
        g2 = tl.zeros((BN, BT), ACC)
        g3 = tl.zeros((BN, BT), ACC)
        for k0 in range(0, K, BK):
            kcol = k0 + offs_k
            w = tl.load(wp + kcol[None, :], mask=(offs_n[:, None] < N) & (kcol[None, :] < K), other=0.0)
            xt = tl.load(xp + kcol[:, None], mask=(offs_t[None, :] < T) & (kcol[:, None] < K), other=0.0)
            if grp == 0:
                total = _dot(w, xt, total, PREC, UPCAST)
            kb0 = k0 // 8
            g0 = _dot(_masked(w, wm_ptr, p_ptr, grp, offs_n, kcol, kb0, N, K, KB, True, BK, STAGED, PAIRS),
                      xt, g0, PREC, UPCAST)
            if G > 1:
                g1 = _dot(_masked(w, wm_ptr, p_ptr, grp + 1, offs_n, kcol, kb0, N, K, KB, grp + 1 < N_MASKS, BK,
                                  STAGED, PAIRS),
                      xt, g1, PREC, UPCAST)
            if G > 2:
                g2 = _dot(_masked(w, wm_ptr, p_ptr, grp + 2, offs_n, kcol, kb0, N, K, KB, grp + 2 < N_MASKS, BK,
                                  STAGED, PAIRS),
                      xt, g2, PREC, UPCAST)
            if G > 3:
                g3 = _dot(_masked(w, wm_ptr, p_ptr, grp + 3, offs_n, kcol, kb0, N, K, KB, grp + 3 < N_MASKS, BK,
                                  STAGED, PAIRS),
                      xt, g3, PREC, UPCAST)
        res, side = _gate_epilogue(g0, total, side, res, planes, grp, offs_t, offs_n, T, N, N_MASKS, ACT, MODE)
        if G > 1:
            res, side = _gate_epilogue(g1, total, side, res, planes, grp + 1, offs_t, offs_n, T, N, N_MASKS, ACT, MODE)
        if G > 2:
            res, side = _gate_epilogue(g2, total, side, res, planes, grp + 2, offs_t, offs_n, T, N, N_MASKS, ACT, MODE)
        if G > 3:
            res, side = _gate_epilogue(g3, total, side, res, planes, grp + 3, offs_t, offs_n, T, N, N_MASKS, ACT, MODE)
    om = (offs_n[:, None] < N) & (offs_t[None, :] < T)
    dst = out_ptr + offs_t[None, :] * N + offs_n[:, None]
    if MODE == 1:
        dst += _wide(N_MASKS) * T * N
    if MODE == 2:
        tl.store(aux_ptr + _wide(N_MASKS) * T * N + offs_t[None, :] * N + offs_n[:, None],
                 _narrow(side, aux_ptr.dtype.element_ty), mask=om)
    tl.store(dst, _narrow(res, out_ptr.dtype.element_ty), mask=om)


@triton.jit
def bwd_dx(ds_ptr, w_ptr, p_ptr, wm_ptr, dx_ptr, T, N, K, KB,
           N_MASKS: tl.constexpr, BT: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
           GROUP: tl.constexpr, STAGED: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
           ACC: tl.constexpr):
    """``dx (T, K) = DS[n] @ W + sum_{i < n} DS[i] @ (M_i W)``; tile ``BT x BK``; the masked
    tiles come from ``WM`` (``STAGED``) or from the bits. One flat loop over the ``(n + 1)
    ceil(N / BN)`` (row block, plane) steps, so Triton's pipeliner keeps every step's loads
    in flight (a loop over planes nested in one over rows pipelined only the 5-step inner
    loop at n=4)."""
    pid_t, pid_k = _grouped(tl.program_id(0), tl.cdiv(T, BT), tl.cdiv(K, BK), GROUP)
    offs_t = pid_t * BT + tl.arange(0, BT)
    offs_k = pid_k * BK + tl.arange(0, BK)
    offs_nn = tl.arange(0, BN)
    acc = tl.zeros((BT, BK), ACC)
    for j in range(0, tl.cdiv(N, BN) * (N_MASKS + 1)):
        i = j % (N_MASKS + 1)
        offs_n = (j // (N_MASKS + 1)) * BN + offs_nn
        wm = (offs_n[:, None] < N) & (offs_k[None, :] < K)
        dm = (offs_t[:, None] < T) & (offs_n[None, :] < N)
        ds = tl.load(ds_ptr + _wide(i) * T * N + offs_t[:, None] * N + offs_n[None, :], mask=dm, other=0.0)
        if STAGED:
            # plane n_masks is W itself (M_n = 1)
            src = tl.where(i < N_MASKS, wm_ptr + _wide(i) * N * K, w_ptr)
            masked = tl.load(src + offs_n[:, None] * K + offs_k[None, :], mask=wm, other=0.0)
        else:
            w = tl.load(w_ptr + offs_n[:, None] * K + offs_k[None, :], mask=wm, other=0.0)
            # a (BN, 1) flag, not a scalar: Triton 3.6's interpreter makes a load mask of a
            # scalar int1 broadcast against a tensor int32 ("mask has unsupported dtype")
            live = (offs_n[:, None] * 0 + i) < N_MASKS
            masked = tl.where(_bits(p_ptr, i, offs_n, pid_k * (BK // 8), N, KB, live, BK // 8), w, 0.0)
        acc = _dot(ds, masked, acc, PREC, UPCAST)
    om = (offs_t[:, None] < T) & (offs_k[None, :] < K)
    tl.store(dx_ptr + offs_t[:, None] * K + offs_k[None, :], _narrow(acc, dx_ptr.dtype.element_ty), mask=om)


@triton.jit
def bwd_dw(ds_ptr, x_ptr, w_ptr, p_ptr, dw_ptr, dm_ptr, T, N, K, KB,
           N_MASKS: tl.constexpr, HAS_DM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
           BT: tl.constexpr, GROUP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
           ACC: tl.constexpr):
    """``P_i = DS[i].T @ x``; ``dW = sum_{i <= n} M_i P_i`` (``M_n = 1``); ``dM_i = W P_i``."""
    pid_n, pid_k = _grouped(tl.program_id(0), tl.cdiv(N, BN), tl.cdiv(K, BK), GROUP)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = pid_k * BK + tl.arange(0, BK)
    offs_tt = tl.arange(0, BT)
    tile = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    w = tl.load(w_ptr + offs_n[:, None] * K + offs_k[None, :], mask=tile, other=0.0).to(ACC)
    dw = tl.zeros((BN, BK), ACC)
    for i in range(N_MASKS + 1):
        p = tl.zeros((BN, BK), ACC)
        for t0 in range(0, T, BT):
            offs_t = t0 + offs_tt
            dst = tl.load(ds_ptr + _wide(i) * T * N + offs_t[None, :] * N + offs_n[:, None],
                          mask=(offs_n[:, None] < N) & (offs_t[None, :] < T), other=0.0)
            xt = tl.load(x_ptr + offs_t[:, None] * K + offs_k[None, :],
                         mask=(offs_t[:, None] < T) & (offs_k[None, :] < K), other=0.0)
            p = _dot(dst, xt, p, PREC, UPCAST)
        bits = _bits(p_ptr, i, offs_n, pid_k * (BK // 8), N, KB, i < N_MASKS, BK // 8)
        dw += tl.where(bits, p, 0.0)
        if HAS_DM:
            tl.store(dm_ptr + _wide(i) * N * K + offs_n[:, None] * K + offs_k[None, :],
                     _narrow(w * p, dm_ptr.dtype.element_ty), mask=tile & (i < N_MASKS))
    tl.store(dw_ptr + offs_n[:, None] * K + offs_k[None, :], _narrow(dw, dw_ptr.dtype.element_ty), mask=tile)
