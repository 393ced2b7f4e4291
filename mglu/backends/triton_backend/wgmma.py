"""Batched-decode forward on Hopper in Gluon (Triton's layout-explicit dialect).

``out (T, N) = sum_i act(gate_i) * (total - gate_i)``, ``total = x @ W.T``, ``gate_i = x
@ (M_i W).T``; ``x (T, K)``, ``W (N, K)`` fp16/bf16, ``P (n_masks, N, K / 8)`` uint8 (bit
``b`` of ``P[i, n, g]`` is ``M_i[n, 8g + b]``). A program owns ``BN = 64`` rows of W and
all ``T <= BT`` tokens, computed transposed (``acc (BN, BT) = W_i @ x.T``) by one warp
group's ``wgmma`` with the masked W tile as the register operand and ``x`` from shared
memory.

Why Gluon: in ``tl`` the masked tile is built in the blocked layout of W's shared-memory
load and moved to the wgmma operand layout through shared memory once per mask and stage
(DESIGN.md, "What Triton's lowering costs the masked tensor-core tile"). Here W is read
from shared memory straight into the operand layout (``ldmatrix``), the mask words are read
into the slice of the same layout viewed as ``(BN, BK / 32, 4, 8)`` (each thread gets the
words of its own elements, one 16-byte read a row), and the select (inline PTX, two
elements a register, :func:`_masked`) runs in that layout, so no tile changes layout
(``convert_layout(..., assert_trivial=True)`` fails the compile if one would).

Pipeline: ``STAGES`` slots of (W tile, x tile, the group's mask tiles) filled by
``cp.async`` (16-byte copies), ``STAGES - 1`` in flight. Masks in groups of ``G <= 4``
accumulators per pass over K (W and x are read once per group). The tile constants and
their measurements are in ``tiles.py`` (``wgmma_tiles``), the regime rule in ``launch.py``
(``wgmma_ok``: it relies on contiguous inputs, base.py's contract, since the row strides
here are ``K``, ``KW`` and ``N``).
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (async_copy, fence_async_shared, warpgroup_mma,
                                                              warpgroup_mma_wait)

from .act import act
from .kernels import PAIRS_CONSTRAINTS

# Gluon's API moved between the device image's triton (3.6) and the CPU machine's (3.9,
# where the CI compiles this file): the cp.async copy and the CTA barrier were renamed
_copy = getattr(async_copy, "async_load", None) or async_copy.async_copy_global_to_shared
_barrier = getattr(gl, "thread_barrier", None) or gl.barrier

#: the pair select (:func:`_masked`): ``$2`` (u) has the low element's bit at the top of byte ``b``,
#: ``$4`` (v) the high element's, ``$6`` the selector that spreads the two sign bits over
#: the two halves (``prmt`` mode "replicate the byte's sign": nibble ``8 + b`` for u,
#: ``0xC + b`` for v); ``$1`` is the register's two elements of W; ``$3``, ``$5``, ``$7``
#: are the high element's copies of u, v and the selector, unused
PRMT_ASM = gl.constexpr("{\n.reg .b32 m;\nprmt.b32 m, $2, $4, $6;\nand.b32 $0, $1, m;\n}")


@gluon.jit
def _issue(w_ptr, x_ptr, p_ptr, w_s, x_s, m_s, slot, k0, n0, grp, T, N, K, KW,
           N_MASKS: gl.constexpr, G: gl.constexpr, BN: gl.constexpr, BT: gl.constexpr, BK: gl.constexpr,
           CP: gl.constexpr, MP: gl.constexpr):
    """Start the copies of stage ``k0`` (W rows ``n0 ..``, every token, the 32-bit mask words
    of planes ``grp .. grp + G``) into ``slot`` and commit them as one group. Rows past ``N`` or ``T`` and
    columns past ``K`` are not read (cp.async zero-fills them)."""
    rn = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, CP))
    rk = k0 + gl.arange(0, BK, layout=gl.SliceLayout(0, CP))
    _copy(w_s.index(slot), w_ptr + rn[:, None].to(gl.int64) * K + rk[None, :],
          mask=(rn[:, None] < N) & (rk[None, :] < K))
    rt = gl.arange(0, BT, layout=gl.SliceLayout(1, CP))
    _copy(x_s.index(slot), x_ptr + rt[:, None] * K + rk[None, :], mask=(rt[:, None] < T) & (rk[None, :] < K))
    BW: gl.constexpr = BK // 32
    mn = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, MP))
    mg = k0 // 32 + gl.arange(0, BW, layout=gl.SliceLayout(0, MP))
    for i in gl.static_range(G):
        if grp + i < N_MASKS:
            plane = p_ptr + (grp + i) * N.to(gl.int64) * KW
            _copy(m_s.index(slot * G + i), plane + mn[:, None] * KW + mg[None, :],
                  mask=(mn[:, None] < N) & (mg[None, :] < KW))
    async_copy.commit_group()


@gluon.jit
def _masked(w, m_s, idx):
    """``where(bit, w, 0)`` in ``w``'s (the wgmma operand's) layout. ``w (BN, BK)`` is viewed
    as ``(BN, BW, 4, 8)`` (32-bit mask word, byte in the word, bit in the byte); the
    ``(BN, BW)`` words of shared-memory tile ``idx`` are read into the slice of that
    layout, so each thread holds the words of its own elements (16 bytes a row).

    A register's two elements are bits ``j, j + 1`` (``j`` even) of one byte (the operand
    layout's ``k_width = 2``; the GPU conformance fails otherwise), so ``u = word << (7 -
    j)`` and ``v = word << (6 - j)``, shared by the word's 4 bytes, put them on top of byte
    ``b``, and one ``prmt`` and an ``and`` a register remain (:data:`PRMT_ASM`). The
    multiply form of kernels.PAIRS_ASM (each element's own byte and bit, two multiplies, a
    ``prmt`` and an ``and`` a register) ran 2-4% slower (MEASUREMENTS_H200.md run 75)."""
    BN: gl.constexpr = w.shape[0]
    BW: gl.constexpr = w.shape[1] // 32
    w4 = w.reshape([BN, BW, 4, 8])
    L4: gl.constexpr = w4.type.layout
    word = m_s.index(idx).load(gl.SliceLayout(2, gl.SliceLayout(3, L4)))[:, :, None, None]
    j = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, L4))))[None, None, None, :]
    b = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, L4))))[None, None, :, None]
    # Gluon has no broadcast_to: adding zeros of the full shape broadcasts (and folds away)
    full = gl.zeros(w4.shape, gl.int32, L4)
    jlo = j & 6
    sel = (0x88 + 0x11 * b) | ((0xCC + 0x11 * b) << 8)
    r4 = gl.inline_asm_elementwise(
        PRMT_ASM, PAIRS_CONSTRAINTS, [w4, (word << (7 - jlo)) + full, (word << (6 - jlo)) + full, sel + full],
        dtype=w.dtype, is_pure=True, pack=2)
    return gl.convert_layout(r4.reshape(w.shape), w.type.layout, assert_trivial=True)


@gluon.jit
def _term(g, total, res, ACT: gl.constexpr):
    return res + act(g, ACT) * (total - g)


@gluon.jit
def fwd_wgmma(x_ptr, w_ptr, p_ptr, out_ptr, T, N, K, KW,
              N_MASKS: gl.constexpr, G: gl.constexpr, ACT: gl.constexpr, BN: gl.constexpr, BT: gl.constexpr,
              BK: gl.constexpr, STAGES: gl.constexpr, WAIT: gl.constexpr):
    """Program ``pid``: ``out[:, 64 pid ..]`` (see the module docstring); 4 warps. ``p_ptr``:
    the packed planes as 32-bit words, ``KW = K / 32`` a row. ``WAIT`` (tiles.WGMMA_WAITS):
    ``"each"`` waits for every wgmma where it is issued; ``"stage"`` issues a stage's wgmmas
    without waiting and waits for them together (every masked tile of the stage live);
    ``"chain"`` keeps one in flight: mask ``i``'s select runs while mask ``i - 1``'s MMA
    does, and two masked tiles are live at most."""
    ASYNC: gl.constexpr = WAIT != "each"
    CHAIN: gl.constexpr = WAIT == "chain"
    BW: gl.constexpr = BK // 32
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BT, 16])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    # copies: 8 16-bit elements (16 bytes) a thread along K; a mask row's BW words a thread
    CP: gl.constexpr = gl.BlockedLayout([1, 8], [32 * 8 // BK, BK // 8], [4, 1], [1, 0])
    MP: gl.constexpr = gl.BlockedLayout([1, BW], [32, 1], [4, 1], [1, 0])
    sh: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    msh: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0])
    dt: gl.constexpr = w_ptr.dtype.element_ty
    w_s = gl.allocate_shared_memory(dt, [STAGES, BN, BK], sh)
    x_s = gl.allocate_shared_memory(dt, [STAGES, BT, BK], sh)
    m_s = gl.allocate_shared_memory(gl.int32, [STAGES * G, BN, BW], msh)
    n0 = gl.program_id(0) * BN
    n_k = gl.cdiv(K, BK)
    total = gl.zeros([BN, BT], gl.float32, mma)
    res = gl.zeros([BN, BT], gl.float32, mma)
    for grp in gl.static_range(0, N_MASKS, G):
        for s in gl.static_range(STAGES - 1):
            _issue(w_ptr, x_ptr, p_ptr, w_s, x_s, m_s, s, s * BK, n0, grp, T, N, K, KW,
                   N_MASKS, G, BN, BT, BK, CP, MP)
        g0 = gl.zeros([BN, BT], gl.float32, mma)
        g1 = gl.zeros([BN, BT], gl.float32, mma)
        g2 = gl.zeros([BN, BT], gl.float32, mma)
        g3 = gl.zeros([BN, BT], gl.float32, mma)
        for kk in range(n_k):
            slot = kk % STAGES
            async_copy.wait_group(STAGES - 2)
            # every thread's copies of this slot done and seen (the barrier); the slot
            # refilled next was read by the previous iteration, which every thread has left;
            # the fence orders the copies before the wgmma's reads of x (the async proxy)
            _barrier()
            _issue(w_ptr, x_ptr, p_ptr, w_s, x_s, m_s, (kk + STAGES - 1) % STAGES, (kk + STAGES - 1) * BK,
                   n0, grp, T, N, K, KW, N_MASKS, G, BN, BT, BK, CP, MP)
            fence_async_shared()
            w = w_s.index(slot).load(a_l)
            xt = x_s.index(slot).permute((1, 0))
            if grp == 0:
                total = warpgroup_mma(w, xt, total, is_async=ASYNC)
            m0 = _masked(w, m_s, slot * G)
            g0 = warpgroup_mma(m0, xt, g0, is_async=ASYNC)
            m1 = m0
            m2 = m0
            m3 = m0
            last = m0
            if grp + 1 < N_MASKS and G > 1:
                m1 = _masked(w, m_s, slot * G + 1)
                g1 = warpgroup_mma(m1, xt, g1, is_async=ASYNC)
                if CHAIN:
                    m0 = warpgroup_mma_wait(1, deps=[m0])
                last = m1
            if grp + 2 < N_MASKS and G > 2:
                m2 = _masked(w, m_s, slot * G + 2)
                g2 = warpgroup_mma(m2, xt, g2, is_async=ASYNC)
                if CHAIN:
                    m1 = warpgroup_mma_wait(1, deps=[m1])
                last = m2
            if grp + 3 < N_MASKS and G > 3:
                m3 = _masked(w, m_s, slot * G + 3)
                g3 = warpgroup_mma(m3, xt, g3, is_async=ASYNC)
                if CHAIN:
                    m2 = warpgroup_mma_wait(1, deps=[m2])
                last = m3
            if CHAIN:
                # only the stage's last masked tile can still be read by a wgmma in flight
                total, g0, g1, g2, g3, w, last = warpgroup_mma_wait(0, deps=[total, g0, g1, g2, g3, w, last])
            elif ASYNC:
                total, g0, g1, g2, g3, w, m0, m1, m2, m3 = warpgroup_mma_wait(
                    0, deps=[total, g0, g1, g2, g3, w, m0, m1, m2, m3])
        # the copies past K (empty, all masked) before the next group reuses the slots
        async_copy.wait_group(0)
        _barrier()
        res = _term(g0, total, res, ACT)
        if grp + 1 < N_MASKS and G > 1:
            res = _term(g1, total, res, ACT)
        if grp + 2 < N_MASKS and G > 2:
            res = _term(g2, total, res, ACT)
        if grp + 3 < N_MASKS and G > 3:
            res = _term(g3, total, res, ACT)
    rn = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, mma))
    rt = gl.arange(0, BT, layout=gl.SliceLayout(0, mma))
    gl.store(out_ptr + rt[None, :] * N + rn[:, None], res.to(out_ptr.dtype.element_ty),
             mask=(rn[:, None] < N) & (rt[None, :] < T))
