"""NumPy mirror of mglu_gemm.cu (the staged-weight GEMM path), checked against the torch backend.

C_p (M, N) = A_p B_p over planes p with per-plane epilogues (forward, backward kernel A, dx,
dW/dM; see mglu_gemm.cu). The mirror follows the kernel's index expressions: grouped block
order, the cp.async tile fill (swizzled 16-byte chunks, zero-filled out of range), the
ldmatrix lane addresses and register distribution (plain and .trans), the m16n8k16 fragment
layout and the epilogue positions, in float64 on shapes with partial M, N and K tiles; at
the kernel's K step and at 32 (the other K step scripts/cuda_gemm_probe.py builds).
"""

import math

import numpy as np
import pytest
import torch

from mglu.backends import torch_backend
from mglu.backends.cuda_backend import launcher
from mglu.masks import pack_masks

BM, BN = launcher.GEMM_TILE
BK = launcher.GEMM_BK
GROUP_M = 8
DOUT_LD = BN + 8
LANE = np.arange(32)
G, Q = LANE >> 2, LANE & 3


def swz(ch, r, c):
    return r * ch + (c ^ ((r >> 1) & 3) if ch == 4 else c ^ (r & 7))


def block_tile(pid, mt, nt):
    """(m tile, n tile) of block ``pid``: GGROUP_M M tiles per N column."""
    group = GROUP_M * nt
    first = pid // group * GROUP_M
    gm = min(mt - first, GROUP_M)
    return first + pid % group % gm, pid % group // gm


def load_tile(g, R, K, r0, k0, krows, bk):
    """The 16-byte chunks of one operand tile as written by load_tile (8 elements each)."""
    e = np.arange(BM * bk // 8)
    sm = np.full((e.size, 8), np.nan)
    if krows:
        k, c = e >> 4, e & 15
        ok, src, dst = (k0 + k < K) & (r0 + 8 * c < R), (k0 + k) * R + r0 + 8 * c, swz(16, k, c)
    else:
        r, c = e // (bk // 8), e % (bk // 8)
        ok, src, dst = (r0 + r < R) & (k0 + 8 * c < K), (r0 + r) * K + k0 + 8 * c, swz(bk // 8, r, c)
    for d, s, v in zip(dst, src, ok):
        sm[d] = g[s: s + 8] if v else 0.0
    assert not np.isnan(sm).any()  # the swizzle is a permutation of the chunks
    return sm


def ldsm4(sm, chunk, trans):
    """ldmatrix .x4: chunk[l] is lane l's row address; -> (32 lanes, 4 registers, 2 halves)."""
    rows = sm[chunk]  # (32, 8)
    out = np.empty((32, 4, 2))
    for j in range(4):
        mat = rows[8 * j: 8 * j + 8]
        for h in range(2):
            out[:, j, h] = mat[G, 2 * Q + h] if not trans else mat[2 * Q + h, G]
    return out


def mma(c, a, b0, b1):
    """mma.sync m16n8k16 on fragments: c (32, 4), a (32, 4, 2), b0 / b1 (32, 2)."""
    A, B = np.zeros((16, 16)), np.zeros((16, 8))
    for h in range(2):
        A[G, 2 * Q + h], A[G + 8, 2 * Q + h] = a[:, 0, h], a[:, 1, h]
        A[G, 2 * Q + 8 + h], A[G + 8, 2 * Q + 8 + h] = a[:, 2, h], a[:, 3, h]
        B[2 * Q + h, G], B[2 * Q + 8 + h, G] = b0[:, h], b1[:, h]
    C = A @ B
    for h in range(2):
        c[:, h] += C[G, 2 * Q + h]
        c[:, 2 + h] += C[G + 8, 2 * Q + h]


def silu(g, grad):
    return [v.numpy() for v in torch_backend.ACT["silu"](torch.from_numpy(np.asarray(g, dtype=np.float64)), grad) if v is not None]


def emulate_gemm(mode, a, b0, b1, P, M, N, K, dout=None, masks=None, w=None, with_dm=True, bk=BK):
    """mglu_gemm<T, mode> with flat float64 operands; returns out (M, N) and, by mode, dbuf / dm."""
    a_krows, b_krows = mode == launcher.GEMM_DW, mode in (launcher.GEMM_DX, launcher.GEMM_DW)
    out = np.full(M * N, np.nan)
    dbuf = np.full((P - 1) * M * N, np.nan)
    dm = np.full((P - 1) * M * N, np.nan)
    mt, nt, kt = -(-M // BM), -(-N // BN), -(-K // bk)
    tiles = {block_tile(pid, mt, nt) for pid in range(mt * nt)}
    assert tiles == {(i, j) for i in range(mt) for j in range(nt)}
    for pid in range(mt * nt):
        tm, tn = block_tile(pid, mt, nt)
        m0, n0 = tm * BM, tn * BN
        if mode in (launcher.GEMM_DS, launcher.GEMM_DW):  # E: dout / W, 128 rows of DOUT_LD elements
            src, esm = dout if mode == launcher.GEMM_DS else w, np.full((BM, DOUT_LD), np.nan)
            for e in range(BM * BN // 8):
                r, c = e // (BN // 8), e % (BN // 8)
                ok = m0 + r < M and n0 + 8 * c < N
                esm[r, 8 * c: 8 * c + 8] = src[(m0 + r) * N + n0 + 8 * c:][:8] if ok else 0.0
            esm = esm.reshape(-1)
        if mode == launcher.GEMM_DW:  # mask bytes [plane][row][BN / 8]
            msm = np.zeros((P - 1) * BM * (BN // 8), dtype=np.uint8)
            for e in range(msm.size):
                i, r, b = e // (BM * (BN // 8)), e // (BN // 8) % BM, e % (BN // 8)
                if m0 + r < M and (n0 >> 3) + b < (N >> 3):
                    msm[e] = masks[(i * M + m0 + r) * (N >> 3) + (n0 >> 3) + b]
        acc = np.zeros((8, 4, 4, 32, 4))  # warp, mi, ni, lane, register
        keep = np.zeros_like(acc)
        tot = {}
        for it in range(P * kt):
            p, k0 = it // kt, it % kt * bk
            ap = a[p * M * K:] if mode in (launcher.GEMM_DX, launcher.GEMM_DW) else a
            bp = b1[(p - 1) * N * K:] if mode != launcher.GEMM_DW and p > 0 else b0
            sa, sb = load_tile(ap, M, K, m0, k0, a_krows, bk), load_tile(bp, N, K, n0, k0, b_krows, bk)
            for warp in range(8):
                wm, wn, j = warp & 1, warp >> 1, LANE >> 3
                # lane offsets (bytes) as the kernel precomputes them: aoff / boff
                l7, ch = LANE & 7, bk // 8
                aoff = [16 * (swz(16, (j >> 1) * 8 + l7, wm * 8 + 2 * i + (j & 1)) if a_krows
                              else swz(ch, wm * 64 + (LANE & 15), 2 * i + (LANE >> 4))) for i in range(4)]
                boff = [16 * (swz(16, (j & 1) * 8 + l7, wn * 4 + 2 * i + (j >> 1)) if b_krows
                              else swz(ch, wn * 32 + (j >> 1) * 8 + l7, 2 * i + (j & 1))) for i in range(4)]
                for ks in range(bk // 16):
                    af = [ldsm4(sa, (aoff[mi] + ks * 16 * 256 if a_krows else aoff[ks] + mi * 16 * ch * 16) // 16,
                                a_krows) for mi in range(4)]
                    bf = [ldsm4(sb, (boff[nj] + ks * 16 * 256 if b_krows else boff[ks] + nj * 16 * ch * 16) // 16,
                                b_krows) for nj in range(2)]
                    for mi in range(4):
                        for ni in range(4):
                            r = bf[ni >> 1]
                            mma(acc[warp, mi, ni], af[mi], r[:, 2 * (ni & 1)], r[:, 2 * (ni & 1) + 1])
            if mode == launcher.GEMM_DX or it % kt != kt - 1:
                continue
            for warp, mi, ni, h in np.ndindex(8, 4, 4, 2):
                wm, wn = warp & 1, warp >> 1
                c, o = acc[warp, mi, ni, :, 2 * h: 2 * h + 2], keep[warp, mi, ni, :, 2 * h: 2 * h + 2]
                rr, cc = wm * 64 + mi * 16 + G + 8 * h, wn * 32 + ni * 8 + 2 * Q
                m, n = m0 + rr, (n0 + cc)[:, None] + np.arange(2)
                ok = ((m < M)[:, None] & (n < N)).all(1)
                key = (warp, mi, ni, h)
                if mode in (launcher.GEMM_FWD, launcher.GEMM_DS):
                    if p == 0:
                        tot[key] = c.copy()
                    elif mode == launcher.GEMM_FWD:
                        o += silu(c, False)[0] * (tot[key] - c)
                    else:
                        idx = (m[:, None] * N + n)[ok]
                        word = (rr * DOUT_LD + cc) >> 1  # the u32 of the tile the kernel reads
                        d = esm[2 * word[:, None] + np.arange(2)][ok]
                        av, dv = silu(c[ok], True)
                        dbuf[(p - 1) * M * N + idx] = d * dv * (tot[key][ok] - c[ok]) - d * av
                        o[ok] += d * av
                elif p == 0:
                    o[:] = c
                else:
                    byte = msm[((p - 1) * BM + rr) * (BN // 8) + (cc >> 3)][ok]
                    bits = byte[:, None] >> ((cc & 7)[ok][:, None] + np.arange(2))
                    o[ok] += np.where(bits & 1, c[ok], 0.0)
                    if with_dm:
                        word = (rr * DOUT_LD + cc) >> 1
                        dm[(((p - 1) * M + m[:, None]) * N + n)[ok]] = esm[2 * word[:, None] + np.arange(2)][ok] * c[ok]
                c[:] = 0.0
        res = acc if mode == launcher.GEMM_DX else keep
        for warp, mi, ni, h in np.ndindex(8, 4, 4, 2):
            wm, wn = warp & 1, warp >> 1
            m = m0 + wm * 64 + mi * 16 + G + 8 * h
            n = (n0 + wn * 32 + ni * 8 + 2 * Q)[:, None] + np.arange(2)
            ok = ((m < M)[:, None] & (n < N)).all(1)
            out[(m[:, None] * N + n)[ok]] = res[warp, mi, ni, :, 2 * h: 2 * h + 2][ok]
    return out.reshape(M, N), dbuf.reshape(P - 1, M, N), dm.reshape(P - 1, M, N)


def emulate_expand(w, packed):
    """mglu_expand: chunk e = n PW + g of W (8 elements), byte e of each plane."""
    d_ff, d_model = w.shape
    flat, chunks = w.reshape(-1, 8), d_ff * (d_model // 8)
    bits = np.unpackbits(packed.reshape(packed.shape[0], chunks, 1), axis=-1, bitorder="little").astype(bool)
    return np.where(bits, flat[None], 0.0).reshape(packed.shape[0], d_ff, d_model)


# T = 130 (2 M tiles in the forward, 5 K steps in dW), d_model 136 (5 K steps, 2 N tiles in
# dx / dW), d_ff 144 (2 N tiles, 5 K steps in dx, 2 M tiles in dW): every tile edge is partial
@pytest.mark.parametrize("tokens, d_model, d_ff, n_masks, bk", [(130, 136, 144, 2, BK), (20, 16, 24, 1, BK),
                                                              (70, 136, 80, 1, 32)])
def test_gemm_path_index_math(tokens, d_model, d_ff, n_masks, bk):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(tokens, d_model, generator=gen, dtype=torch.float64)
    w = torch.randn(d_ff, d_model, generator=gen, dtype=torch.float64) / math.sqrt(d_model)
    dout = torch.randn(tokens, d_ff, generator=gen, dtype=torch.float64)
    packed = pack_masks(torch.rand(n_masks, d_ff, d_model, generator=gen) < 0.5)
    xn, wn, pn, dn = x.numpy(), w.numpy(), packed.numpy(), dout.numpy()
    wm = emulate_expand(wn, pn)
    P = n_masks + 1
    out, _, _ = emulate_gemm(launcher.GEMM_FWD, xn.ravel(), wn.ravel(), wm.ravel(), P, tokens, d_ff, d_model, bk=bk)
    np.testing.assert_allclose(out, torch_backend.forward(x, w, packed, "silu").numpy(), rtol=1e-11, atol=1e-11)

    s, dbuf, _ = emulate_gemm(launcher.GEMM_DS, xn.ravel(), wn.ravel(), wm.ravel(), P, tokens, d_ff, d_model,
                              dout=dn.ravel(), bk=bk)
    ds = np.concatenate([s[None], dbuf]).ravel()
    dx, _, _ = emulate_gemm(launcher.GEMM_DX, ds, wn.ravel(), wm.ravel(), P, tokens, d_model, d_ff, bk=bk)
    dw, _, dm = emulate_gemm(launcher.GEMM_DW, ds, xn.ravel(), None, P, d_ff, d_model, tokens, masks=pn.ravel(),
                             w=wn.ravel(), bk=bk)
    ref_dx, ref_dw, ref_dm = (t.numpy() for t in torch_backend.backward(dout, x, w, packed, "silu", torch.float64))
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(dm, ref_dm, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("mt, nt", [(1, 1), (3, 5), (8, 2), (9, 3), (20, 7), (64, 112)])
def test_grouped_block_order_covers_every_tile_once(mt, nt):
    got = [block_tile(pid, mt, nt) for pid in range(mt * nt)]
    assert sorted(got) == [(i, j) for i in range(mt) for j in range(nt)]
    # consecutive blocks of a full group walk its GROUP_M M tiles first, sharing the B tile
    if mt >= GROUP_M:
        assert got[:GROUP_M] == [(i, 0) for i in range(GROUP_M)]


def test_swizzle_puts_ldmatrix_rows_in_distinct_bank_groups():
    """The 8 rows one ldmatrix matrix reads (same logical chunk) hit 8 distinct 16-byte slots of a
    128-byte line: no bank conflict, for both tile shapes and every chunk."""
    for ch in (4, 8, 16):
        for r0 in range(0, 32 if ch == 16 else 128, 8):
            for c in range(ch):
                slots = {(swz(ch, r, c) * 16) % 128 // 16 for r in range(r0, r0 + 8)}
                assert len(slots) == 8, (ch, r0, c)


def test_constants_match_the_kernel():
    text = (launcher.HERE / "mglu_gemm.cu").read_text()
    # the mirror's swz and block_tile are the kernel's expressions (hand copies otherwise)
    assert "return r * CH + (CH == 4 ? (c ^ ((r >> 1) & 3)) : (c ^ (r & 7)));" in text
    assert ("const int group = GGROUP_M * nt, first = (int)blockIdx.x / group * GGROUP_M;" in text
            and "const int gm = min(mt - first, (int)GGROUP_M), in_group = (int)blockIdx.x % group;" in text
            and "const int m0 = (first + in_group % gm) * GBM, n0 = in_group / gm * GBN;" in text)
    assert (f"enum {{ GBM = {BM}, GBN = {BN}, GBK = {BK}, GSTAGES = {launcher.GEMM_STAGES}, "
            f"GTHREADS = {launcher.GEMM_THREADS}, GGROUP_M = {GROUP_M} }};") in text
    assert "enum { GEMM_FWD = 0, GEMM_DS = 1, GEMM_DX = 2, GEMM_DW = 3 };" in text
    assert (launcher.GEMM_FWD, launcher.GEMM_DS, launcher.GEMM_DX, launcher.GEMM_DW) == (0, 1, 2, 3)
    assert "GDOUT_LD = GBN + 8 };" in text
    ring, tile = launcher.GEMM_STAGES * 2 * BM * BK * 2, BM * DOUT_LD * 2
    for n in (1, 16):
        assert launcher.gemm_smem(launcher.GEMM_DX, n) == ring
        assert launcher.gemm_smem(launcher.GEMM_FWD, n) == ring + 64 * 1024
        assert launcher.gemm_smem(launcher.GEMM_DS, n) == ring + 64 * 1024 + tile <= 227 * 1024
        assert launcher.gemm_smem(launcher.GEMM_DW, n) == ring + tile + n * BM * BN // 8 <= 227 * 1024
