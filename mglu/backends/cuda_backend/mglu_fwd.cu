// Row-dot kernels: for every (token t, row n of W) one read of W and the mask bits gives
//     total[t,n] = sum_k x[t,k] W[n,k],   gate_i[t,n] = sum_k x[t,k] M_i[n,k] W[n,k]
// (n_masks + 1 accumulators), then a fused epilogue:
//   MODE_FWD: out[t,n] = sum_i act(gate_i) * (total - gate_i)                 (T, d_ff)
//   MODE_BWD (backward kernel A), with d = dout[t,n], v_i = total - gate_i:
//     D_i[t,n] = d * act'(gate_i) * v_i - d * act(gate_i)                      (NM, T, d_ff)
//     S[t,n]   = sum_i d * act(gate_i)                                         (T, d_ff)
// D_i and S are rounded to the input dtype, as the torch backend does.
//
// Packed masks (NM, d_ff, PW), PW = ceil(d_model / 8): bit b of byte [i, n, g] is
// M_i[n, 8g + b]. Bits at columns >= d_model are never used.
#include "mglu_common.cuh"

// Forward / kernel-A epilogue for one (t, n), activation id act (mglu_common.cuh); gate[]
// is indexed with compile-time indices only (registers, no local memory).
template <class T, int NM, int MODE, class A>
__device__ __forceinline__ void rowdot_epilogue(int act, A total, const A* gate, i64 t, i64 n, i64 T_, i64 d_ff,
                                                const T* dout, T* out, T* dbuf) {
    if (MODE == MODE_FWD) {
        A o = (A)0;
#pragma unroll
        for (int i = 0; i < NM; ++i) {
            A a, da;
            activation<false>(act, gate[i], a, da);
            o += a * (total - gate[i]);
        }
        out[t * d_ff + n] = Tr<T>::cvt(o);
    } else {
        const A d = Tr<T>::ld(dout, t * d_ff + n);
        A s = (A)0;
#pragma unroll
        for (int i = 0; i < NM; ++i) {
            A a, da;
            activation<true>(act, gate[i], a, da);
            const A dv = d * a;
            dbuf[((i64)i * T_ + t) * d_ff + n] = Tr<T>::cvt(d * da * (total - gate[i]) - dv);
            s += dv;
        }
        out[t * d_ff + n] = Tr<T>::cvt(s);
    }
}

// One 8-element chunk g of a W row (VPC 16-byte words q) against NT tokens of x: total +=
// w . x, gate_i += (M_i w) . x (predicated FMA, fma_if) with the chunk's bits of plane i at
// bits sh .. sh + 7 of mb[i].
template <class T, int NM, int NT, class A>
__device__ __forceinline__ void gemv_chunk(const uint4* q, const u32* mb, int sh, const T* x, i64 g, int T_,
                                           int d_model, A* total, A (*gate)[NM]) {
    enum { VPC = Tr<T>::VPC };
    A wf[8];
    Tr<T>::unpack(q, wf);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        if (t >= T_) break;
        A xf[8];
        uint4 xq[VPC];
        const uint4* xv = reinterpret_cast<const uint4*>(x + (i64)t * d_model);
#pragma unroll
        for (int v = 0; v < VPC; ++v) xq[v] = __ldg(xv + g * VPC + v);
        Tr<T>::unpack(xq, xf);
#pragma unroll
        for (int e = 0; e < 8; ++e) total[t] += wf[e] * xf[e];
#pragma unroll
        for (int i = 0; i < NM; ++i) {
#pragma unroll
            for (int e = 0; e < 8; ++e) fma_if(gate[t][i], mb[i], sh + e, wf[e], xf[e]);
        }
    }
}

// One round of the words path (vec = 2): chunks g0 .. g0 + 3 of the row (VPC 16-byte words
// each) and their mask bytes, one 32-bit word per plane (u32 index ((i d_ff + n) PW + g0) / 4).
template <class T, int NM>
__device__ __forceinline__ void gemv_load_round(const uint4* wv, const u32* mw, i64 g0, i64 n, int d_ff, i64 PW,
                                                uint4 (&q)[4][Tr<T>::VPC], u32 (&mb)[NM]) {
    enum { VPC = Tr<T>::VPC };
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < VPC; ++v) q[u][v] = __ldg(wv + (g0 + u) * VPC + v);
#pragma unroll
    for (int i = 0; i < NM; ++i) mb[i] = __ldg(mw + ((((i64)i * d_ff + n) * PW + g0) >> 2));
}

// Decode (1 .. NT tokens): split warps (VAR_SPLIT, VAR_SPLIT_OCC: the run-time split_arg,
// 2 or 4; else 1) per row n of W, 8
// warps per block: warp w takes row blockIdx.x * (8 / split) + w / split and part
// p = w % split of its rounds. VPC 16-byte loads of W per 8-element chunk (8 fp16/bf16 = one
// LDG.128) and one byte of each mask bit-plane. NT * (NM + 1) accumulators in registers,
// summed over the warp with shuffles; with split > 1 the parts meet in shared memory and
// part 0 adds them in part order (fixed: deterministic); lane t < T runs the epilogue of
// token t. vec picks the path (a round of part p is round r = p + split * j of the row):
//   2 (d_model % 32 == 0, 16-byte aligned x / W, 4-byte aligned masks): lane l takes the 4
//     consecutive chunks g = 128 r + 4 l + u (u < 4), whose mask bytes are one 32-bit load
//     per plane (NM registers, not 4 NM; one load instead of four);
//   1 (d_model % 8 == 0, aligned): lane l takes chunks g = l + 32 (U r + u), a byte per plane;
//   0: the scalar path over k = lane + 32 r.
// VAR_LANES8: L = 8 lanes per row and 32 / L = 4 rows per warp (slot s = lane / L of the
// warp takes row 4 w' + s), WARPS = 4; lane l of a slot then strides by L where a warp
// strides by 32, and the sums take log2(L) shuffles.
// Launch: block (WARPS * 32), grid ceil(d_ff / (WARPS / split * 32 / L)).
template <class T, int NM, int MODE, int NT, int VAR>
__global__ void __launch_bounds__(256, GemvMinBlocks<NM, NT, VAR>::value) mglu_rowdot_gemv(
    const T* __restrict__ x, const T* __restrict__ w, const unsigned char* __restrict__ m,
    const T* __restrict__ dout, T* __restrict__ out, T* __restrict__ dbuf,
    int T_, int d_model, int d_ff, int act, int vec, int split_arg) {
    typedef typename Tr<T>::acc A;
    enum { VPC = Tr<T>::VPC, L = GemvLanes<VAR>::value, RPW = 32 / L, WARPS = L == 32 ? 8 : 4 };
    enum { SPLIT = VAR == VAR_SPLIT || VAR == VAR_SPLIT_OCC };
    // a compile-time 1 unless VAR splits rows: the run-time split costs registers (ptxas,
    // bf16 n_masks 1: 59 against 48, 4 blocks per SM instead of 5)
    const int split = SPLIT ? split_arg : 1;
    // vec = 1: chunks in flight per lane, 64 bytes of W (4 x LDG.128) up to 8 masks, 32
    // bytes above (the mask bytes take U * NM registers); a hardware estimate (DESIGN.md),
    // not swept (the vec = 2 path fixes 4 chunks: one 32-bit mask word per plane)
    enum { U0 = (NM <= 8 ? 4 : 2) / VPC, U = U0 > 0 ? U0 : 1 };
    __shared__ A red[WARPS][NT][NM + 1];  // split > 1: each warp's sums, [warp][token][total, gates]
    const int lane = (threadIdx.x & 31) % L, warp = threadIdx.x >> 5, part = warp % split;
    const i64 n = ((i64)blockIdx.x * (WARPS / split) + warp / split) * RPW + (threadIdx.x & 31) / L;
    const bool active = n < d_ff;
    // split > 1: no return before the barrier below; L < 32: none before the shuffles
    if (split == 1 && L == 32 && !active) return;
    const i64 PW = (d_model + 7) >> 3;
    const T* wrow = w + (active ? n : 0) * d_model;

    A total[NT], gate[NT][NM];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        total[t] = (A)0;
#pragma unroll
        for (int i = 0; i < NM; ++i) gate[t][i] = (A)0;
    }

    const uint4* wv = reinterpret_cast<const uint4*>(wrow);
    if (active && vec == 2) {
        const u32* mw = reinterpret_cast<const u32*>(m);
        for (i64 g0 = 4 * lane + 4 * L * part; g0 < PW; g0 += 4 * L * split) {
            uint4 q[4][VPC];
            u32 mb[NM];
            gemv_load_round<T, NM>(wv, mw, g0, n, d_ff, PW, q, mb);
#pragma unroll
            for (int u = 0; u < 4; ++u) gemv_chunk<T, NM, NT>(q[u], mb, 8 * u, x, g0 + u, T_, d_model, total, gate);
        }
    } else if (active && vec) {
        for (i64 g0 = lane + L * U * part; g0 < PW; g0 += L * U * split) {
            uint4 q[U][VPC];
            u32 mb[U][NM];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const i64 g = g0 + L * u;
                if (g < PW) {
#pragma unroll
                    for (int v = 0; v < VPC; ++v) q[u][v] = __ldg(wv + g * VPC + v);
#pragma unroll
                    for (int i = 0; i < NM; ++i) mb[u][i] = __ldg(m + ((i64)i * d_ff + n) * PW + g);
                } else {
#pragma unroll
                    for (int v = 0; v < VPC; ++v) q[u][v] = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
                    for (int i = 0; i < NM; ++i) mb[u][i] = 0u;
                }
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const i64 g = g0 + L * u;
                if (g >= PW) break;
                gemv_chunk<T, NM, NT>(q[u], mb[u], 0, x, g, T_, d_model, total, gate);
            }
        }
    } else if (active) {
        for (i64 k = lane + L * part; k < d_model; k += L * split) {
            const A wk = Tr<T>::ld(wrow, k);
            u32 mb[NM];
#pragma unroll
            for (int i = 0; i < NM; ++i) mb[i] = __ldg(m + ((i64)i * d_ff + n) * PW + (k >> 3));
            const int e = (int)(k & 7);
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                if (t >= T_) break;
                const A xk = Tr<T>::ld(x, (i64)t * d_model + k);
                total[t] += wk * xk;
#pragma unroll
                for (int i = 0; i < NM; ++i) fma_if(gate[t][i], mb[i], e, wk, xk);
            }
        }
    }

#pragma unroll
    for (int t = 0; t < NT; ++t) {
#pragma unroll
        for (int off = L / 2; off > 0; off >>= 1) {
            total[t] += __shfl_xor_sync(0xffffffffu, total[t], off);
#pragma unroll
            for (int i = 0; i < NM; ++i) gate[t][i] += __shfl_xor_sync(0xffffffffu, gate[t][i], off);
        }
    }
    if (split > 1) {
        if (lane == 0) {
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                red[warp][t][0] = total[t];
#pragma unroll
                for (int i = 0; i < NM; ++i) red[warp][t][i + 1] = gate[t][i];
            }
        }
        __syncthreads();
        if (part != 0 || !active) return;
        for (int p = 1; p < split; ++p) {
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                total[t] += red[warp + p][t][0];
#pragma unroll
                for (int i = 0; i < NM; ++i) gate[t][i] += red[warp + p][t][i + 1];
            }
        }
    } else if (!active) {
        return;
    }
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        if (lane == t && t < T_) rowdot_epilogue<T, NM, MODE>(act, total[t], gate[t], t, n, T_, d_ff, dout, out, dbuf);
    }
}

// Many tokens, CUDA cores: a block of 256 threads computes a 32-token x 32-row tile; thread
// (ty, tx) = (tid / 16, tid % 16) owns tokens ty, ty + 16 and rows tx, tx + 16, each with
// NM + 1 accumulators. K advances by TK = 32 columns: x and W tiles are staged in shared
// memory transposed ([k][token], [k][row], padded by 1 against bank conflicts) and converted
// to the accumulator type; each row's mask bits for the 32 columns are one 32-bit word per
// plane (four packed bytes). Columns >= d_model are staged as 0, so tail bits do not count.
// Launch: block 256, grid (ceil(d_ff / 32), ceil(T / 32)).
template <class T, int NM, int MODE>
__global__ void __launch_bounds__(256, 1) mglu_rowdot_tiled(
    const T* __restrict__ x, const T* __restrict__ w, const unsigned char* __restrict__ m,
    const T* __restrict__ dout, T* __restrict__ out, T* __restrict__ dbuf,
    int T_, int d_model, int d_ff, int act) {
    typedef typename Tr<T>::acc A;
    // 32 x 32 tile, 2 x 2 outputs per thread of 256: the register budget at NM = 16
    // (4 * 17 accumulators); to be tuned on the H100
    enum { BT = 32, BN = 32, TK = 32 };
    static_assert(BT == BN && BN == TK, "the staging loop fills xs and ws with one index pair");
    __shared__ A xs[TK][BT + 1];
    __shared__ A ws[TK][BN + 1];
    __shared__ u32 ms[NM][BN];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const i64 n0 = (i64)blockIdx.x * BN, t0 = (i64)blockIdx.y * BT;
    const i64 PW = (d_model + 7) >> 3;

    A total[2][2], gate[2][2][NM];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b) {
            total[a][b] = (A)0;
#pragma unroll
            for (int i = 0; i < NM; ++i) gate[a][b][i] = (A)0;
        }

    for (i64 k0 = 0; k0 < d_model; k0 += TK) {
        for (int e = tid; e < BT * TK; e += 256) {
            const int r = e / TK, c = e % TK;
            const i64 t = t0 + r, k = k0 + c, nn = n0 + r;
            xs[c][r] = (t < T_ && k < d_model) ? Tr<T>::ld(x, t * d_model + k) : (A)0;
            ws[c][r] = (nn < d_ff && k < d_model) ? Tr<T>::ld(w, nn * d_model + k) : (A)0;
        }
        for (int e = tid; e < NM * BN; e += 256) {
            const int i = e / BN, r = e % BN;
            const i64 nn = n0 + r;
            u32 word = 0u;
            if (nn < d_ff) {
                const unsigned char* row = m + ((i64)i * d_ff + nn) * PW;
#pragma unroll
                for (int b = 0; b < 4; ++b) {
                    const i64 g = (k0 >> 3) + b;
                    if (g < PW) word |= ((u32)__ldg(row + g)) << (8 * b);
                }
            }
            ms[i][r] = word;
        }
        __syncthreads();
        u32 mr[NM][2];
#pragma unroll
        for (int i = 0; i < NM; ++i) {
            mr[i][0] = ms[i][tx];
            mr[i][1] = ms[i][tx + 16];
        }
#pragma unroll 4
        for (int k = 0; k < TK; ++k) {
            const A xv[2] = {xs[k][ty], xs[k][ty + 16]};
            const A wv[2] = {ws[k][tx], ws[k][tx + 16]};
#pragma unroll
            for (int b = 0; b < 2; ++b) {
#pragma unroll
                for (int a = 0; a < 2; ++a) total[a][b] += xv[a] * wv[b];
#pragma unroll
                for (int i = 0; i < NM; ++i) {
                    const A wm = masked(mr[i][b], k, wv[b]);
#pragma unroll
                    for (int a = 0; a < 2; ++a) gate[a][b][i] += xv[a] * wm;
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b) {
            const i64 t = t0 + ty + 16 * a, nn = n0 + tx + 16 * b;
            if (t < T_ && nn < d_ff) rowdot_epilogue<T, NM, MODE>(act, total[a][b], gate[a][b], t, nn, T_, d_ff, dout, out, dbuf);
        }
}

// Tensor cores (fp16/bf16, 5 tokens and more): mma.sync.aligned.m16n8k16, A = 16 tokens x
// 16 k of x, B = 16 k x 8 rows of W (W rows are B's columns, "col" layout), fp32
// accumulators. Fragment ownership (PTX ISA, m16n8k16 .f16/.bf16), g = lane / 4,
// q = lane % 4, each 32-bit register two consecutive logical k (lower k in the low half):
//   A: a0 (g, 2q), a1 (g + 8, 2q), a2 (g, 2q + 8), a3 (g + 8, 2q + 8)      (token, k)
//   B: b0 (k 2q, row g), b1 (k 2q + 8, row g)
//   C: c0, c1 (token g, rows 2q, 2q + 1), c2, c3 (token g + 8, same rows)
// A product sums over k, so any permutation of k applied to A and B alike is free. We take
// 32 columns per step and give lane q the 8 physical columns c0 = k0 + 8q .. c0 + 7: one
// 16-byte load of W per row (as in the decode kernel), one of x per token, and exactly one
// byte of each mask plane. Logical k of mma step s (0, 1) maps to physical columns
//   (2q, 2q + 1) -> c0 + 4s + (0, 1),   (2q + 8, 2q + 9) -> c0 + 4s + (2, 3),
// the same for A and B (a function of k and s only), so register j of the lane's 8 columns
// (pair j = columns c0 + 2j, 2j + 1) is b0 (j = 2s) or b1 (j = 2s + 1) of step s.
// The masked fragment M_i * W is the register AND the pair mask of bits 2j, 2j + 1 of the
// byte, widened to 0xffff halves by multiply + prmt (pair_masks in mglu_common.cuh).
// n_masks + 1 mma per (A, B) fragment pair: total, every gate_i. VAR: MMA_PRMT, or
// MMA_WORDS / MMA_WORDS_OCC (128-column steps with 32-bit mask words where vec = 2, see
// the loop; _OCC under the register cap of MmaMinBlocks).
//
// Block: 4 warps, each 16 tokens x 16 rows (two n8 tiles), 8 (NM + 1) accumulators.
//   layout 0: warps 2 (tokens) x 2 (rows): 32 tokens x 32 rows, grid (ceil(d_ff/32), ceil(T/32)).
//   layout 1 (T <= 16, decode): warps 2 (rows) x 2 (K halves, 32-column steps alternating):
//     16 tokens x 32 rows, grid (ceil(d_ff/32), ceil(T/16)); the second half's partial sums
//     go through shared memory and are added to the first's (fixed order: deterministic).
// Fragments come straight from global memory (L1 serves the warps sharing an x or W tile).
// vec = 0 (d_model % 8 != 0 or unaligned bases) loads 16-bit elements one by one; vec = 1
// and 2 use 16-byte loads (2: 4-byte aligned mask rows of d_model / 8 bytes, d_model % 32 == 0).
template <class T, int NM, int MODE, int VAR>
__global__ void __launch_bounds__(128, MmaMinBlocks<NM, VAR>::value) mglu_rowdot_mma(
    const T* __restrict__ x, const T* __restrict__ w, const unsigned char* __restrict__ m,
    const T* __restrict__ dout, T* __restrict__ out, T* __restrict__ dbuf,
    int T_, int d_model, int d_ff, int act, int vec, int layout) {
    __shared__ float red[2][NM + 1][2][4][32];  // layout 1: [row warp][product][n tile][reg][lane]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, q = lane & 3;
    const bool split = layout == 1;
    const int kh = split ? (warp >> 1) : 0;
    const i64 t_base = split ? (i64)blockIdx.y * 16 : (i64)blockIdx.y * 32 + (warp >> 1) * 16;
    const i64 n_base = (i64)blockIdx.x * 32 + (warp & 1) * 16;
    const bool active = t_base < T_ && n_base < d_ff;  // no return before the barrier below
    const i64 PW = (d_model + 7) >> 3;
    const i64 ta = t_base + g, tb = t_base + g + 8;
    const bool va = ta < T_, vb = tb < T_;
    const T* xa = x + (va ? ta : 0) * d_model;
    const T* xb = x + (vb ? tb : 0) * d_model;
    bool vn[2];
    const T* wr[2];
    const unsigned char* mr[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        const i64 n = n_base + 8 * j + g;
        vn[j] = n < d_ff;
        wr[j] = w + (vn[j] ? n : 0) * d_model;
        mr[j] = m + (vn[j] ? n : 0) * PW;
    }

    float acc[NM + 1][2][4];
#pragma unroll
    for (int p = 0; p <= NM; ++p)
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[p][j][r] = 0.f;

    // MMA_WORDS, vec = 2 (d_model % 32 == 0, aligned rows and mask words): 128-column steps
    // (alternating between the K halves in layout 1) up to the last multiple of 128, then
    // the 32-column steps below. Lane q owns the 4 chunks u of columns k0 + 32q + 8u .. + 7
    // (chunk u plays the part of a 32-column step's k0 + 8q: the permutation of k stays the
    // same for A and B) and their mask bytes, byte u of one 32-bit word per plane and row.
    // Rows past T or d_ff read row 0 (clamped pointers): their products land only in
    // outputs that are not written, so the step needs no guards.
    i64 k_rest = 0;
    if ((VAR == MMA_WORDS || VAR == MMA_WORDS_OCC) && vec == 2) {
        const i64 k_full = (i64)(d_model / 128) * 128;
        for (i64 k0 = active ? 128 * kh : k_full; k0 < k_full; k0 += split ? 256 : 128) {
            const i64 cq = k0 + 32 * q;
            uint4 xa4[4], xb4[4], w4[2][4];
            u32 mw[2][NM];
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                xa4[u] = __ldg(reinterpret_cast<const uint4*>(xa + cq + 8 * u));
                xb4[u] = __ldg(reinterpret_cast<const uint4*>(xb + cq + 8 * u));
            }
#pragma unroll
            for (int j = 0; j < 2; ++j) {
#pragma unroll
                for (int u = 0; u < 4; ++u) w4[j][u] = __ldg(reinterpret_cast<const uint4*>(wr[j] + cq + 8 * u));
#pragma unroll
                for (int i = 0; i < NM; ++i)
                    mw[j][i] = __ldg(reinterpret_cast<const u32*>(mr[j] + (i64)i * d_ff * PW + (k0 >> 3) + 4 * q));
            }
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const u32 a0[4] = {xa4[u].x, xb4[u].x, xa4[u].y, xb4[u].y};
                const u32 a1[4] = {xa4[u].z, xb4[u].z, xa4[u].w, xb4[u].w};
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    const uint4 b = w4[j][u];
                    mma16816<T>(acc[0][j], a0, b.x, b.y);
                    mma16816<T>(acc[0][j], a1, b.z, b.w);
#pragma unroll
                    for (int i = 0; i < NM; ++i) {
                        u32 pm[4];
                        pair_masks((mw[j][i] >> (8 * u)) & 0xffu, pm);
                        mma16816<T>(acc[i + 1][j], a0, b.x & pm[0], b.y & pm[1]);
                        mma16816<T>(acc[i + 1][j], a1, b.z & pm[2], b.w & pm[3]);
                    }
                }
            }
        }
        k_rest = k_full;
    }
    const i64 kstep = split ? 64 : 32;
    for (i64 k0 = active ? k_rest + 32 * kh : d_model; k0 < d_model; k0 += kstep) {
        const i64 c0 = k0 + 8 * q, gb = (k0 >> 3) + q;
        u32 ra[4], rb[4];
        load8(va, xa, c0, d_model, vec, ra);
        load8(vb, xb, c0, d_model, vec, rb);
        const u32 a0[4] = {ra[0], rb[0], ra[1], rb[1]};
        const u32 a1[4] = {ra[2], rb[2], ra[3], rb[3]};
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            u32 b[4];
            load8(vn[j], wr[j], c0, d_model, vec, b);
            mma16816<T>(acc[0][j], a0, b[0], b[1]);
            mma16816<T>(acc[0][j], a1, b[2], b[3]);
#pragma unroll
            for (int i = 0; i < NM; ++i) {
                const u32 byte = (vn[j] && gb < PW) ? (u32)__ldg(mr[j] + (i64)i * d_ff * PW + gb) : 0u;
                u32 pm[4];
                pair_masks(byte, pm);
                mma16816<T>(acc[i + 1][j], a0, b[0] & pm[0], b[1] & pm[1]);
                mma16816<T>(acc[i + 1][j], a1, b[2] & pm[2], b[3] & pm[3]);
            }
        }
    }

    if (split) {
        if (kh == 1 && active) {
#pragma unroll
            for (int p = 0; p <= NM; ++p)
#pragma unroll
                for (int j = 0; j < 2; ++j)
#pragma unroll
                    for (int r = 0; r < 4; ++r) red[warp & 1][p][j][r][lane] = acc[p][j][r];
        }
        __syncthreads();
        if (kh == 1) return;
        if (active) {
#pragma unroll
            for (int p = 0; p <= NM; ++p)
#pragma unroll
                for (int j = 0; j < 2; ++j)
#pragma unroll
                    for (int r = 0; r < 4; ++r) acc[p][j][r] += red[warp & 1][p][j][r][lane];
        }
    }
    if (!active) return;

#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const i64 t = t_base + g + 8 * (r >> 1), n = n_base + 8 * j + 2 * q + (r & 1);
            if (t < T_ && n < d_ff) {
                float gate[NM];
#pragma unroll
                for (int i = 0; i < NM; ++i) gate[i] = acc[i + 1][j][r];
                rowdot_epilogue<T, NM, MODE>(act, acc[0][j][r], gate, t, n, T_, d_ff, dout, out, dbuf);
            }
        }
}
