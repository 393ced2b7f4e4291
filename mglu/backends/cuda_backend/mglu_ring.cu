// Batched decode on tensor cores through a cp.async ring (fp16/bf16 forward, 1..16 tokens):
//   out (T, d_ff) = sum_i act(gate_i) (total - gate_i),  total = x W^T,  gate_i = x (M_i * W)^T
//   x (T <= 16, d_model), W (d_ff, d_model), masks (NM, d_ff, d_model / 8) packed bits.
// Needs d_model % RBK == 0 and 16-byte aligned x, W and masks (launcher.ring_ok): every
// stage is whole, every copy a 16-byte multiple inside one row.
//
// A block owns RBN = 32 rows of W and the T tokens (one 16-token tile). The K loop takes
// RBK = 128 columns a stage through a `stages`-deep ring of shared memory (2 or more, a
// run-time argument): W (32 rows x 128), x (16 tokens x 128) and the mask bytes (NM planes
// x 32 rows x 16 bytes), copied by 16-byte cp.async, 16 consecutive threads on 256 contiguous
// bytes of a row (4 whole 128-byte lines a warp instruction, where mglu_rowdot_mma's lanes
// load 16 bytes 64 apart: 16 lines). The stages - 1 stages ahead are in flight while one is
// computed, so the bytes in flight cost no registers. Each thread's source rows are fixed
// for the block: its pointers are set once (ring_sources) and a stage adds k0. Rows past d_ff
// read the last valid row (clamped): those slot rows reach only the products of outputs that
// are not written (D[t][n] reads row t of x and row n of W only). Tokens past T are
// zero-filled instead, without a read: every block reads the same rows of x, and clamped
// rows put up to 16 blocks' worth of reads on the L2 lines of one row (run 64: 2 tokens ran
// 2-3x slower than 16 with clamped tokens).
// (Measured offline, ptxas 13.0 SASS: with the guards and row products recomputed in every
// stage, 200 of a warp's 386 instructions a stage at 1 mask went to the copies, run 63;
// cp.async.bulk from warp 0 compiles to UBLKCP, whose operands are uniform registers, so 32
// lanes' rows are issued one lane at a time.)
//
// 4 warps: 2 row tiles (16 rows, two n8 tiles) x 2 K halves (columns 64 kh .. 64 kh + 63 of
// every stage). mma.sync m16n8k16 as in mglu_rowdot_mma (A = 16 tokens x 16 k of x, B = 16
// k x 8 rows of W, fp32 accumulators), but in natural k order: A and B come by ldmatrix from
// 256-byte slot rows whose 16-byte chunks are XOR-swizzled (swz<16> of mglu_gemm.cu: the 8
// rows a matrix reads fall in 8 distinct bank groups). Rows padded to 272 bytes instead, also
// free of bank conflicts on paper, ran 1.04-1.38x slower (run 71, scripts/cuda_ring_ab.py).
// Lane (g, q) of n tile j holds
// W[row 8j + g][k 2q, 2q+1] (b0) and [k 2q+8, 2q+9] (b1): the bits 2q, 2q + 1 of two
// consecutive mask bytes, whose pair masks come from one 32-bit word per 2 k16 steps
// (ring_signs, ring_pm). The K halves' partial sums meet in shared memory after the loop and
// are added in a fixed order (deterministic, no atomics).
// Launch: RTHREADS threads, grid (ceil(d_ff / RBN)), dynamic shared memory
// launcher.ring_smem(NM, stages, lines) = stages * RingTile<NM, LINES>::STAGE (+ 2 LINE) bytes.
//
// mglu_rowdot_ring_lines (a lead, not a default: cuda MEASUREMENTS_H200.md, twelfth session)
// is the same kernel with the mask bytes copied in whole 128-byte pieces of a plane's row,
// RLINE = 8 stages' worth at a time, into one of two line slots after the ring, instead of 16
// bytes of every (plane, row) with every stage. Why: runs 72-73 fit the ring's times at 1 and 4
// masks (16 tokens, both 4096-wide shapes) to one rate, 3.7-4.0 TB/s, if its 16-byte mask
// reads cost 4 times their bytes; 128-byte pieces are whole L2 lines. Needs d_model %
// (RBK * RLINE) == 0: each block starts at a line (k_first a multiple of RLINE), so a line
// never straddles the wrap and line l of the block's order takes slot l % 2.
#include "mglu_common.cuh"

enum { RBN = 32, RBK = 128, RTHREADS = 128, RLINE = 8 };

template <int NM, bool LINES = false>
struct RingTile {
    enum { W = RBN * RBK * 2, X = 16 * RBK * 2, M = LINES ? 0 : NM * RBN * RBK / 8, STAGE = W + X + M,
           // a line slot: RLINE stages of mask bytes, 128 bytes a (plane, row), its 16-byte
           // chunks XOR-swizzled by row % 8 (the 8 rows g of a warp's read: 8 bank groups)
           LINE = NM * RBN * RBK / 8 * RLINE,
           RED = 2 * (NM + 1) * 2 * 4 * 32 * 4 };
    static_assert(2 * STAGE >= RED, "the K halves' reduction reuses the ring");
    static_assert(STAGE % 16 == 0, "16-byte aligned slots");
    // mask chunks (one plane's 16 bytes of a row) a thread copies a stage; with LINES, the
    // rows tid / 8 and tid / 8 + 16 of every plane, chunk tid % 8, a line
    enum { MJ = LINES ? 2 : (NM * RBN + RTHREADS - 1) / RTHREADS };
};

// Pair masks of lane q from a 32-bit word of mask bytes (4 k8 groups): ring_signs puts bit
// 2q of every byte on that byte's sign bit (lo = w << (7 - 2q): bit 7 of byte b is bit 8b + 2q
// of w) and bit 2q + 1 likewise (hi = w << (6 - 2q)); ring_pm(lo, hi, b) widens byte b's two
// bits to 0x0000ffff / 0xffff0000, the AND mask of a pair of 16-bit elements: prmt with
// selector nibbles 8 + b (lo's byte b, sign replicated) and 12 + b (hi's byte b). prmt reads
// only the sign bit of a byte it replicates, so the other bits need no masking: 2
// instructions a word and one a pair mask (tests/test_cuda_ring_emulation.py checks every
// byte and q).
__device__ __forceinline__ void ring_signs(u32 w, int q, u32& lo, u32& hi) {
    lo = w << (7 - 2 * q);
    hi = w << (6 - 2 * q);
}
__device__ __forceinline__ u32 ring_pm(u32 lo, u32 hi, int b) {
    u32 d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(lo), "r"(hi), "r"((8u + b) * 0x11u + (12u + b) * 0x1100u));
    return d;
}

// A thread's copies of every stage: W chunk tid % 16 of rows tid / 16 + 8j, x the same of
// tokens tid / 16 + 8j, mask chunk e = tid + RTHREADS j (plane e / RBN, row e % RBN); each a
// source (column 0 of the stage; rows clamped) and a destination offset in the slot.
template <class T, int NM, bool LINES>
struct RingSources {
    const T* w[RBN / 8];
    const T* x[2];
    const unsigned char* m[RingTile<NM, LINES>::MJ];
    // the slot offset of chunk (tid / 16, tid % 16); the rows tid / 16 + 8j of W and x lie
    // 8j rows (2048j bytes) further with the same swizzle (tid / 16 < 8), mask chunk e at 16e
    u32 d;
    bool xv[2];  // token < T: else the chunk is zero-filled, no read
    // LINES: the line slot offset of (row tid / 8, chunk tid % 8), and a plane's bytes
    u32 dl;
    i64 plane;
};

template <class T, int NM, bool LINES>
__device__ __forceinline__ void ring_sources(RingSources<T, NM, LINES>& src, const T* x, const T* w,
                                             const unsigned char* m, int T_, int d_model, int d_ff, i64 n0, int tid) {
    typedef RingTile<NM, LINES> R;
    const int c = tid & 15;
    src.d = 16 * swz<16>(tid >> 4, c);
#pragma unroll
    for (int j = 0; j < RBN / 8; ++j) {
        const int r = (tid >> 4) + 8 * j;
        const i64 n = n0 + r < d_ff ? n0 + r : d_ff - 1;
        src.w[j] = w + n * d_model + 8 * c;
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        const int t = (tid >> 4) + 8 * j;
        src.xv[j] = t < T_;
        src.x[j] = x + (i64)(t < T_ ? t : 0) * d_model + 8 * c;
    }
    if constexpr (LINES) {
        const int r = tid >> 3, c = tid & 7;
        src.dl = 128 * r + 16 * (c ^ (r & 7));  // row r + 16: 2048 bytes on, the same swizzle
        src.plane = (i64)d_ff * (d_model / 8);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const i64 n = n0 + r + 16 * h < d_ff ? n0 + r + 16 * h : d_ff - 1;
            src.m[h] = m + n * (d_model / 8) + 16 * c;
        }
    } else {
#pragma unroll
        for (int j = 0; j < R::MJ; ++j) {
            const int e = tid + RTHREADS * j, i = e / RBN, r = e % RBN;
            const i64 n = n0 + r < d_ff ? n0 + r : d_ff - 1;
            src.m[j] = m + ((i64)i * d_ff + n) * (d_model / 8);
        }
    }
}

// The copies of the stage of columns k0 .. k0 + RBK - 1 into slot s (byte address); the caller
// commits the group (with LINES, after the line of a stage that starts one: ring_fill_line).
template <class T, int NM, bool LINES>
__device__ __forceinline__ void ring_fill(const RingSources<T, NM, LINES>& src, u32 s, i64 k0, int tid) {
    typedef RingTile<NM, LINES> R;
#pragma unroll
    for (int j = 0; j < RBN / 8; ++j) cp_async16(s + src.d + 2048 * j, src.w[j] + k0, true);
#pragma unroll
    for (int j = 0; j < 2; ++j) cp_async16(s + R::W + src.d + 2048 * j, src.x[j] + k0, src.xv[j]);
    if constexpr (!LINES) {
#pragma unroll
        for (int j = 0; j < R::MJ; ++j)
            if (tid + RTHREADS * j < NM * RBN)
                cp_async16(s + R::W + R::X + 16 * (tid + RTHREADS * j), src.m[j] + k0 / 8, true);
    }
}

// LINES: the mask bytes kb .. kb + 16 RLINE - 1 of every (plane, row) into line slot l: 8
// consecutive threads copy one row's 128 bytes (whole L2 lines where the rows are 128-byte
// aligned, as at d_model % 1024 == 0 with 128-byte aligned planes)
template <class T, int NM>
__device__ __forceinline__ void ring_fill_line(const RingSources<T, NM, true>& src, u32 l, i64 kb) {
#pragma unroll
    for (int i = 0; i < NM; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) cp_async16(l + src.dl + 128 * (i * RBN + 16 * h), src.m[h] + i * src.plane + kb, true);
}

// cp.async.wait_group takes an immediate: all but the newest stages - 2 groups complete (at
// most 2 pending from 4 stages up: correct for any depth)
__device__ __forceinline__ void cp_async_wait_ring(int stages) {
    if (stages == 2) cp_async_wait<0>();
    else if (stages == 3) cp_async_wait<1>();
    else cp_async_wait<2>();
}

// Registers: 4 blocks an SM (128 a thread) up to 4 masks, 3 (170) above. ptxas 13.0, sm_90
// (scripts/cuda_resources.py): 86 / 128 / 168 at 1 / 4 / 8 masks, no local memory. With mask
// lines above 4 masks the line slots (64 KB at 8) leave room for 2 blocks an SM: no cap to
// spill under (at 3: 8 bytes spilled at 8 masks)
template <int NM, bool LINES = false>
struct RingMinBlocks {
    enum { value = NM <= 4 ? 4 : LINES ? 2 : 3 };
};

template <class T, int NM, bool LINES>
__device__ __forceinline__ void ring_body(const T* __restrict__ x, const T* __restrict__ w,
                                          const unsigned char* __restrict__ m, const T* __restrict__ dout,
                                          T* __restrict__ out, T* __restrict__ dbuf, int T_, int d_model, int d_ff,
                                          int act, int stages) {
    typedef RingTile<NM, LINES> R;
    extern __shared__ uint4 ring_smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, q = lane & 3, wr = warp & 1, kh = warp >> 1, l7 = lane & 7, lj = lane >> 3;
    const i64 n0 = (i64)blockIdx.x * RBN;
    const u32 base = smem_u32(ring_smem);
    const int KT = d_model / RBK;

    float acc[NM + 1][2][4];
#pragma unroll
    for (int p = 0; p <= NM; ++p)
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[p][j][r] = 0.f;

    RingSources<T, NM, LINES> src;
    ring_sources<T, NM, LINES>(src, x, w, m, T_, d_model, d_ff, n0, tid);
    // block b takes its stages from column block b % KT on (wrapping): the blocks of a wave
    // read different stages of x at a time instead of the same RBK columns of every row
    // (LINES: from line b % (KT / RLINE), so that every line of the block's order is whole)
    const int k_first = LINES ? blockIdx.x % (KT / RLINE) * RLINE : blockIdx.x % KT;
    const u32 lines = base + stages * R::STAGE;  // LINES: the two line slots after the ring
    const auto stage_k0 = [&](int s) { return (i64)(s + k_first < KT ? s + k_first : s + k_first - KT) * RBK; };
    // stage s of the block's order into slot address a, with its line where one starts; one group
    const auto issue = [&](int s, u32 a) {
        const i64 k0 = stage_k0(s);
        ring_fill<T, NM, LINES>(src, a, k0, tid);
        if constexpr (LINES) {
            // line s / RLINE takes the slot of line s / RLINE - 2, whose last stage every warp
            // finished before the barrier of stage s - stages + 1 (stages <= RLINE + 1)
            if (s % RLINE == 0) ring_fill_line<T, NM>(src, lines + (s / RLINE % 2) * R::LINE, k0 / 8);
        }
        cp_async_commit();
    };
    for (int s = 0; s < stages - 1; ++s) {
        if (s < KT) issue(s, base + s * R::STAGE);
        else cp_async_commit();  // empty groups keep the count that cp_async_wait_ring assumes
    }
    // ldmatrix row addresses: lane lj * 8 + l7 names row l7 of matrix lj. B (W): matrices
    // (rows 0-7, chunk c), (0-7, c + 1), (8-15, c), (8-15, c + 1) of the warp's row tile: b0, b1
    // of n tile 0, then of n tile 1. A (x): (tokens 0-7, c), (8-15, c), (0-7, c + 1), (8-15, c + 1):
    // a0 .. a3. c = 8 kh + 2 st for k16 step st of the warp's K half (16-byte chunks of a row).
    const int b_row = 16 * wr + 8 * (lj >> 1) + l7, b_dc = lj & 1;
    const int a_row = 8 * (lj & 1) + l7, a_dc = lj >> 1;
    int slot = 0;
    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait_ring(stages);  // this thread's copies of stage kt have landed
        __syncthreads();             // everyone's have, and every warp is done with stage kt - 1
        {
            const int nk = kt + stages - 1;
            const int ns = slot == 0 ? stages - 1 : slot - 1;  // (kt + stages - 1) % stages: the slot of kt - 1
            if (nk < KT) issue(nk, base + ns * R::STAGE);
            else cp_async_commit();
        }
        const u32 sw = base + slot * R::STAGE, sx = sw + R::W, sm = sx + R::X;
        // mask bytes 8 kh .. 8 kh + 7 of the rows of n tiles 0 and 1, one 8-byte read each:
        // word h covers k16 steps 2h (bytes 0, 1) and 2h + 1 (bytes 2, 3) of the K half
        // (LINES: chunk kt % RLINE of the row's 128 bytes in line slot kt / RLINE % 2; the
        // row is 16 wr + 8 j + g, so its swizzle is g)
        const u32 sl = lines + (kt / RLINE % 2) * R::LINE + 16 * ((kt % RLINE) ^ g);
        u32 mw[NM][2][2];
#pragma unroll
        for (int i = 0; i < NM; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const u32 a = LINES ? sl + 128 * (i * RBN + 16 * wr + 8 * j + g) + 8 * kh
                                    : sm + 16 * (i * RBN + 16 * wr + 8 * j + g) + 8 * kh;
                asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(mw[i][j][0]), "=r"(mw[i][j][1]) : "r"(a));
            }
#pragma unroll
        for (int st = 0; st < 4; ++st) {
            const int c = 8 * kh + 2 * st, b = 2 * (st & 1);
            u32 a[4], bw[4];
            ldsm4<false>(sx + 16 * swz<16>(a_row, c + a_dc), a);
            ldsm4<false>(sw + 16 * swz<16>(b_row, c + b_dc), bw);
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const u32 b0 = bw[2 * j], b1 = bw[2 * j + 1];
                mma16816<T>(acc[0][j], a, b0, b1);
#pragma unroll
                for (int i = 0; i < NM; ++i) {
                    u32 lo, hi;
                    ring_signs(mw[i][j][st >> 1], q, lo, hi);
                    mma16816<T>(acc[i + 1][j], a, b0 & ring_pm(lo, hi, b), b1 & ring_pm(lo, hi, b + 1));
                }
            }
        }
        slot = slot + 1 == stages ? 0 : slot + 1;
    }
    cp_async_wait<0>();
    __syncthreads();  // every copy landed and was read: the ring holds the K halves' sums now

    float* red = reinterpret_cast<float*>(ring_smem);  // [wr][product][n tile][reg][lane]
    if (kh == 1) {
#pragma unroll
        for (int p = 0; p <= NM; ++p)
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int r = 0; r < 4; ++r) red[(((wr * (NM + 1) + p) * 2 + j) * 4 + r) * 32 + lane] = acc[p][j][r];
    }
    __syncthreads();
    if (kh == 1) return;
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const i64 t = g + 8 * (r >> 1), n = n0 + 16 * wr + 8 * j + 2 * q + (r & 1);
            const float total = acc[0][j][r] + red[(((wr * (NM + 1)) * 2 + j) * 4 + r) * 32 + lane];
            float gate[NM];
#pragma unroll
            for (int i = 0; i < NM; ++i) gate[i] = acc[i + 1][j][r] + red[(((wr * (NM + 1) + i + 1) * 2 + j) * 4 + r) * 32 + lane];
            if (t < T_ && n < d_ff) rowdot_epilogue<T, NM, MODE_FWD>(act, total, gate, t, n, T_, d_ff, dout, out, dbuf);
        }
}

template <class T, int NM>
__global__ void __launch_bounds__(RTHREADS, RingMinBlocks<NM>::value) mglu_rowdot_ring(
    const T* __restrict__ x, const T* __restrict__ w, const unsigned char* __restrict__ m,
    const T* __restrict__ dout, T* __restrict__ out, T* __restrict__ dbuf,
    int T_, int d_model, int d_ff, int act, int stages) {
    ring_body<T, NM, false>(x, w, m, dout, out, dbuf, T_, d_model, d_ff, act, stages);
}

template <class T, int NM>
__global__ void __launch_bounds__(RTHREADS, RingMinBlocks<NM, true>::value) mglu_rowdot_ring_lines(
    const T* __restrict__ x, const T* __restrict__ w, const unsigned char* __restrict__ m,
    const T* __restrict__ dout, T* __restrict__ out, T* __restrict__ dbuf,
    int T_, int d_model, int d_ff, int act, int stages) {
    ring_body<T, NM, true>(x, w, m, dout, out, dbuf, T_, d_model, d_ff, act, stages);
}
