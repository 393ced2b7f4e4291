// Backward kernels B and C (SPEC §3). Kernel A (D_i, S) is mglu_rowdot_* in MODE_BWD.
//   B: dx[t,k]   = sum_i sum_n D_i[t,n] M_i[n,k] W[n,k] + sum_n S[t,n] W[n,k]       (T, d_model)
//   C: P_i[n,k]  = sum_t D_i[t,n] x[t,k],   Q[n,k] = sum_t S[t,n] x[t,k]
//      dW[n,k]   = sum_i M_i[n,k] P_i[n,k] + Q[n,k]                                  (d_ff, d_model)
//      dM_i[n,k] = W[n,k] P_i[n,k]   (only when dm != 0; dtype TM)                   (NM, d_ff, d_model)
// D is (NM, T, d_ff) and S (T, d_ff), both in the input dtype; plane p = NM below means S
// (with the unmasked W). n_masks is a run-time argument: each output keeps one accumulator
// (B) or two (C), whatever the number of masks. Every output is summed by one thread in a
// fixed order: runs are bitwise reproducible (no atomics).
#include "mglu_common.cuh"

// Kernel B. Block 256 = (ty, tx) 16 x 16 computes a 32-token x 64-column tile of dx; thread
// owns tokens ty, ty + 16 and columns tx + 16 j (j < 4). The reduction over d_ff advances
// by BR = 16 rows: the W tile (16 x 64) is staged once, then for each plane p the
// D_p / S tile (transposed, [row][token]) and the rows' mask bits for the 64 columns.
// Launch: block 256, grid (ceil(d_model / 64), ceil(T / 32)).
template <class T>
__global__ void __launch_bounds__(256, 1) mglu_bwd_dx(
    const T* __restrict__ w, const unsigned char* __restrict__ m, const T* __restrict__ dbuf,
    const T* __restrict__ s, T* __restrict__ dx, int n_masks, int T_, int d_model, int d_ff) {
    typedef typename Tr<T>::acc A;
    // 32 x 64 output tile, 8 outputs per thread, 16-row reduction step; to be tuned on the H100
    enum { BT = 32, BK = 64, BR = 16 };
    __shared__ A ws[BR][BK];
    __shared__ A as[BR][BT + 1];
    __shared__ u32 mw[BR][BK / 32];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const i64 k0 = (i64)blockIdx.x * BK, t0 = (i64)blockIdx.y * BT;
    const i64 PW = (d_model + 7) >> 3;

    A acc[2][4];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[a][j] = (A)0;

    for (i64 r0 = 0; r0 < d_ff; r0 += BR) {
        for (int e = tid; e < BR * BK; e += 256) {
            const int r = e / BK, c = e % BK;
            const i64 n = r0 + r, k = k0 + c;
            ws[r][c] = (n < d_ff && k < d_model) ? Tr<T>::ld(w, n * d_model + k) : (A)0;
        }
        for (int p = 0; p <= n_masks; ++p) {
            const T* src = p < n_masks ? dbuf + (i64)p * T_ * d_ff : s;
            for (int e = tid; e < BT * BR; e += 256) {
                const int r = e / BR, c = e % BR;
                const i64 t = t0 + r, n = r0 + c;
                as[c][r] = (t < T_ && n < d_ff) ? Tr<T>::ld(src, t * d_ff + n) : (A)0;
            }
            if (p < n_masks && tid < BR * (BK / 32)) {
                const int r = tid / (BK / 32), h = tid % (BK / 32);
                const i64 n = r0 + r;
                u32 word = 0u;
                if (n < d_ff) {
                    const unsigned char* row = m + ((i64)p * d_ff + n) * PW;
#pragma unroll
                    for (int b = 0; b < 4; ++b) {
                        const i64 g = (k0 >> 3) + 4 * h + b;
                        if (g < PW) word |= ((u32)__ldg(row + g)) << (8 * b);
                    }
                }
                mw[r][h] = word;
            }
            __syncthreads();
#pragma unroll 4
            for (int r = 0; r < BR; ++r) {
                const A av[2] = {as[r][ty], as[r][ty + 16]};
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int c = tx + 16 * j;
                    const A wv = p < n_masks ? masked(mw[r][c >> 5], c & 31, ws[r][c]) : ws[r][c];
#pragma unroll
                    for (int a = 0; a < 2; ++a) acc[a][j] += av[a] * wv;
                }
            }
            __syncthreads();
        }
    }

#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 t = t0 + ty + 16 * a, k = k0 + tx + 16 * j;
            if (t < T_ && k < d_model) dx[t * d_model + k] = Tr<T>::cvt(acc[a][j]);
        }
}

// Kernel C's fold of plane p at (n, k), for both its kernels: dW += M_p[n,k] P_p[n,k] (S, p
// = n_masks, unmasked) and dM_p[n,k] = W[n,k] P_p[n,k] when dm is given.
template <class TM, class A>
__device__ __forceinline__ void fold_plane(const unsigned char* m, TM* dm, int p, int n_masks, i64 n, i64 k, i64 PW,
                                           int d_ff, int d_model, A wv, A pv, A& dwacc) {
    if (p < n_masks) {
        const u32 byte = __ldg(m + ((i64)p * d_ff + n) * PW + (k >> 3));
        dwacc += masked(byte, (int)(k & 7), pv);
        if (dm) dm[((i64)p * d_ff + n) * d_model + k] = Tr<TM>::cvt(wv * pv);
    } else {
        dwacc += pv;
    }
}

// Kernel C. Block 256 = (ty, tx) 16 x 16 computes a 32-row x 64-column tile of dW (and of
// each dM_i); thread owns rows ty, ty + 16 and columns tx + 16 j (j < 4). For each plane
// p = 0 .. NM the tokens are reduced in steps of BT = 16 (x tile [token][col], D_p / S tile
// [token][row] in shared memory) into P; then dW += M_p ? P : 0 (p < NM), dW += P (p = NM),
// dM_p = W * P written straight from the accumulator. T = 0 writes zeros.
// Launch: block 256, grid (ceil(d_model / 64), ceil(d_ff / 32)).
template <class T, class TM>
__global__ void __launch_bounds__(256, 1) mglu_bwd_dw(
    const T* __restrict__ x, const T* __restrict__ w, const unsigned char* __restrict__ m,
    const T* __restrict__ dbuf, const T* __restrict__ s, T* __restrict__ dw, TM* __restrict__ dm,
    int n_masks, int T_, int d_model, int d_ff) {
    typedef typename Tr<T>::acc A;
    // 32 x 64 output tile, 8 outputs per thread, 16-token reduction step; to be tuned on the H100
    enum { BN = 32, BK = 64, BT = 16 };
    __shared__ A xs[BT][BK];
    __shared__ A ds[BT][BN];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const i64 k0 = (i64)blockIdx.x * BK, n0 = (i64)blockIdx.y * BN;
    const i64 PW = (d_model + 7) >> 3;

    A wreg[2][4], dwacc[2][4];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 n = n0 + ty + 16 * a, k = k0 + tx + 16 * j;
            wreg[a][j] = (n < d_ff && k < d_model) ? Tr<T>::ld(w, n * d_model + k) : (A)0;
            dwacc[a][j] = (A)0;
        }

    for (int p = 0; p <= n_masks; ++p) {
        const T* src = p < n_masks ? dbuf + (i64)p * T_ * d_ff : s;
        A pacc[2][4];
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
            for (int j = 0; j < 4; ++j) pacc[a][j] = (A)0;
        for (i64 tb = 0; tb < T_; tb += BT) {
            for (int e = tid; e < BT * BK; e += 256) {
                const int r = e / BK, c = e % BK;
                const i64 t = tb + r, k = k0 + c;
                xs[r][c] = (t < T_ && k < d_model) ? Tr<T>::ld(x, t * d_model + k) : (A)0;
            }
            for (int e = tid; e < BT * BN; e += 256) {
                const int r = e / BN, c = e % BN;
                const i64 t = tb + r, n = n0 + c;
                ds[r][c] = (t < T_ && n < d_ff) ? Tr<T>::ld(src, t * d_ff + n) : (A)0;
            }
            __syncthreads();
#pragma unroll 4
            for (int r = 0; r < BT; ++r) {
                const A dv[2] = {ds[r][ty], ds[r][ty + 16]};
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const A xv = xs[r][tx + 16 * j];
#pragma unroll
                    for (int a = 0; a < 2; ++a) pacc[a][j] += dv[a] * xv;
                }
            }
            __syncthreads();
        }
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const i64 n = n0 + ty + 16 * a, k = k0 + tx + 16 * j;
                if (n >= d_ff || k >= d_model) continue;
                fold_plane(m, dm, p, n_masks, n, k, PW, d_ff, d_model, wreg[a][j], pacc[a][j], dwacc[a][j]);
            }
    }

#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 n = n0 + ty + 16 * a, k = k0 + tx + 16 * j;
            if (n < d_ff && k < d_model) dw[n * d_model + k] = Tr<T>::cvt(dwacc[a][j]);
        }
}

// Column pairs: elements (t, col) and (t + 1, col) of a row-major (rows, ld) 16-bit matrix
// for t = t0 + 2j (j < 4) as four registers (row t in the low half); 0 past T_ or for an
// invalid column.
template <class T>
__device__ __forceinline__ void col_pairs(const T* a, i64 ld, i64 col, bool valid, i64 t0, int T_, u32* r) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const i64 t = t0 + 2 * j;
        const u32 lo = (valid && t < T_) ? (u32)__ldg(&a[t * ld + col].bits) : 0u;
        const u32 hi = (valid && t + 1 < T_) ? (u32)__ldg(&a[(t + 1) * ld + col].bits) : 0u;
        r[j] = lo | (hi << 16);
    }
}

// Kernel C on tensor cores (fp16/bf16): P_p = D_p.T @ x as mma.sync m16n8k16 with
// M = 16 rows n of dW, N = 8 columns k, K = 16 tokens; the same permuted-k scheme as
// mglu_rowdot_mma (lane q owns the 8 physical tokens t0 + 8q .. + 7 of a 32-token step;
// logical (2q, 2q+1) of mma step s -> tokens t0 + 8q + 4s + (0, 1), (2q+8, 2q+9) -> + (2, 3)).
// Both operands are read down columns (D_p[t][n], x[t][k]): 16-bit loads, one per token.
// Per plane p the P accumulators (fp32) are folded into dW (masked by M_p, or unmasked for
// S) and dM_p = W * P is written from them, as in mglu_bwd_dw.
// Block: 4 warps (2 x 2), 32 rows x 32 columns; warp: 16 rows x 16 columns (two n8 tiles).
// Launch: block 128, grid (ceil(d_model / 32), ceil(d_ff / 32)).
template <class T, class TM>
__global__ void __launch_bounds__(128, 1) mglu_bwd_dw_mma(
    const T* __restrict__ x, const T* __restrict__ w, const unsigned char* __restrict__ m,
    const T* __restrict__ dbuf, const T* __restrict__ s, T* __restrict__ dw, TM* __restrict__ dm,
    int n_masks, int T_, int d_model, int d_ff) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, q = lane & 3;
    const i64 n_base = (i64)blockIdx.y * 32 + (warp >> 1) * 16;
    const i64 k_base = (i64)blockIdx.x * 32 + (warp & 1) * 16;
    if (n_base >= d_ff || k_base >= d_model) return;  // the whole warp: no block barrier here
    const i64 PW = (d_model + 7) >> 3;
    const i64 na = n_base + g, nb = n_base + g + 8;

    float wreg[2][4], dwacc[2][4];
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const i64 n = n_base + g + 8 * (r >> 1), k = k_base + 8 * j + 2 * q + (r & 1);
            wreg[j][r] = (n < d_ff && k < d_model) ? Tr<T>::ld(w, n * d_model + k) : 0.f;
            dwacc[j][r] = 0.f;
        }

    for (int p = 0; p <= n_masks; ++p) {
        const T* src = p < n_masks ? dbuf + (i64)p * T_ * d_ff : s;
        float pacc[2][4];
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) pacc[j][r] = 0.f;
        for (i64 t0 = 0; t0 < T_; t0 += 32) {
            const i64 tq = t0 + 8 * q;
            u32 ra[4], rb[4];
            col_pairs(src, d_ff, na, na < d_ff, tq, T_, ra);
            col_pairs(src, d_ff, nb, nb < d_ff, tq, T_, rb);
            const u32 a0[4] = {ra[0], rb[0], ra[1], rb[1]};
            const u32 a1[4] = {ra[2], rb[2], ra[3], rb[3]};
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const i64 kc = k_base + 8 * j + g;
                u32 b[4];
                col_pairs(x, d_model, kc, kc < d_model, tq, T_, b);
                mma16816<T>(pacc[j], a0, b[0], b[1]);
                mma16816<T>(pacc[j], a1, b[2], b[3]);
            }
        }
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const i64 n = n_base + g + 8 * (r >> 1), k = k_base + 8 * j + 2 * q + (r & 1);
                if (n >= d_ff || k >= d_model) continue;
                fold_plane(m, dm, p, n_masks, n, k, PW, d_ff, d_model, wreg[j][r], pacc[j][r], dwacc[j][r]);
            }
    }

#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const i64 n = n_base + g + 8 * (r >> 1), k = k_base + 8 * j + 2 * q + (r & 1);
            if (n < d_ff && k < d_model) dw[n * d_model + k] = Tr<T>::cvt(dwacc[j][r]);
        }
}

// Kernel B on tensor cores (fp16/bf16): dx = sum_p D_p @ (M_p W) + S @ W as mma.sync
// m16n8k16 with M = 16 tokens, N = 8 columns k, K = 16 rows n of W, rows permuted per lane
// as in mglu_rowdot_mma (lane q owns rows n0 + 8q .. + 7 of a 32-row step). A = D_p rows:
// one 16-byte load per token row (vec: d_ff % 8 == 0, aligned). B = (M_p W)[n][k] read down
// a column: 16-bit loads of W, one per row, shared by the planes; per plane the bit of each
// of the 8 rows (one byte per row, bit k % 8) widened over its half of the pair register.
// One fp32 accumulator per output for all planes, summed in a fixed order.
// Block: 4 warps (2 x 2), 32 tokens x 32 columns; warp: 16 tokens x 16 columns.
// Launch: block 128, grid (ceil(d_model / 32), ceil(T / 32)).
template <class T>
__global__ void __launch_bounds__(128, 1) mglu_bwd_dx_mma(
    const T* __restrict__ w, const unsigned char* __restrict__ m, const T* __restrict__ dbuf,
    const T* __restrict__ s, T* __restrict__ dx, int n_masks, int T_, int d_model, int d_ff, int vec) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, q = lane & 3;
    const i64 t_base = (i64)blockIdx.y * 32 + (warp >> 1) * 16;
    const i64 k_base = (i64)blockIdx.x * 32 + (warp & 1) * 16;
    if (t_base >= T_ || k_base >= d_model) return;  // the whole warp: no block barrier here
    const i64 PW = (d_model + 7) >> 3;
    const i64 ta = t_base + g, tb = t_base + g + 8;
    const bool va = ta < T_, vb = tb < T_;

    float acc[2][4];
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[j][r] = 0.f;

    for (i64 n0 = 0; n0 < d_ff; n0 += 32) {
        const i64 c0 = n0 + 8 * q;
        u32 wb[2][4];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const i64 kc = k_base + 8 * j + g;
            col_pairs(w, d_model, kc, kc < d_model, c0, d_ff, wb[j]);
        }
        for (int p = 0; p <= n_masks; ++p) {
            const T* src = p < n_masks ? dbuf + (i64)p * T_ * d_ff : s;
            u32 ra[4], rb[4];
            load8(va, src + (va ? ta : 0) * d_ff, c0, d_ff, vec, ra);
            load8(vb, src + (vb ? tb : 0) * d_ff, c0, d_ff, vec, rb);
            const u32 a0[4] = {ra[0], rb[0], ra[1], rb[1]};
            const u32 a1[4] = {ra[2], rb[2], ra[3], rb[3]};
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const i64 kc = k_base + 8 * j + g;
                u32 b[4];
#pragma unroll
                for (int h = 0; h < 4; ++h) {
                    if (p < n_masks) {
                        const i64 n = c0 + 2 * h;
                        const unsigned char* bytes = m + ((i64)p * d_ff + n) * PW + (kc >> 3);
                        const u32 lo = (kc < d_model && n < d_ff) ? ((u32)__ldg(bytes) >> (kc & 7)) & 1u : 0u;
                        const u32 hi = (kc < d_model && n + 1 < d_ff) ? ((u32)__ldg(bytes + PW) >> (kc & 7)) & 1u : 0u;
                        b[h] = wb[j][h] & (((0u - lo) & 0xffffu) | ((0u - hi) << 16));
                    } else {
                        b[h] = wb[j][h];
                    }
                }
                mma16816<T>(acc[j], a0, b[0], b[1]);
                mma16816<T>(acc[j], a1, b[2], b[3]);
            }
        }
    }

#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const i64 t = t_base + g + 8 * (r >> 1), k = k_base + 8 * j + 2 * q + (r & 1);
            if (t < T_ && k < d_model) dx[t * d_model + k] = Tr<T>::cvt(acc[j][r]);
        }
}
