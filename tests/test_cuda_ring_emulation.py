"""NumPy mirror of mglu_ring.cu's index math (the cp.async ring kernel), against the torch backend.

out (T, d_ff) = sum_i act(gate_i) (total - gate_i) for T <= 16 tokens. The mirror follows
the kernel step by step in float64: the stages' copies into ring slots of swizzled rows (rows
past d_ff read the last valid one, tokens past T are zero-filled), the prefetch into the slot of the
stage before (every slot starts as NaN: a row read before it is written shows), the
ldmatrix row addresses and the registers they fill, the mask bytes' sign words and pair
masks (ring_signs, ring_pm as bit operations), the mma fragments of each lane, the K
halves' sum and the epilogue's output mapping; with mask lines (mglu_rowdot_ring_lines) the
line slots: 128 swizzled bytes a (plane, row) copied with a line's first stage into slot
line % 2, each stage's chunk read back by the kernel's address. A wrong slot, chunk, clamp,
byte or bit formula shows up as a mismatch; a divergence between this mirror and the CUDA text does
not (the device conformance run catches that).
"""

import math

import numpy as np
import pytest

from mglu.backends.cuda_backend import launcher
from test_cuda_emulation import _epilogue, _problem

RBN, RBK, RLINE = launcher.RING_ROWS, launcher.RING_K, launcher.RING_LINE


def _chunk(r, c):
    """swz<16> of mglu_gemm.cu: the slot chunk of (row r, 16-byte chunk c) in 16-chunk rows."""
    return r * 16 + (c ^ (r & 7))


def _prmt(a, b, sel):
    """prmt.b32 d, a, b, sel (default mode): result byte r from byte (nibble & 7) of {b, a},
    its sign bit replicated when nibble & 8."""
    src = a | (b << 32)
    out = 0
    for r in range(4):
        nib = (sel >> (4 * r)) & 0xF
        byte = (src >> (8 * (nib & 7))) & 0xFF
        out |= ((0xFF if byte & 0x80 else 0) if nib & 8 else byte) << (8 * r)
    return out


def ring_signs(w, q):
    """lo, hi as the kernel's 32-bit shifts leave them (every bit, not only the sign bits)."""
    return (w << (7 - 2 * q)) & 0xFFFFFFFF, (w << (6 - 2 * q)) & 0xFFFFFFFF


def ring_pm(lo, hi, b):
    return _prmt(lo, hi, (8 + b) * 0x11 + (12 + b) * 0x1100)


def _masked(pair, pm):
    return [pair[0] if pm & 0xFFFF else 0.0, pair[1] if pm & 0xFFFF0000 else 0.0]


def emulate_ring(x, w, m, stages, lines=False):
    tokens, d_model = x.shape
    n_masks, d_ff, pw = m.shape
    assert d_model % (RBK * (RLINE if lines else 1)) == 0 and tokens <= 16
    mflat = m.reshape(-1)
    out = np.full((tokens, d_ff), np.nan)
    kt_total = d_model // RBK
    for bx in range(math.ceil(d_ff / RBN)):
        n0 = bx * RBN
        ring = [None] * stages
        # lines: two slots of n_masks * RBN rows of 128 bytes (-1: never written)
        line_slots = np.full((2, n_masks * RBN * 128), -1, dtype=np.int64)
        k_first = bx % (kt_total // RLINE) * RLINE if lines else bx % kt_total

        def load(slot, kt):  # block bx starts at column block k_first and wraps
            k0 = (kt + k_first) % kt_total * RBK
            ws = np.full((RBN * 16, 8), np.nan)
            xs = np.full((16 * 16, 8), np.nan)
            ms = np.zeros((n_masks * RBN, 16), dtype=np.int64)
            for tid in range(launcher.RING_THREADS):  # ring_sources / ring_fill: rows past d_ff clamped
                c, d = tid & 15, _chunk(tid >> 4, tid & 15)  # src.d; row 8j further: 128 j chunks
                for j in range(RBN // 8):
                    r = (tid >> 4) + 8 * j
                    ws[d + 128 * j] = w[min(n0 + r, d_ff - 1), k0 + 8 * c:k0 + 8 * c + 8]
                for j in range(2):  # tokens past T zero-filled
                    t = (tid >> 4) + 8 * j
                    xs[d + 128 * j] = x[t, k0 + 8 * c:k0 + 8 * c + 8] if t < tokens else 0.0
            if not lines:
                for e in range(n_masks * RBN):
                    i, r = e // RBN, e % RBN
                    start = (i * d_ff + min(n0 + r, d_ff - 1)) * pw + k0 // 8
                    ms[e] = mflat[start:start + 16]
            elif kt % RLINE == 0:  # ring_fill_line: thread tid copies chunk tid % 8 of rows tid / 8 (+ 16)
                for tid in range(launcher.RING_THREADS):
                    r, c = tid >> 3, tid & 7
                    for i in range(n_masks):
                        for h in range(2):
                            dst = 128 * r + 16 * (c ^ (r & 7)) + 128 * (i * RBN + 16 * h)
                            start = (i * d_ff + min(n0 + r + 16 * h, d_ff - 1)) * pw + k0 // 8 + 16 * c
                            line_slots[kt // RLINE % 2, dst:dst + 16] = mflat[start:start + 16]
            ring[slot] = (ws, xs, ms)

        for s in range(stages - 1):
            if s < kt_total:
                load(s, s)
        acc = np.zeros((4, n_masks + 1, 2, 32, 4))  # [warp][product][n tile][lane][reg]
        slot = 0
        for kt in range(kt_total):
            nk, ns = kt + stages - 1, (stages - 1 if slot == 0 else slot - 1)
            if nk < kt_total:
                load(ns, nk)
            ws, xs, ms = ring[slot]
            for warp in range(4):
                wr, kh = warp & 1, warp >> 1
                for h in range(2):
                    words = {}
                    for lane in range(32):
                        g, q = lane >> 2, lane & 3
                        for i in range(n_masks):
                            for j in range(2):
                                if lines:  # the kernel's address of the row's chunk kt % RLINE
                                    a = 16 * ((kt % RLINE) ^ g) + 128 * (i * RBN + 16 * wr + 8 * j + g) + 8 * kh
                                    seg = line_slots[kt // RLINE % 2, a - 8 * kh:a - 8 * kh + 16]
                                    assert (seg >= 0).all(), "a line read before it was written"
                                else:
                                    seg = ms[i * RBN + 16 * wr + 8 * j + g]
                                wd = sum(int(seg[8 * kh + 4 * h + b]) << (8 * b) for b in range(4))
                                words[lane, i, j] = ring_signs(wd, q)
                    for e in range(2):
                        c = 8 * kh + 4 * h + 2 * e
                        a_reg = np.zeros((32, 4, 2))
                        b_reg = np.zeros((32, 4, 2))
                        for lane in range(32):  # ldmatrix: lane lj * 8 + l7 names row l7 of matrix lj
                            lj, l7 = lane >> 3, lane & 7
                            a_row, b_row = 8 * (lj & 1) + l7, 16 * wr + 8 * (lj >> 1) + l7
                            arow = xs[_chunk(a_row, c + (lj >> 1))]
                            brow = ws[_chunk(b_row, c + (lj & 1))]
                            for dst in range(32):  # register lj of lane (g, q): row g, elements 2q, 2q + 1
                                if dst >> 2 == l7:
                                    qq = dst & 3
                                    a_reg[dst, lj] = arow[2 * qq:2 * qq + 2]
                                    b_reg[dst, lj] = brow[2 * qq:2 * qq + 2]
                        for j in range(2):
                            for p in range(n_masks + 1):
                                a_mat, b_mat = np.zeros((16, 16)), np.zeros((16, 8))
                                for lane in range(32):
                                    g, q = lane >> 2, lane & 3
                                    b0, b1 = list(b_reg[lane, 2 * j]), list(b_reg[lane, 2 * j + 1])
                                    if p:
                                        lo, hi = words[lane, p - 1, j]
                                        b0, b1 = _masked(b0, ring_pm(lo, hi, 2 * e)), _masked(b1, ring_pm(lo, hi, 2 * e + 1))
                                    a = a_reg[lane]  # a0 (g, 2q), a1 (g+8, 2q), a2 (g, 2q+8), a3 (g+8, 2q+8)
                                    for hh in range(2):
                                        a_mat[g, 2 * q + hh], a_mat[g + 8, 2 * q + hh] = a[0][hh], a[1][hh]
                                        a_mat[g, 2 * q + 8 + hh], a_mat[g + 8, 2 * q + 8 + hh] = a[2][hh], a[3][hh]
                                        b_mat[2 * q + hh, g], b_mat[2 * q + 8 + hh, g] = b0[hh], b1[hh]
                                d = a_mat @ b_mat
                                for lane in range(32):  # c_r (token g + 8 (r/2), row 2q + r%2)
                                    g, q = lane >> 2, lane & 3
                                    for r in range(4):
                                        acc[warp, p, j, lane, r] += d[g + 8 * (r >> 1), 2 * q + (r & 1)]
            slot = 0 if slot + 1 == stages else slot + 1
        for wr in range(2):
            tot = acc[wr] + acc[wr + 2]
            for lane in range(32):
                g, q = lane >> 2, lane & 3
                for j in range(2):
                    for r in range(4):
                        t, n = g + 8 * (r >> 1), n0 + 16 * wr + 8 * j + 2 * q + (r & 1)
                        if t < tokens and n < d_ff:
                            out[t, n] = _epilogue(tot[0, j, lane, r], tot[1:, j, lane, r])
    return out


# d_model 256 = 2 stages (shorter than the ring at 3 and 4 stages: the prologue's empty
# groups), 640 = 5 (the slots wrap); d_ff 40, 33, 17 and 20 end in a partial block;
# 16, 5, 9, 2 and 1 tokens
@pytest.mark.parametrize("shape, stages", [((16, 640, 40, 2), 3), ((5, 256, 33, 1), 4), ((9, 640, 33, 3), 2),
                                           ((16, 384, 32, 1), 4), ((2, 384, 17, 4), 3), ((1, 256, 20, 2), 3)])
def test_ring_kernel_index_math(shape, stages):
    x, w, m, expected = _problem(*shape)
    np.testing.assert_allclose(emulate_ring(x, w, m, stages), expected, rtol=1e-12, atol=1e-12)


# mask lines: d_model 2048 = 2 lines of 8 stages (blocks 0, 2 start at line 0, blocks 1, 3 at
# line 1 and wrap), 3072 = 3 lines (the slots alternate over an odd count); d_ff 100 (4
# blocks, a partial last one); the deepest ring shares no slot with a line still in use
@pytest.mark.parametrize("shape, stages", [((16, 2048, 100, 2), 2), ((3, 3072, 70, 1), 3), ((9, 2048, 40, 4), 4)])
def test_ring_lines_kernel_index_math(shape, stages):
    x, w, m, expected = _problem(*shape)
    np.testing.assert_allclose(emulate_ring(x, w, m, stages, lines=True), expected, rtol=1e-12, atol=1e-12)


def test_ring_pair_masks_for_every_byte_and_lane():
    """ring_signs + ring_pm against the definition: pm[b] of lane q widens bits 2q, 2q + 1 of byte b.
    The mirror's shifts and prmt selector are the kernel's own expressions (read from the .cu,
    so an edit of the kernel's formulas fails here)."""
    ring = (launcher.HERE / "mglu_ring.cu").read_text()
    assert "lo = w << (7 - 2 * q);" in ring and "hi = w << (6 - 2 * q);" in ring
    assert '"r"(lo), "r"(hi), "r"((8u + b) * 0x11u + (12u + b) * 0x1100u)' in ring
    rng = np.random.default_rng(0)
    for word in [int(v) for v in rng.integers(0, 2**32, 64)] + [b * 0x01010101 for b in range(256)]:
        for q in range(4):
            lo, hi = ring_signs(word, q)
            for b in range(4):
                byte = (word >> (8 * b)) & 0xFF
                want = (0xFFFF if (byte >> 2 * q) & 1 else 0) | (0xFFFF0000 if (byte >> (2 * q + 1)) & 1 else 0)
                assert ring_pm(lo, hi, b) == want, (word, q, b)
