// Shared pieces of the MGLU CUDA kernels: element types, conversions, vector unpacking,
// activations and their derivatives (the formulas of mglu/backends/torch_backend.py ACT).
//
// Self-contained on purpose: no CUDA headers (cuda_fp16.h, cstdint), so the same text
// compiles under NVRTC (CuPy RawModule) and nvcc (tests/test_cuda_build.py) with no include
// path. fp16/bf16 are 16-bit storage structs converted with PTX cvt (sm_80+).
// The launcher prepends MGLU_GELU_TANH_C / MGLU_GELU_TANH_A from mglu/activations.py.
#pragma once

typedef unsigned int u32;
typedef unsigned short u16;
typedef long long i64;

struct mglu_f16 { u16 bits; };
struct mglu_bf16 { u16 bits; };

// Activation ids: the order of mglu.activations.ACTIVATIONS (tests/test_cuda_build.py
// checks this list against it).
// MGLU_ACTIVATIONS: silu sigmoid gelu gelu_tanh relu identity
enum { ACT_SILU = 0, ACT_SIGMOID = 1, ACT_GELU = 2, ACT_GELU_TANH = 3, ACT_RELU = 4, ACT_IDENTITY = 5 };

// Kernel modes of the row-dot kernels: the forward epilogue, or backward kernel A.
enum { MODE_FWD = 0, MODE_BWD = 1 };

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u16 h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Tr<T>: accumulator type (fp32, fp64 for fp64, SPEC §4), scalar load/store, and the
// unpacking of one 8-element chunk held in VPC 16-byte words (VPC = 8 * sizeof(T) / 16).
template <class T> struct Tr;

template <> struct Tr<mglu_f16> {
    typedef float acc;
    enum { VPC = 1 };
    static __device__ __forceinline__ float ld(const mglu_f16* p, i64 i) { return f16_to_f32(__ldg(&p[i].bits)); }
    static __device__ __forceinline__ mglu_f16 cvt(float v) { mglu_f16 r; r.bits = f32_to_f16(v); return r; }
    static __device__ __forceinline__ mglu_f16 cvt(double v) { return cvt((float)v); }
    static __device__ __forceinline__ void unpack(const uint4* q, float* o) {
        const u32 w[4] = {q[0].x, q[0].y, q[0].z, q[0].w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            o[2 * j] = f16_to_f32((u16)(w[j] & 0xffffu));
            o[2 * j + 1] = f16_to_f32((u16)(w[j] >> 16));
        }
    }
};

template <> struct Tr<mglu_bf16> {
    typedef float acc;
    enum { VPC = 1 };
    static __device__ __forceinline__ float ld(const mglu_bf16* p, i64 i) { return bf16_to_f32(__ldg(&p[i].bits)); }
    static __device__ __forceinline__ mglu_bf16 cvt(float v) { mglu_bf16 r; r.bits = f32_to_bf16(v); return r; }
    static __device__ __forceinline__ mglu_bf16 cvt(double v) { return cvt((float)v); }
    static __device__ __forceinline__ void unpack(const uint4* q, float* o) {
        const u32 w[4] = {q[0].x, q[0].y, q[0].z, q[0].w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            o[2 * j] = __uint_as_float(w[j] << 16);
            o[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
        }
    }
};

template <> struct Tr<float> {
    typedef float acc;
    enum { VPC = 2 };
    static __device__ __forceinline__ float ld(const float* p, i64 i) { return __ldg(p + i); }
    static __device__ __forceinline__ float cvt(float v) { return v; }
    static __device__ __forceinline__ float cvt(double v) { return (float)v; }
    static __device__ __forceinline__ void unpack(const uint4* q, float* o) {
#pragma unroll
        for (int v = 0; v < 2; ++v) {
            o[4 * v] = __uint_as_float(q[v].x);
            o[4 * v + 1] = __uint_as_float(q[v].y);
            o[4 * v + 2] = __uint_as_float(q[v].z);
            o[4 * v + 3] = __uint_as_float(q[v].w);
        }
    }
};

template <> struct Tr<double> {
    typedef double acc;
    enum { VPC = 4 };
    static __device__ __forceinline__ double ld(const double* p, i64 i) { return __ldg(p + i); }
    static __device__ __forceinline__ double cvt(float v) { return (double)v; }
    static __device__ __forceinline__ double cvt(double v) { return v; }
    static __device__ __forceinline__ void unpack(const uint4* q, double* o) {
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            o[2 * v] = __hiloint2double((int)q[v].y, (int)q[v].x);
            o[2 * v + 1] = __hiloint2double((int)q[v].w, (int)q[v].z);
        }
    }
};

__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_erf(float x) { return erff(x); }
__device__ __forceinline__ double m_erf(double x) { return erf(x); }
__device__ __forceinline__ float m_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double m_tanh(double x) { return tanh(x); }

// a = act(g) and, when GRAD, da = act'(g): the formulas of torch_backend.ACT. ACT is a
// run-time argument, uniform over the grid: it only enters the epilogue (once per output,
// against d_model multiply-adds per output), and as a template parameter it multiplied the
// row-dot instantiations six-fold (3092 against 532: about 380 s of nvcc for the build
// test on 2 CPU cores, extrapolated from a measured build of 61 instantiations).
template <bool GRAD, class A>
__device__ __forceinline__ void activation(int ACT, A g, A& a, A& da) {
    const A one = (A)1.0, half = (A)0.5;
    if (ACT == ACT_SILU) {
        const A s = one / (one + m_exp(-g));
        a = g * s;
        if (GRAD) da = s * (one + g * (one - s));
    } else if (ACT == ACT_SIGMOID) {
        const A s = one / (one + m_exp(-g));
        a = s;
        if (GRAD) da = s * (one - s);
    } else if (ACT == ACT_GELU) {
        // 1/sqrt(2) and 1/sqrt(2*pi)
        const A cdf = half * (one + m_erf(g * (A)0.7071067811865476));
        a = g * cdf;
        if (GRAD) da = cdf + g * (A)0.3989422804014327 * m_exp(-half * g * g);
    } else if (ACT == ACT_GELU_TANH) {
        const A c = (A)MGLU_GELU_TANH_C, k = (A)MGLU_GELU_TANH_A;
        const A t = m_tanh(c * (g + k * g * g * g));
        a = half * g * (one + t);
        if (GRAD) da = half * (one + t) + half * g * ((one - t * t) * c * (one + (A)3.0 * k * g * g));
    } else if (ACT == ACT_RELU) {
        a = g > (A)0 ? g : (A)0;
        if (GRAD) da = g > (A)0 ? one : (A)0;
    } else {
        a = g;
        if (GRAD) da = one;
    }
}

// Bit e of mask byte b selects w, else 0 (the masked weight M_i * W, built in registers).
template <class A>
__device__ __forceinline__ A masked(u32 bits, int e, A w) { return ((bits >> e) & 1u) ? w : (A)0; }

// acc += w * x where bit e of bits is set: a predicated FMA. ptxas turns the bit tests of
// one word into R2P (7 predicates per instruction), so a mask costs ~1.15 instructions per
// element against FSEL + FADD (+ the bit test) for acc += masked(bits, e, w) * x (SASS of
// a test kernel, nvcc 13.0 sm_90: 152 against 240 instructions for 8 planes x 8 elements).
__device__ __forceinline__ void fma_if(float& acc, u32 bits, int e, float w, float x) {
    asm("{\n.reg .pred p;\n.reg .b32 t;\nand.b32 t, %1, %2;\nsetp.ne.b32 p, t, 0;\n@p fma.rn.f32 %0, %3, %4, %0;\n}"
        : "+f"(acc) : "r"(bits), "r"(1u << e), "f"(w), "f"(x));
}
__device__ __forceinline__ void fma_if(double& acc, u32 bits, int e, double w, double x) {
    asm("{\n.reg .pred p;\n.reg .b32 t;\nand.b32 t, %1, %2;\nsetp.ne.b32 p, t, 0;\n@p fma.rn.f64 %0, %3, %4, %0;\n}"
        : "+d"(acc) : "r"(bits), "r"(1u << e), "d"(w), "d"(x));
}

// Variants of the row-dot kernels (template parameter VAR), chosen per regime by the
// launcher from H100 measurements (scripts/cuda_tune.py, MEASUREMENTS.md). Decode
// (mglu_rowdot_gemv), all with the predicated FMA (fma_if) for the masked products:
//   VAR_PRED: one warp per row;  VAR_SPLIT: each row split over the run-time split_arg warps;
//   VAR_PRED_OCC, VAR_SPLIT_OCC: the same under a register cap (GemvMinBlocks) that
//   raises the blocks per SM.
// Tensor cores (mglu_rowdot_mma), pair masks by multiply + prmt (pair_masks) in all:
//   MMA_PRMT: 32-column steps, one 16-byte load per row and a mask byte per plane;
//   MMA_WORDS: 128-column steps where the rows allow (vec = 2): four 16-byte loads per row
//              and one 32-bit mask word per plane, all issued before the step's mma;
//   MMA_WORDS_OCC: MMA_WORDS under a register cap (MmaMinBlocks).
// Dropped after the H100 runs (MEASUREMENTS.md): select arithmetic and shift pair masks (VAR 0),
// software pipelining of the decode rounds (slower at every point: more registers).
//   VAR_LANES8: 8 lanes per row, 4 rows per warp (the numba backend's v4s4wl8 layout), 4 warps a block.
enum { VAR_PRED = 1, VAR_PRED_OCC = 2, VAR_SPLIT = 3, VAR_SPLIT_OCC = 4, VAR_LANES8 = 5 };
enum { MMA_PRMT = 1, MMA_WORDS = 2, MMA_WORDS_OCC = 3 };

// Minimum blocks per SM for __launch_bounds__ (ptxas caps registers at 65536 / (threads x
// blocks)): 1 (no cap) but for the _OCC variants. Decode at 1 token: 5 blocks of 256
// threads (48 registers) at 1 mask, 4 (64) up to 4, 3 (80) up to 8; ptxas without the cap
// (bf16/fp16): 48 / 59-63 (split) at 1 mask, 71-72 / 96 at 4, 90 / 104 at 8; with it no
// spill but split at 4 and 8 masks (20 and 28 bytes). Tensor cores at up to 4 masks: 4
// blocks of 128 threads (128 registers; 128-134 without), 3 (168) up to 8 (173 without).
template <int NM, int NT, int VAR>
struct GemvMinBlocks {
    enum { occ = VAR == VAR_PRED_OCC || VAR == VAR_SPLIT_OCC,
           value = occ && NT == 1 ? (NM == 1 ? 5 : NM <= 4 ? 4 : NM <= 8 ? 3 : 1) : 1 };
};
// Lanes per W row of the decode kernel: 8 for VAR_LANES8 (4 rows a warp), else a warp.
template <int VAR>
struct GemvLanes {
    enum { value = VAR == VAR_LANES8 ? 8 : 32 };
};
template <int NM, int VAR>
struct MmaMinBlocks {
    enum { value = VAR == MMA_WORDS_OCC ? (NM <= 4 ? 4 : NM <= 8 ? 3 : 1) : 1 };
};

// D += A B on tensor cores: mma.sync.aligned.m16n8k16, fp32 accumulators, fp16 or bf16
// operands (fragment layout in mglu_fwd.cu above mglu_rowdot_mma).
template <class T>
__device__ __forceinline__ void mma16816(float* c, const u32* a, u32 b0, u32 b1);

template <>
__device__ __forceinline__ void mma16816<mglu_bf16>(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma16816<mglu_f16>(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 prmt(u32 a, u32 sel) {
    u32 d;
    asm("prmt.b32 %0, %1, 0, %2;" : "=r"(d) : "r"(a), "r"(sel));
    return d;
}

// The four pair masks of a mask byte in 8 instructions: pm[j] is bits 2j and 2j + 1 of the
// byte widened to a 32-bit AND mask over a pair of 16-bit elements (0x0000ffff, 0xffff0000).
// lo = (byte & 0xf) * 0x10204080 puts bit k (k < 4) at bit 8k + 7, the sign bit of byte k
// (shifts 7, 14, 21, 28: the partial products land on distinct bits, so no carries);
// hi = (byte & 0xf0) * 0x01020408 does the same for bits 4..7 (shifts 3, 10, 17, 24).
// prmt with selector nibble 8 + b replicates the sign bit of byte b over a result byte:
// 0x9988 -> bytes 0, 0, 1, 1, 0xbbaa -> bytes 2, 2, 3, 3.
__device__ __forceinline__ void pair_masks(u32 byte, u32* pm) {
    const u32 lo = (byte & 0xfu) * 0x10204080u, hi = (byte & 0xf0u) * 0x01020408u;
    pm[0] = prmt(lo, 0x9988u);
    pm[1] = prmt(lo, 0xbbaau);
    pm[2] = prmt(hi, 0x9988u);
    pm[3] = prmt(hi, 0xbbaau);
}

// Columns c0 .. c0 + 7 of a 16-bit row of length d_model as four registers (pair j =
// columns c0 + 2j, 2j + 1, low half first); 0 past d_model or for an invalid row. vec: one
// 16-byte load (c0 % 8 == 0, d_model % 8 == 0, 16-byte aligned base).
template <class T>
__device__ __forceinline__ void load8(bool valid, const T* row, i64 c0, int d_model, int vec, u32* r) {
    if (valid && vec && c0 < d_model) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(row + c0));
        r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
        return;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const i64 k = c0 + 2 * j;
        const u32 lo = (valid && k < d_model) ? (u32)__ldg(&row[k].bits) : 0u;
        const u32 hi = (valid && k + 1 < d_model) ? (u32)__ldg(&row[k + 1].bits) : 0u;
        r[j] = lo | (hi << 16);
    }
}
