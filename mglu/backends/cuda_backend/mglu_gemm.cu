// Prefill / training path of fp16/bf16 (from launcher.GEMM_MIN_TOKENS tokens): the masked
// weights are staged in HBM, then every product is a plain GEMM through shared memory.
//   mglu_expand:  WM_i[n,k] = M_i[n,k] * W[n,k]                              (NM, d_ff, d_model)
//   mglu_gemm<T, MODE, TM>: C_p (M, N) = A_p B_p over planes p = 0 .. P-1, each summed over K
//   on tensor cores (mma.sync m16n8k16, fp32 accumulators), with a per-plane epilogue:
//     GEMM_FWD  A = x (T, d_model), B_0 = W, B_p = WM_{p-1} (rows of d_ff):
//               C_0 = total, C_p = gate_{p-1};  out = sum_i act(gate_i) (total - gate_i)      (T, d_ff)
//     GEMM_DS   the same products; D_i = d act'(g_i)(total - g_i) - d act(g_i), S = sum_i d act(g_i),
//               d = dout[t, n] (backward kernel A: D_i to dbuf (NM, T, d_ff), S to out (T, d_ff))
//     GEMM_DX   A_p = DS_p (T, d_ff), DS_0 = S, DS_p = D_{p-1}; B_p as in GEMM_FWD read (K = d_ff,
//               N = d_model): dx = sum_p C_p = S W + sum_i D_i (M_i W)                  (T, d_model)
//     GEMM_DW   A_p = DS_p^T (d_ff, T), B = x (T, d_model): C_0 = Q, C_p = P_{p-1};
//               dW = Q + sum_i M_i P_i (d_ff, d_model), dM_i = W P_i when dm != 0 (dtype TM)
// D_i and S are rounded to the input dtype, as the torch backend does. Every output is
// summed by one thread in a fixed order (planes in order, K in order): bitwise reproducible.
// Needs d_model % 8 == 0, d_ff % 8 == 0 and 16-byte aligned bases (16-byte cp.async chunks
// never straddle a row end); launcher.gemm_ok says so and the launcher keeps the row-dot
// kernels otherwise.
#include "mglu_common.cuh"

enum { GEMM_FWD = 0, GEMM_DS = 1, GEMM_DX = 2, GEMM_DW = 3 };
// Block tile GBM x GBN, K step GBK, GSTAGES-deep cp.async ring, 8 warps as 2 (M) x 4 (N) of
// 64 x 32 (4 x 4 mma tiles, 64 fp32 accumulators a thread). GBK, GSTAGES: H100 run 1 of
// round 4 (MEASUREMENTS_GEMM.md): K step 64 with 3 stages ran the forward / dx GEMMs 1.22-1.26x
// faster than 32 with 4 (CUTLASS's Ampere shape, the first build), 64 with 4 within 2% of
// 64 with 3. GGROUP_M: block order in groups of 8 M tiles per N column (the Triton matmul
// tutorial's value, not swept), so the blocks of a wave share each B tile through L2.
enum { GBM = 128, GBN = 128, GBK = 64, GSTAGES = 3, GTHREADS = 256, GGROUP_M = 8 };
// 16-byte chunks: per operand tile (128 x GBK elements), per stage, of fp32 `total` (64
// values a thread); GDOUT_LD: elements per row of the epilogue tile (dout, W), 128 + 8 so that
// the epilogue's 4-byte reads of rows g = 0..7 fall in distinct banks (68 words a row)
enum { GTILE_CHUNKS = GBM * GBK / 8, GSTAGE_CHUNKS = 2 * GTILE_CHUNKS, GTOTAL_CHUNKS = 64 * GTHREADS / 4,
       GDOUT_LD = GBN + 8 };
static_assert(GBK % 16 == 0 && GBK / 16 <= 4, "mglu_gemm keeps at most 4 ldmatrix row offsets per operand");

__device__ __forceinline__ u32 smem_u32(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16 bytes global -> shared, bypassing L1; zero-filled when !valid (src-size 0)
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

// Four 8 x 8 matrices of 16-bit elements; lanes 8j .. 8j + 7 give the row addresses of
// matrix j, register j receives it: (row lane/4, columns 2 (lane%4), +1), or with TRANS the
// transposed matrix (element [2 (lane%4)][lane/4] and the next row).
template <bool TRANS>
__device__ __forceinline__ void ldsm4(u32 addr, u32* r) {
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// Chunk index of (row r, 16-byte chunk c) in a tile of CH chunks per row, XOR-swizzled so that
// the 8 rows an ldmatrix matrix reads (same logical chunk) fall in 8 distinct 16-byte bank
// groups: CH = 4 (64-byte rows, two rows per 128 bytes): c ^ ((r / 2) % 4); CH >= 8: c ^ (r % 8).
template <int CH>
__device__ __forceinline__ int swz(int r, int c) {
    return r * CH + (CH == 4 ? (c ^ ((r >> 1) & 3)) : (c ^ (r & 7)));
}

// One operand tile into shared memory at s (byte address). KROWS false: 128 rows of the outer
// index (m or n, < R) x GBK of k (< K), source rows of length K; KROWS true: GBK rows of k x
// 128 of the outer index (16 chunks a row), source rows of length R. Out-of-range chunks are
// zero-filled.
template <class T, bool KROWS>
__device__ __forceinline__ void load_tile(u32 s, const T* g, int R, int K, int r0, int k0, int tid) {
#pragma unroll
    for (int j = 0; j < GTILE_CHUNKS / GTHREADS; ++j) {
        const int e = tid + j * GTHREADS;
        if (KROWS) {
            const int k = e >> 4, c = e & 15;
            const bool ok = k0 + k < K && r0 + 8 * c < R;
            cp_async16(s + 16 * swz<16>(k, c), ok ? g + (i64)(k0 + k) * R + r0 + 8 * c : g, ok);
        } else {
            const int r = e / (GBK / 8), c = e % (GBK / 8);
            const bool ok = r0 + r < R && k0 + 8 * c < K;
            cp_async16(s + 16 * swz<GBK / 8>(r, c), ok ? g + (i64)(r0 + r) * K + k0 + 8 * c : g, ok);
        }
    }
}

template <class T> __device__ __forceinline__ float h2f(u32 h);
template <> __device__ __forceinline__ float h2f<mglu_bf16>(u32 h) { return bf16_to_f32((u16)h); }
template <> __device__ __forceinline__ float h2f<mglu_f16>(u32 h) { return f16_to_f32((u16)h); }

// two floats as two consecutive 16-bit elements (4-byte aligned)
template <class T>
__device__ __forceinline__ void st2(T* p, float a, float b) {
    *reinterpret_cast<u32*>(p) = (u32)Tr<T>::cvt(a).bits | ((u32)Tr<T>::cvt(b).bits << 16);
}

// Launch: GTHREADS threads, 1-D grid of ceil(M / GBM) * ceil(N / GBN) blocks, dynamic shared
// memory launcher.gemm_smem: the ring (GSTAGES * GSTAGE_CHUNKS * 16 bytes), then 64 KB of fp32
// `total` (GEMM_FWD, GEMM_DS), then the epilogue's operand tile E (GBM rows of GDOUT_LD
// elements: dout in GEMM_DS, W in GEMM_DW), then in GEMM_DW the block's mask bytes of every
// plane (P - 1 planes x GBM rows x GBN / 8 bytes). E and the masks are read once per block,
// before the main loop, instead of once per plane in the epilogue. Operand planes: A_p = a (FWD, DS), a + p M K (DX: T x d_ff planes; DW: d_ff-major
// planes of K x M); B_0 = b0, B_p = b1 + (p - 1) N K (FWD, DS, DX), b0 (DW).
template <class T, int MODE, class TM>
__global__ void __launch_bounds__(256, 1) mglu_gemm(
    const T* __restrict__ a, const T* __restrict__ b0, const T* __restrict__ b1, int P, int M, int N, int K,
    int act, const T* __restrict__ dout, const unsigned char* __restrict__ masks, const T* __restrict__ w,
    T* __restrict__ out, T* __restrict__ dbuf, TM* __restrict__ dm) {
    enum { A_KROWS = MODE == GEMM_DW, B_KROWS = MODE == GEMM_DX || MODE == GEMM_DW,
           A_PLANES = MODE == GEMM_DX || MODE == GEMM_DW, B_PLANES = MODE != GEMM_DW,
           KEEP_TOTAL = MODE == GEMM_FWD || MODE == GEMM_DS, CH = GBK / 8 };
    extern __shared__ uint4 gemm_smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp & 1, wn = warp >> 1, g = lane >> 2, q = lane & 3, j = lane >> 3, l7 = lane & 7;

    // grouped block order: GGROUP_M M tiles per N column
    const int mt = (M + GBM - 1) / GBM, nt = (N + GBN - 1) / GBN;
    const int group = GGROUP_M * nt, first = (int)blockIdx.x / group * GGROUP_M;
    const int gm = min(mt - first, (int)GGROUP_M), in_group = (int)blockIdx.x % group;
    const int m0 = (first + in_group % gm) * GBM, n0 = in_group / gm * GBN;

    const int KT = (K + GBK - 1) / GBK, tiles = P * KT;
    const u32 sbase = smem_u32(gemm_smem);
    float* tot = reinterpret_cast<float*>(gemm_smem + GSTAGES * GSTAGE_CHUNKS);
    uint4* etile = gemm_smem + GSTAGES * GSTAGE_CHUNKS + (KEEP_TOTAL ? GTOTAL_CHUNKS : 0);
    const u32* esm = reinterpret_cast<const u32*>(etile);
    unsigned char* msm = reinterpret_cast<unsigned char*>(etile + GBM * GDOUT_LD / 8);

    // Byte offsets of this lane's ldmatrix rows inside a stage (the swizzle's XOR term
    // depends on lane & 7 only, so the rest is a compile-time offset): non-KROWS operands
    // one per k16 step ks (+ 16 rows per mi / nj), KROWS operands one per mi / nj (+ 16 k
    // rows per ks).
    u32 aoff[4], boff[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        aoff[i] = 16 * (A_KROWS ? swz<16>((j >> 1) * 8 + l7, wm * 8 + 2 * i + (j & 1))
                                : swz<CH>(wm * 64 + (lane & 15), 2 * i + (lane >> 4)));
        boff[i] = 16 * (B_KROWS ? swz<16>((j & 1) * 8 + l7, wn * 4 + 2 * i + (j >> 1))
                                : swz<CH>(wn * 32 + (j >> 1) * 8 + l7, 2 * i + (j & 1)));
    }

    // the next tile to issue: plane ip, K step ik, ring stage is
    int ip = 0, ik = 0, is = 0;
    auto issue = [&]() {
        const u32 s = sbase + 16 * is * GSTAGE_CHUNKS;
        const T* ap = A_PLANES ? a + (i64)ip * M * K : a;
        const T* bp = B_PLANES && ip > 0 ? b1 + (i64)(ip - 1) * N * K : b0;
        load_tile<T, A_KROWS>(s, ap, M, K, m0, ik * GBK, tid);
        load_tile<T, B_KROWS>(s + 16 * GTILE_CHUNKS, bp, N, K, n0, ik * GBK, tid);
        if (++ik == KT) ik = 0, ++ip;
        if (++is == GSTAGES) is = 0;
    };

    float acc[4][4][4], keep[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int jj = 0; jj < 4; ++jj)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][jj][r] = keep[i][jj][r] = 0.f;

    if (MODE == GEMM_DS || MODE == GEMM_DW) {  // E, in the first cp.async group (waited for before any epilogue)
        const T* src = MODE == GEMM_DS ? dout : w;
        const u32 s = smem_u32(etile);
#pragma unroll
        for (int e = tid; e < GBM * GBN / 8; e += GTHREADS) {
            const int r = e / (GBN / 8), c = e % (GBN / 8);
            const bool ok = m0 + r < M && n0 + 8 * c < N;
            cp_async16(s + 16 * (r * (GDOUT_LD / 8) + c), ok ? src + (i64)(m0 + r) * N + n0 + 8 * c : src, ok);
        }
    }
    if (MODE == GEMM_DW) {  // mask bytes [plane][row][GBN / 8], visible after the main loop's first barrier
        for (int e = tid; e < (P - 1) * GBM * (GBN / 8); e += GTHREADS) {
            const int i = e / (GBM * (GBN / 8)), r = e / (GBN / 8) % GBM, b = e % (GBN / 8);
            const bool ok = m0 + r < M && (n0 >> 3) + b < (N >> 3);
            msm[e] = ok ? __ldg(masks + ((i64)i * M + m0 + r) * (N >> 3) + (n0 >> 3) + b) : (unsigned char)0;
        }
    }
#pragma unroll
    for (int s = 0; s < GSTAGES - 1; ++s) {
        if (s < tiles) issue();
        cp_async_commit();
    }
    int rs = 0, pc = 0, kc = 0;  // stage read, plane and K step consumed
    for (int it = 0; it < tiles; ++it) {
        cp_async_wait<GSTAGES - 2>();
        __syncthreads();
        // the stage read in iteration it - 1 is free once every thread passed the barrier
        if (it + GSTAGES - 1 < tiles) issue();
        cp_async_commit();
        const u32 sa = sbase + 16 * rs * GSTAGE_CHUNKS, sb = sa + 16 * GTILE_CHUNKS;
        if (++rs == GSTAGES) rs = 0;
#pragma unroll
        for (int ks = 0; ks < GBK / 16; ++ks) {
            u32 af[4][4], bf[2][4];
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
                ldsm4<A_KROWS>(sa + (A_KROWS ? aoff[mi] + ks * 16 * 256 : aoff[ks] + mi * 16 * CH * 16), af[mi]);
#pragma unroll
            for (int nj = 0; nj < 2; ++nj)
                ldsm4<B_KROWS>(sb + (B_KROWS ? boff[nj] + ks * 16 * 256 : boff[ks] + nj * 16 * CH * 16), bf[nj]);
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni)
                    mma16816<T>(acc[mi][ni], af[mi], bf[ni >> 1][2 * (ni & 1)], bf[ni >> 1][2 * (ni & 1) + 1]);
        }
        if (++kc < KT) continue;
        kc = 0;
        const int p = pc++;
        if (MODE == GEMM_DX) continue;
        // end of plane p: its epilogue, on this thread's own outputs only (no barrier)
#pragma unroll
        for (int mi = 0; mi < 4; ++mi)
#pragma unroll
            for (int ni = 0; ni < 4; ++ni)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float* c = &acc[mi][ni][2 * h];
                    float* o = &keep[mi][ni][2 * h];
                    const int rr = wm * 64 + mi * 16 + g + 8 * h, cc = wn * 32 + ni * 8 + 2 * q;
                    const int m = m0 + rr, n = n0 + cc;
                    if (KEEP_TOTAL) {
                        float* t = tot + ((mi * 4 + ni) * 4 + 2 * h) * GTHREADS + tid;
                        if (p == 0) {
                            t[0] = c[0];
                            t[GTHREADS] = c[1];
                        } else if (MODE == GEMM_FWD) {
#pragma unroll
                            for (int e = 0; e < 2; ++e) {
                                float av, dv;
                                activation<false>(act, c[e], av, dv);
                                o[e] += av * (t[e * GTHREADS] - c[e]);
                            }
                        } else if (m < M && n < N) {
                            const u32 dd = esm[(rr * GDOUT_LD + cc) >> 1];
                            const float d[2] = {h2f<T>(dd & 0xffffu), h2f<T>(dd >> 16)};
                            float r[2];
#pragma unroll
                            for (int e = 0; e < 2; ++e) {
                                float av, dv;
                                activation<true>(act, c[e], av, dv);
                                r[e] = d[e] * dv * (t[e * GTHREADS] - c[e]) - d[e] * av;
                                o[e] += d[e] * av;
                            }
                            st2(dbuf + ((i64)(p - 1) * M + m) * N + n, r[0], r[1]);
                        }
                    } else if (p == 0) {  // GEMM_DW: Q
                        o[0] = c[0];
                        o[1] = c[1];
                    } else if (m < M && n < N) {  // GEMM_DW: P_i, i = p - 1
                        const u32 bits = (u32)msm[((p - 1) * GBM + rr) * (GBN / 8) + (cc >> 3)] >> (cc & 7);
                        o[0] += (bits & 1u) ? c[0] : 0.f;
                        o[1] += (bits & 2u) ? c[1] : 0.f;
                        if (dm) {
                            const u32 ww = esm[(rr * GDOUT_LD + cc) >> 1];
                            const i64 at = ((i64)(p - 1) * M + m) * N + n;
                            dm[at] = Tr<TM>::cvt(h2f<T>(ww & 0xffffu) * c[0]);
                            dm[at + 1] = Tr<TM>::cvt(h2f<T>(ww >> 16) * c[1]);
                        }
                    }
                    c[0] = c[1] = 0.f;
                }
    }
    cp_async_wait<0>();
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int m = m0 + wm * 64 + mi * 16 + g + 8 * h, n = n0 + wn * 32 + ni * 8 + 2 * q;
                const float* v = MODE == GEMM_DX ? &acc[mi][ni][2 * h] : &keep[mi][ni][2 * h];
                if (m < M && n < N) st2(out + (i64)m * N + n, v[0], v[1]);
            }
}

// WM_i = M_i * W for i < n_masks, one thread per 8-column chunk (one 16-byte word of W and
// one mask byte per plane, widened to element masks by pair_masks). d_model % 8 == 0.
// Launch: 256 threads, ceil(d_ff * d_model / 8 / 256) blocks.
template <class T>
__global__ void __launch_bounds__(256, 1) mglu_expand(const T* __restrict__ w, const unsigned char* __restrict__ m,
                                                      T* __restrict__ wm, int n_masks, int d_ff, int d_model) {
    const i64 pw = d_model >> 3, chunks = (i64)d_ff * pw;
    const i64 e = (i64)blockIdx.x * 256 + threadIdx.x;
    if (e >= chunks) return;
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(w) + e);
    for (int i = 0; i < n_masks; ++i) {
        u32 pm[4];
        pair_masks(__ldg(m + (i64)i * chunks + e), pm);
        reinterpret_cast<uint4*>(wm)[(i64)i * chunks + e] = make_uint4(v.x & pm[0], v.y & pm[1], v.z & pm[2], v.w & pm[3]);
    }
}
