"""NumPy mirrors of the CUDA kernels' index math, checked against the torch backend.

No GPU here: these emulate what mglu_fwd.cu's decode kernel (warp per row, 8-column
chunks, vector and scalar paths), tensor-core kernel (mma.sync m16n8k16 fragment
ownership, pair masks, guards, epilogue mapping) and CUDA-core tiled kernel, and
mglu_bwd.cu's dx and dW/dM kernels (staging, mask words, planes; both also on tensor
cores) compute, in float64, with the same
index expressions as the .cu files, on odd shapes with garbage tail bits. A wrong chunk,
bit, fragment or guard formula shows up as a mismatch. (They cannot catch a divergence
between this mirror and the CUDA text; the device conformance run does.)
"""

import math

import numpy as np
import pytest
import torch

from mglu.backends import torch_backend
from mglu.backends.cuda_backend import launcher
from mglu.masks import pack_masks, packed_width

U = 4  # chunks per lane per round (the value for fp16/bf16 at n_masks <= 8)


def _epilogue(total, gates):
    return sum(torch_backend.ACT["silu"](torch.tensor(g), False)[0].item() * (total - g) for g in gates)


def _byte(m, i, n, g, d_ff, pw):
    return int(m.reshape(-1)[(i * d_ff + n) * pw + g])


def _gemv_chunks(lane, pw, vec, part=0, split=1, lanes=32):
    """(chunk g, its mask bits' shift in the lane's mask register) in the order lane of part
    ``part`` (of ``split`` warps per row; ``lanes`` lanes a row) visits them: rounds r = part
    + split j."""
    if vec == 2:  # 4 consecutive chunks per round, one 32-bit mask word per plane
        assert pw % 4 == 0
        return [(g0 + u, 8 * u) for g0 in range(4 * lane + 4 * lanes * part, pw, 4 * lanes * split) for u in range(4)]
    return [(g0 + lanes * u, 0) for g0 in range(lane + lanes * U * part, pw, lanes * U * split) for u in range(U)
            if g0 + lanes * u < pw]


def emulate_gemv(x, w, m, vec, split=1, lanes=32):
    """mglu_rowdot_gemv with L = ``lanes`` lanes a row (32: VAR_PRED..VAR_SPLIT_OCC; 8:
    VAR_LANES8): split warps per row n (parts p < split take rounds p + split j); vec 1:
    lane l takes chunks g = l + L (U r + u) and a byte per plane; vec 2: chunks g = 4 L r +
    4 l + u, one 32-bit word per plane; vec 0: columns k = l + L r. Each part sums over its
    lanes, part 0 adds the others in part order."""
    tokens, d_model = x.shape
    n_masks, d_ff, pw = m.shape
    out = np.full((tokens, d_ff), np.nan)
    for n in range(d_ff):
        total = np.zeros((split, lanes, tokens))
        gate = np.zeros((split, lanes, tokens, n_masks))
        for part in range(split):
            for lane in range(lanes):
                if vec:
                    for g, sh in _gemv_chunks(lane, pw, vec, part, split, lanes):
                        wf = w[n, 8 * g: 8 * g + 8]
                        if vec == 2:  # u32 index ((i d_ff + n) PW + g0) >> 2 of the packed bytes, little-endian
                            words = m.reshape(-1).view("<u4")
                            mb = [int(words[((i * d_ff + n) * pw + g - sh // 8) >> 2]) for i in range(n_masks)]
                        else:
                            mb = [_byte(m, i, n, g, d_ff, pw) for i in range(n_masks)]
                        for t in range(tokens):
                            xf = x[t, 8 * g: 8 * g + 8]
                            total[part, lane, t] += (wf * xf).sum()
                            for i in range(n_masks):
                                sel = np.array([(mb[i] >> (sh + e)) & 1 for e in range(8)], dtype=bool)
                                gate[part, lane, t, i] += (np.where(sel, wf, 0.0) * xf).sum()
                else:
                    for k in range(lane + lanes * part, d_model, lanes * split):
                        for t in range(tokens):
                            total[part, lane, t] += w[n, k] * x[t, k]
                            for i in range(n_masks):
                                bit = (_byte(m, i, n, k >> 3, d_ff, pw) >> (k & 7)) & 1
                                gate[part, lane, t, i] += (w[n, k] if bit else 0.0) * x[t, k]
        tot, gat = total[0].sum(0), gate[0].sum(0)
        for part in range(1, split):
            tot, gat = tot + total[part].sum(0), gat + gate[part].sum(0)
        for t in range(tokens):
            out[t, n] = _epilogue(tot[t], gat[t])
    return out


def _load8(valid, row, c0, d_model):
    """load8: columns c0 .. c0 + 7 as four (lo, hi) pairs, 0 past d_model or for an invalid row."""
    cols = [row[c] if valid and c < d_model else 0.0 for c in range(c0, c0 + 8)]
    return [(cols[2 * j], cols[2 * j + 1]) for j in range(4)]


def _mma_chunks(d_model, kh, kparts, words):
    """The kernel's k loop for warp kh of kparts sharing a tile: a list of (c0 for lane q =
    0..3, guarded): MMA_WORDS (vec = 2) takes 128-column steps k0 (every kparts-th) up to
    the last multiple of 128, lane q's chunk u at c0 = k0 + 32q + 8u, unguarded; then the
    32-column steps, c0 = k0 + 8q, guarded (load8)."""
    chunks, k_rest = [], 0
    if words:
        assert d_model % 32 == 0
        k_rest = d_model // 128 * 128
        for k0 in range(128 * kh, k_rest, 128 * kparts):
            chunks += [([k0 + 32 * q + 8 * u for q in range(4)], False) for u in range(4)]
    for k0 in range(k_rest + 32 * kh, d_model, 32 * kparts):
        chunks.append(([k0 + 8 * q for q in range(4)], True))
    return chunks


def emulate_mma(x, w, m, layout, words=False):
    """mglu_rowdot_mma: 4 warps per block (layout 0: 2 token x 2 row warps; layout 1: 2 row
    warps x 2 K halves), lane q owns 8 columns c0 .. c0 + 7 of each chunk (_mma_chunks) and
    their mask byte c0 / 8, logical k of mma step s permuted to physical columns as in the
    .cu, D = A B + C per fragment. Unguarded chunks read row 0 for rows past T or d_ff."""
    tokens, d_model = x.shape
    n_masks, d_ff, pw = m.shape
    out = np.full((tokens, d_ff), np.nan)
    kparts = 2 if layout == 1 else 1
    for by in range(math.ceil(tokens / (16 if layout else 32))):
        for bx in range(math.ceil(d_ff / 32)):
            partial = {}
            for warp in range(4):
                kh = (warp >> 1) if layout == 1 else 0
                t_base = by * 16 if layout else by * 32 + (warp >> 1) * 16
                n_base = bx * 32 + (warp & 1) * 16
                if not (t_base < tokens and n_base < d_ff):
                    continue
                acc = np.zeros((n_masks + 1, 2, 32, 4))
                for cols, guarded in _mma_chunks(d_model, kh, kparts, words):
                    for s in range(2):
                        a_mat = np.zeros((16, 16))
                        b_mat = np.zeros((n_masks + 1, 2, 16, 8))
                        for lane in range(32):
                            g, q = lane >> 2, lane & 3
                            c0 = cols[q]
                            gb = c0 >> 3
                            ta, tb = t_base + g, t_base + g + 8
                            va, vb = ta < tokens, tb < tokens
                            ra = _load8(va or not guarded, x[ta if va else 0], c0, d_model)
                            rb = _load8(vb or not guarded, x[tb if vb else 0], c0, d_model)
                            a = [ra[2 * s], rb[2 * s], ra[2 * s + 1], rb[2 * s + 1]]
                            for h in range(2):  # a0 (g, 2q), a1 (g+8, 2q), a2 (g, 2q+8), a3 (g+8, 2q+8)
                                a_mat[g, 2 * q + h], a_mat[g + 8, 2 * q + h] = a[0][h], a[1][h]
                                a_mat[g, 2 * q + 8 + h], a_mat[g + 8, 2 * q + 8 + h] = a[2][h], a[3][h]
                            for j in range(2):
                                n = n_base + 8 * j + g
                                valid = n < d_ff
                                nr = n if valid else 0
                                b = _load8(valid or not guarded, w[nr], c0, d_model)
                                b0, b1 = b[2 * s], b[2 * s + 1]
                                for i in range(n_masks + 1):
                                    byte = 0xFF
                                    if i and guarded:
                                        byte = _byte(m, i - 1, n, gb, d_ff, pw) if valid and gb < pw else 0
                                    elif i:  # byte c0 / 8 - (k0 / 8 + 4q) of the u32 at byte offset k0 / 8 + 4q
                                        byte = _byte(m, i - 1, nr, gb, d_ff, pw)
                                    for h in range(2):  # b0 (k 2q, row g), b1 (k 2q+8, row g)
                                        b_mat[i, j, 2 * q + h, g] = b0[h] if (byte >> (4 * s + h)) & 1 else 0.0
                                        b_mat[i, j, 2 * q + 8 + h, g] = b1[h] if (byte >> (4 * s + 2 + h)) & 1 else 0.0
                        for i in range(n_masks + 1):
                            for j in range(2):
                                d = a_mat @ b_mat[i, j]
                                for lane in range(32):  # c_r (token g + 8 (r/2), row 2q + r%2)
                                    g, q = lane >> 2, lane & 3
                                    for r in range(4):
                                        acc[i, j, lane, r] += d[g + 8 * (r >> 1), 2 * q + (r & 1)]
                partial[warp] = (acc, t_base, n_base)
            for warp, (acc, t_base, n_base) in partial.items():
                if layout == 1 and warp >> 1:
                    continue
                if layout == 1:
                    acc = acc + partial[warp + 2][0]
                for lane in range(32):
                    g, q = lane >> 2, lane & 3
                    for j in range(2):
                        for r in range(4):
                            t, n = t_base + g + 8 * (r >> 1), n_base + 8 * j + 2 * q + (r & 1)
                            if t < tokens and n < d_ff:
                                out[t, n] = _epilogue(acc[0, j, lane, r], acc[1:, j, lane, r])
    return out


def _problem(tokens, d_model, d_ff, n_masks, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, d_model, generator=gen, dtype=torch.float64)
    w = torch.randn(d_ff, d_model, generator=gen, dtype=torch.float64) / math.sqrt(d_model)
    packed = pack_masks(torch.rand(n_masks, d_ff, d_model, generator=gen) < 0.5)
    if d_model % 8:
        packed[..., packed_width(d_model) - 1] |= 0xFF << (d_model % 8) & 0xFF
    expected = torch_backend.forward(x, w, packed, "silu").numpy()
    return x.numpy(), w.numpy(), packed.numpy(), expected


@pytest.mark.parametrize("shape, vec, split", [((2, 264, 5, 2), 1, 1), ((1, 64, 3, 1), 1, 1), ((3, 45, 4, 3), 0, 1),
                                               ((2, 1056, 3, 3), 2, 1), ((1, 32, 2, 2), 2, 1), ((1, 1056, 3, 2), 2, 2),
                                               ((2, 2080, 2, 1), 2, 4), ((1, 45, 3, 2), 0, 4), ((1, 2056, 2, 1), 1, 2)])
def test_decode_kernel_index_math(shape, vec, split):
    x, w, m, expected = _problem(*shape)
    np.testing.assert_allclose(emulate_gemv(x, w, m, vec, split), expected, rtol=1e-12, atol=1e-12)


# 8 lanes a row: 288 = one 32-chunk round and 4 chunks (vec 2), 200 = 25 chunks (vec 1,
# U rounds of 8 lanes with a tail), 77 (vec 0: 8-column strides over a row not of whole chunks)
@pytest.mark.parametrize("shape, vec", [((1, 288, 3, 3), 2), ((2, 200, 3, 2), 1), ((1, 77, 2, 4), 0)])
def test_eight_lane_decode_kernel_index_math(shape, vec):
    x, w, m, expected = _problem(*shape)
    np.testing.assert_allclose(emulate_gemv(x, w, m, vec, lanes=8), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, layout, words", [((37, 45, 41, 2), 0, False), ((17, 72, 33, 3), 0, False),
                                                  ((5, 32, 8, 1), 1, False), ((16, 100, 40, 2), 1, False),
                                                  ((9, 45, 33, 1), 1, False), ((16, 416, 40, 2), 1, True),
                                                  ((19, 288, 33, 2), 0, True), ((3, 96, 9, 1), 1, True)])
def test_tensor_core_kernel_index_math(shape, layout, words):
    x, w, m, expected = _problem(*shape)
    np.testing.assert_allclose(emulate_mma(x, w, m, layout, words), expected, rtol=1e-12, atol=1e-12)


def _word(m, i, n, first_byte, nbytes, d_ff, pw):
    """Bytes first_byte .. first_byte + nbytes - 1 of mask row (i, n) as one word (0 past PW)."""
    word = 0
    for b in range(nbytes):
        if n < d_ff and first_byte + b < pw:
            word |= _byte(m, i, n, first_byte + b, d_ff, pw) << (8 * b)
    return word


def _stage(a, rows, cols):
    """a[rows, cols] with zeros where an index is out of range (the kernels' guarded loads)."""
    out = np.zeros((len(rows), len(cols)))
    for ri, r in enumerate(rows):
        for ci, c in enumerate(cols):
            if r < a.shape[0] and c < a.shape[1]:
                out[ri, ci] = a[r, c]
    return out


def emulate_tiled(x, w, m):
    """mglu_rowdot_tiled: 32 x 32 tiles, K steps of 32, transposed staging, 32-bit mask words."""
    tokens, d_model = x.shape
    n_masks, d_ff, pw = m.shape
    out = np.full((tokens, d_ff), np.nan)
    for by in range(math.ceil(tokens / 32)):
        for bx in range(math.ceil(d_ff / 32)):
            t0, n0 = by * 32, bx * 32
            total, gate = np.zeros((32, 32)), np.zeros((n_masks, 32, 32))
            for k0 in range(0, d_model, 32):
                xs = _stage(x, range(t0, t0 + 32), range(k0, k0 + 32)).T  # [k][token]
                ws = _stage(w, range(n0, n0 + 32), range(k0, k0 + 32)).T  # [k][row]
                ms = np.array([[_word(m, i, n0 + r, k0 >> 3, 4, d_ff, pw) for r in range(32)] for i in range(n_masks)])
                for k in range(32):
                    total += np.outer(xs[k], ws[k])
                    for i in range(n_masks):
                        gate[i] += np.outer(xs[k], np.where((ms[i] >> k) & 1, ws[k], 0.0))
            for ty in range(16):
                for tx in range(16):
                    for a in range(2):
                        for b in range(2):
                            tt, rr = ty + 16 * a, tx + 16 * b
                            if t0 + tt < tokens and n0 + rr < d_ff:
                                out[t0 + tt, n0 + rr] = _epilogue(total[tt, rr], gate[:, tt, rr])
    return out


def kernel_a(x, w, bools, dout):
    """D (n_masks, T, d_ff) and S (T, d_ff): the MODE_BWD epilogue, in float64."""
    total = x @ w.T
    d, s = [], np.zeros_like(total)
    for mask in bools:
        g = x @ np.where(mask, w, 0.0).T
        a, da = (v.numpy() for v in torch_backend.ACT["silu"](torch.from_numpy(g), True))
        d.append(dout * da * (total - g) - dout * a)
        s += dout * a
    return np.array(d), s


def emulate_dx(w, m, dbuf, s):
    """mglu_bwd_dx: 32 tokens x 64 columns, 16-row steps, W tile once, per plane D_p / S."""
    n_masks, d_ff, pw = m.shape
    tokens, d_model = s.shape[0], w.shape[1]
    dx = np.full((tokens, d_model), np.nan)
    for by in range(math.ceil(tokens / 32)):
        for bx in range(math.ceil(d_model / 64)):
            t0, k0 = by * 32, bx * 64
            acc = np.zeros((32, 64))
            for r0 in range(0, d_ff, 16):
                ws = _stage(w, range(r0, r0 + 16), range(k0, k0 + 64))
                for p in range(n_masks + 1):
                    src = dbuf[p] if p < n_masks else s
                    as_ = _stage(src, range(t0, t0 + 32), range(r0, r0 + 16)).T  # [row][token]
                    for r in range(16):
                        if p < n_masks:
                            mw = [_word(m, p, r0 + r, (k0 >> 3) + 4 * h, 4, d_ff, pw) for h in range(2)]
                            bits = np.array([(mw[c >> 5] >> (c & 31)) & 1 for c in range(64)], dtype=bool)
                            wv = np.where(bits, ws[r], 0.0)
                        else:
                            wv = ws[r]
                        acc += np.outer(as_[r], wv)
            for tt in range(32):
                for c in range(64):
                    if t0 + tt < tokens and k0 + c < d_model:
                        dx[t0 + tt, k0 + c] = acc[tt, c]
    return dx


def emulate_dw(x, w, m, dbuf, s):
    """mglu_bwd_dw: 32 rows x 64 columns, per plane P over 16-token steps, dW and dM."""
    n_masks, d_ff, pw = m.shape
    tokens, d_model = x.shape
    dw = np.full((d_ff, d_model), np.nan)
    dm = np.full((n_masks, d_ff, d_model), np.nan)
    for by in range(math.ceil(d_ff / 32)):
        for bx in range(math.ceil(d_model / 64)):
            n0, k0 = by * 32, bx * 64
            wreg = _stage(w, range(n0, n0 + 32), range(k0, k0 + 64))
            dwacc = np.zeros((32, 64))
            for p in range(n_masks + 1):
                src = dbuf[p] if p < n_masks else s
                pacc = np.zeros((32, 64))
                for tb in range(0, tokens, 16):
                    xs = _stage(x, range(tb, tb + 16), range(k0, k0 + 64))
                    ds = _stage(src, range(tb, tb + 16), range(n0, n0 + 32))
                    for r in range(16):
                        pacc += np.outer(ds[r], xs[r])
                for rr in range(32):
                    for c in range(64):
                        n, k = n0 + rr, k0 + c
                        if n >= d_ff or k >= d_model:
                            continue
                        if p < n_masks:
                            bit = (_byte(m, p, n, k >> 3, d_ff, pw) >> (k & 7)) & 1
                            dwacc[rr, c] += pacc[rr, c] if bit else 0.0
                            dm[p, n, k] = wreg[rr, c] * pacc[rr, c]
                        else:
                            dwacc[rr, c] += pacc[rr, c]
            for rr in range(32):
                for c in range(64):
                    if n0 + rr < d_ff and k0 + c < d_model:
                        dw[n0 + rr, k0 + c] = dwacc[rr, c]
    return dw, dm


def _col_pairs(a, col, valid, t0, tokens):
    """col_pairs: (a[t, col], a[t + 1, col]) for t = t0 + 2j, 0 past tokens or if invalid."""
    def get(t):
        return a[t, col] if valid and t < tokens else 0.0
    return [(get(t0 + 2 * j), get(t0 + 2 * j + 1)) for j in range(4)]


def emulate_dw_mma(x, w, m, dbuf, s):
    """mglu_bwd_dw_mma: 2 x 2 warps of 16 rows x 16 columns, M = rows, N = columns, K =
    tokens permuted as in the .cu; per plane P folded into dW and written to dM."""
    n_masks, d_ff, pw = m.shape
    tokens, d_model = x.shape
    dw = np.full((d_ff, d_model), np.nan)
    dm = np.full((n_masks, d_ff, d_model), np.nan)
    for by in range(math.ceil(d_ff / 32)):
        for bx in range(math.ceil(d_model / 32)):
            for warp in range(4):
                n_base, k_base = by * 32 + (warp >> 1) * 16, bx * 32 + (warp & 1) * 16
                if n_base >= d_ff or k_base >= d_model:
                    continue
                dwacc = np.zeros((2, 32, 4))
                for p in range(n_masks + 1):
                    src = dbuf[p] if p < n_masks else s
                    pacc = np.zeros((2, 32, 4))
                    for t0 in range(0, tokens, 32):
                        for st in range(2):
                            a_mat, b_mat = np.zeros((16, 16)), np.zeros((2, 16, 8))
                            for lane in range(32):
                                g, q = lane >> 2, lane & 3
                                tq, na, nb = t0 + 8 * q, n_base + g, n_base + g + 8
                                ra = _col_pairs(src, min(na, d_ff - 1), na < d_ff, tq, tokens)
                                rb = _col_pairs(src, min(nb, d_ff - 1), nb < d_ff, tq, tokens)
                                a = [ra[2 * st], rb[2 * st], ra[2 * st + 1], rb[2 * st + 1]]
                                for h in range(2):
                                    a_mat[g, 2 * q + h], a_mat[g + 8, 2 * q + h] = a[0][h], a[1][h]
                                    a_mat[g, 2 * q + 8 + h], a_mat[g + 8, 2 * q + 8 + h] = a[2][h], a[3][h]
                                for j in range(2):
                                    kc = k_base + 8 * j + g
                                    b = _col_pairs(x, min(kc, d_model - 1), kc < d_model, tq, tokens)
                                    for h in range(2):
                                        b_mat[j, 2 * q + h, g] = b[2 * st][h]
                                        b_mat[j, 2 * q + 8 + h, g] = b[2 * st + 1][h]
                            for j in range(2):
                                d = a_mat @ b_mat[j]
                                for lane in range(32):
                                    g, q = lane >> 2, lane & 3
                                    for r in range(4):
                                        pacc[j, lane, r] += d[g + 8 * (r >> 1), 2 * q + (r & 1)]
                    for lane in range(32):
                        g, q = lane >> 2, lane & 3
                        for j in range(2):
                            for r in range(4):
                                n, k = n_base + g + 8 * (r >> 1), k_base + 8 * j + 2 * q + (r & 1)
                                if n >= d_ff or k >= d_model:
                                    continue
                                if p < n_masks:
                                    bit = (_byte(m, p, n, k >> 3, d_ff, pw) >> (k & 7)) & 1
                                    dwacc[j, lane, r] += pacc[j, lane, r] if bit else 0.0
                                    dm[p, n, k] = w[n, k] * pacc[j, lane, r]
                                else:
                                    dwacc[j, lane, r] += pacc[j, lane, r]
                for lane in range(32):
                    g, q = lane >> 2, lane & 3
                    for j in range(2):
                        for r in range(4):
                            n, k = n_base + g + 8 * (r >> 1), k_base + 8 * j + 2 * q + (r & 1)
                            if n < d_ff and k < d_model:
                                dw[n, k] = dwacc[j, lane, r]
    return dw, dm


def emulate_dx_mma(w, m, dbuf, s):
    """mglu_bwd_dx_mma: 2 x 2 warps of 16 tokens x 16 columns, K = rows of W permuted as in
    the .cu, per plane the D_p rows (A) and the masked W columns (B), one accumulator."""
    n_masks, d_ff, pw = m.shape
    tokens, d_model = s.shape[0], w.shape[1]
    dx = np.full((tokens, d_model), np.nan)
    for by in range(math.ceil(tokens / 32)):
        for bx in range(math.ceil(d_model / 32)):
            for warp in range(4):
                t_base, k_base = by * 32 + (warp >> 1) * 16, bx * 32 + (warp & 1) * 16
                if t_base >= tokens or k_base >= d_model:
                    continue
                acc = np.zeros((2, 32, 4))
                for n0 in range(0, d_ff, 32):
                    for p in range(n_masks + 1):
                        src = dbuf[p] if p < n_masks else s
                        for st in range(2):
                            a_mat, b_mat = np.zeros((16, 16)), np.zeros((2, 16, 8))
                            for lane in range(32):
                                g, q = lane >> 2, lane & 3
                                c0, ta, tb = n0 + 8 * q, t_base + g, t_base + g + 8
                                ra = _load8(ta < tokens, src[min(ta, tokens - 1)], c0, d_ff)
                                rb = _load8(tb < tokens, src[min(tb, tokens - 1)], c0, d_ff)
                                a = [ra[2 * st], rb[2 * st], ra[2 * st + 1], rb[2 * st + 1]]
                                for h in range(2):
                                    a_mat[g, 2 * q + h], a_mat[g + 8, 2 * q + h] = a[0][h], a[1][h]
                                    a_mat[g, 2 * q + 8 + h], a_mat[g + 8, 2 * q + 8 + h] = a[2][h], a[3][h]
                                for j in range(2):
                                    kc = k_base + 8 * j + g
                                    wb = _col_pairs(w, min(kc, d_model - 1), kc < d_model, c0, d_ff)
                                    for hh in (2 * st, 2 * st + 1):
                                        pair = list(wb[hh])
                                        if p < n_masks:
                                            for e in range(2):
                                                n = c0 + 2 * hh + e
                                                bit = (_byte(m, p, n, kc >> 3, d_ff, pw) >> (kc & 7)) & 1 if kc < d_model and n < d_ff else 0
                                                pair[e] = pair[e] if bit else 0.0
                                        base = 2 * q + (8 if hh == 2 * st + 1 else 0)
                                        b_mat[j, base, g], b_mat[j, base + 1, g] = pair
                            for j in range(2):
                                d = a_mat @ b_mat[j]
                                for lane in range(32):
                                    g, q = lane >> 2, lane & 3
                                    for r in range(4):
                                        acc[j, lane, r] += d[g + 8 * (r >> 1), 2 * q + (r & 1)]
                for lane in range(32):
                    g, q = lane >> 2, lane & 3
                    for j in range(2):
                        for r in range(4):
                            t, k = t_base + g + 8 * (r >> 1), k_base + 8 * j + 2 * q + (r & 1)
                            if t < tokens and k < d_model:
                                dx[t, k] = acc[j, lane, r]
    return dx


@pytest.mark.parametrize("shape", [(37, 45, 41, 2), (5, 33, 7, 1)])
def test_tiled_kernel_index_math(shape):
    x, w, m, expected = _problem(*shape)
    np.testing.assert_allclose(emulate_tiled(x, w, m), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(35, 70, 37, 2), (3, 9, 17, 1), (0, 13, 5, 2), (70, 40, 33, 1), (20, 24, 64, 2)])
def test_backward_kernels_index_math(shape):
    x, w, m, _ = _problem(*shape)  # 0 tokens: kernel C alone writes dW = 0 and dM = 0
    tokens, d_ff = x.shape[0], w.shape[0]
    dout = np.random.default_rng(2).standard_normal((tokens, d_ff))
    bools = np.unpackbits(m, axis=-1, bitorder="little")[..., : x.shape[1]].astype(bool)
    dbuf, s = kernel_a(x, w, bools, dout)
    dbuf = dbuf.reshape(m.shape[0], tokens, d_ff)
    ref_dx, ref_dw, ref_dm = (t.numpy() for t in torch_backend.backward(
        torch.from_numpy(dout), torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(m), "silu", torch.float64))
    if tokens:
        np.testing.assert_allclose(emulate_dx(w, m, dbuf, s), ref_dx, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(emulate_dx_mma(w, m, dbuf, s), ref_dx, rtol=1e-11, atol=1e-11)
    for emulate in (emulate_dw, emulate_dw_mma):
        dw, dm = emulate(x, w, m, dbuf, s)
        np.testing.assert_allclose(dw, ref_dw, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(dm, ref_dm, rtol=1e-11, atol=1e-11)


def _prmt_sign(a, sel):
    """prmt.b32 d, a, 0, sel (default mode) for selector nibbles >= 8: byte b's sign bit replicated."""
    out = 0
    for r in range(4):
        nib = (sel >> (4 * r)) & 0xF
        byte = (a >> (8 * (nib & 7))) & 0xFF if nib & 7 < 4 else 0
        out |= (0xFF if (nib & 8 and byte & 0x80) else (0 if nib & 8 else byte)) << (8 * r)
    return out


def test_pair_masks_equal_pair_mask_for_every_byte():
    """pair_masks (multiply + prmt, mglu_common.cuh) against the pair masks by definition, all 256 bytes;
    the multipliers and selectors below are the kernel's own (read from the .cuh)."""
    common = (launcher.HERE / "mglu_common.cuh").read_text()
    assert "const u32 lo = (byte & 0xfu) * 0x10204080u, hi = (byte & 0xf0u) * 0x01020408u;" in common
    assert all(f"pm[{i}] = prmt({src}, {sel}u);" in common
               for i, (src, sel) in enumerate([("lo", "0x9988"), ("lo", "0xbbaa"), ("hi", "0x9988"), ("hi", "0xbbaa")]))
    for byte in range(256):
        lo, hi = ((byte & 0xF) * 0x10204080) & 0xFFFFFFFF, ((byte & 0xF0) * 0x01020408) & 0xFFFFFFFF
        got = [_prmt_sign(lo, 0x9988), _prmt_sign(lo, 0xBBAA), _prmt_sign(hi, 0x9988), _prmt_sign(hi, 0xBBAA)]
        want = [(0xFFFF if (byte >> 2 * j) & 1 else 0) | (0xFFFF0000 if (byte >> (2 * j + 1)) & 1 else 0) for j in range(4)]
        assert got == want, byte
