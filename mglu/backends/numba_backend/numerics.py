"""Element access and activations shared by the numba kernels (device code).

``load(a, i)`` returns element ``i`` of a 1-D array of the input dtype widened to the
accumulator type (fp64 for fp64, else fp32; bf16 arrives as int16 bits);
``store(a, i, v)`` narrows ``v`` into element ``i`` (bf16: round to nearest even by
integer ops); ``like(g, c)`` is the constant ``c`` in the type of ``g``, so one activation
source serves fp32 and fp64 without fp64 arithmetic in fp32 kernels.

Wide loads (the ``decode_wide`` kernel): ``load_v4(a, i)`` returns the four int32 words
``a[4i .. 4i+3]`` of an int32 view as one 16-byte load (``ld.global.nc.v4.u32``: Numba
has no vector load from an array, so it is an inline-PTX intrinsic); ``f16x2(word)`` and
``bf16x2(word)`` widen the two 16-bit halves of a word to fp32, low half first (the
element at the lower address: little endian). ``load_nc(a, i)`` is ``a[i]`` of an integer
array through the read-only path (``ld.global.nc``), for the mask words;
``pick(c, a, b)`` is ``a if c else b`` as a ``selp`` that the compiler keeps.

On the GPU these three are ``numba.cuda.extending.overload`` s, chosen by the argument
types at compile time. Numba's CUDA simulator runs device code as Python on NumPy
scalars and knows neither overloads nor libdevice, so it gets plain-Python twins that
make the same type decisions; everything else (the bf16 bit tricks, the activations, the
kernels) is one source for both.
"""

import math

import numpy as np

if not hasattr(np, "row_stack"):  # numba 0.68 calls np.row_stack, removed in NumPy 2.5 (NOTES.md)
    np.row_stack = np.vstack

from numba import config, cuda, float32, float64, int16, int32, types  # noqa: E402

from ...activations import GELU_TANH_A, GELU_TANH_C  # noqa: E402

SIMULATED = bool(config.ENABLE_CUDASIM)

#: ``@device`` marks device functions. The simulator would wrap each in an object whose
#: every call takes a module-wide lock (to swap in its fake ``cuda`` module), which
#: dominates its run time; these functions never touch ``cuda``, so there they stay plain
#: Python functions: the same source, without the lock.
device = (lambda fn: fn) if SIMULATED else cuda.jit(device=True)

#: activation codes, in the order of mglu.activations.ACTIVATIONS
ACT_CODE = {"silu": 0, "sigmoid": 1, "gelu": 2, "gelu_tanh": 3, "relu": 4, "identity": 5}
SILU, SIGMOID, GELU, GELU_TANH, RELU, IDENTITY = range(6)
#: 1/sqrt(2) and 1/sqrt(2*pi), as in torch_backend._act_gelu
SQRT1_2 = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327
BF16_NAN = 0x7FC0

if SIMULATED:

    def int_as_float(v):
        return np.int32(v).view(np.float32)

    def float_as_int(f):
        return np.float32(f).view(np.int32)

else:
    from numba.cuda import libdevice

    int_as_float = libdevice.int_as_float
    float_as_int = libdevice.float_as_int

if SIMULATED:

    def load_v4(a, i):
        return tuple(a[4 * i : 4 * i + 4])

    def load_nc(a, i):
        return a[i]

    def pick(c, a, b):
        return a if c else b

    def f16x2(word):
        lo, hi = np.array([word], np.int32).view(np.float16)
        return np.float32(lo), np.float32(hi)

    def bf16x2(word):
        lo, hi = np.array([word], np.int32).view(np.int16)
        return bf16_to_f32(lo), bf16_to_f32(hi)

else:
    from llvmlite import ir
    from numba.cuda import cgutils
    from numba.cuda.extending import intrinsic

    _I32 = ir.IntType(32)

    @intrinsic
    def load_v4(typingctx, a, i):
        """Words ``4i .. 4i+3`` of the int32 array ``a`` by one ``ld.global.nc.v4.u32``
        (16-byte aligned: the caller checks the base address; W is read-only in the kernel)."""
        sig = types.UniTuple(types.int32, 4)(a, i)

        def codegen(context, builder, sig, args):
            aty, ity = sig.args
            ary = context.make_array(aty)(context, builder, value=args[0])
            i = context.cast(builder, args[1], ity, types.intp)
            first = builder.mul(i, i.type(4))
            ptr = cgutils.get_item_pointer(context, builder, aty, ary, [first])
            fnty = ir.FunctionType(ir.LiteralStructType([_I32] * 4), [ptr.type])
            asm = ir.InlineAsm(fnty, "ld.global.nc.v4.u32 {$0, $1, $2, $3}, [$4];", "=r,=r,=r,=r,l")
            words = builder.call(asm, [ptr])
            return context.make_tuple(builder, sig.return_type, [builder.extract_value(words, q) for q in range(4)])

        return sig, codegen

    @intrinsic
    def pick(typingctx, c, a, b):
        """``a if c else b`` for an int32 ``c`` and float32 ``a``, ``b`` as one ``selp.f32``:
        LLVM turns a chain of plain selects among loads of a local array into one load at a
        run-time index, which puts the array in local memory (seen in the sm_90 PTX)."""
        sig = types.float32(types.int32, types.float32, types.float32)

        def codegen(context, builder, sig, args):
            fnty = ir.FunctionType(ir.FloatType(), [_I32, ir.FloatType(), ir.FloatType()])
            asm = ir.InlineAsm(fnty, "{ .reg .pred p; setp.ne.s32 p, $1, 0; selp.f32 $0, $2, $3, p; }", "=f,r,f,f")
            return builder.call(asm, [args[0], args[1], args[2]])

        return sig, codegen

    #: PTX register constraint and load width of each integer element type load_nc reads
    _NC = {1: ("r", 8), 2: ("h", 16), 4: ("r", 32), 8: ("l", 64)}

    @intrinsic
    def load_nc(typingctx, a, i):
        """Element ``i`` of the integer array ``a`` by one ``ld.global.nc`` (the read-only
        path; ``a`` is not written while the kernel runs); integer arrays of 1, 2, 4 or 8 bytes."""
        if not isinstance(a, types.Array) or not isinstance(a.dtype, types.Integer) or a.dtype.bitwidth // 8 not in _NC:
            return None
        sig = a.dtype(a, i)

        def codegen(context, builder, sig, args):
            aty, ity = sig.args
            ary = context.make_array(aty)(context, builder, value=args[0])
            i = context.cast(builder, args[1], ity, types.intp)
            ptr = cgutils.get_item_pointer(context, builder, aty, ary, [i])
            width = context.get_abi_sizeof(context.get_data_type(aty.dtype))
            reg, bits = _NC[width]
            rty = ir.IntType(32 if reg == "r" else bits)
            asm = ir.InlineAsm(ir.FunctionType(rty, [ptr.type]), f"ld.global.nc.u{bits} $0, [$1];", f"={reg},l")
            word = builder.call(asm, [ptr])
            return builder.trunc(word, ir.IntType(bits)) if rty.width != bits else word

        return sig, codegen

    @intrinsic
    def f16x2(typingctx, word):
        """The two fp16 halves of an int32 word as fp32 (``cvt.f32.f16``), low half first."""
        sig = types.UniTuple(types.float32, 2)(types.int32)

        def codegen(context, builder, sig, args):
            i16 = ir.IntType(16)
            halves = (args[0], builder.lshr(args[0], _I32(16)))
            out = [builder.fpext(builder.bitcast(builder.trunc(h, i16), ir.HalfType()), ir.FloatType()) for h in halves]
            return context.make_tuple(builder, sig.return_type, out)

        return sig, codegen

    @cuda.jit(device=True)
    def bf16x2(word):
        """The two bf16 halves of an int32 word as fp32: each is the upper half of an fp32 word."""
        return int_as_float(int32(word << 16)), int_as_float(int32(word & 0xFFFF0000))


@device
def halves(word, bf16):
    """The two 16-bit elements of an int32 word as fp32, low half first: ``bf16x2`` or
    ``f16x2``. Kernels pass ``bf16`` as a closure constant (a bool: the on-disk cache keys
    on the closure's pickled bytes, and an intrinsic object pickles differently in every
    process), so the branch folds at compile time."""
    if bf16:
        return bf16x2(word)
    return f16x2(word)


@device
def bf16_to_f32(v):
    """bf16 bits (int16) -> fp32: the bits are the upper half of the fp32 word."""
    return int_as_float(int32(v) << 16)


@device
def f32_to_bf16(f):
    """fp32 -> bf16 bits (int16), round to nearest even; NaN -> the canonical quiet NaN."""
    if f != f:
        return int16(BF16_NAN)
    bits = float_as_int(f)
    bits += int32(0x7FFF) + ((bits >> 16) & 1)
    return int16(bits >> 16)


if SIMULATED:

    def load(a, i):
        v = a[i]
        if a.dtype == np.int16:
            return bf16_to_f32(v)
        return v if a.dtype == np.float64 else np.float32(v)

    def store(a, i, v):
        a[i] = f32_to_bf16(v) if a.dtype == np.int16 else v

    def like(g, c):
        return type(g)(c)

else:
    from numba.cuda.extending import overload

    def load(a, i):
        raise NotImplementedError("device code only")

    def store(a, i, v):
        raise NotImplementedError("device code only")

    def like(g, c):
        raise NotImplementedError("device code only")

    @overload(load, target="cuda")
    def _load(a, i):
        if a.dtype == types.int16:
            return lambda a, i: bf16_to_f32(a[i])
        if a.dtype == types.float64:
            return lambda a, i: a[i]
        return lambda a, i: float32(a[i])

    @overload(store, target="cuda")
    def _store(a, i, v):
        if a.dtype == types.int16:

            def impl(a, i, v):
                a[i] = f32_to_bf16(float32(v))

            return impl

        def impl(a, i, v):
            a[i] = v

        return impl

    @overload(like, target="cuda")
    def _like(g, c):
        kind = float64 if g == types.float64 else float32
        return lambda g, c: kind(c)


@device
def act(g, code):
    """``act(g)`` for activation ``code`` (same formulas as torch_backend.ACT)."""
    one, half = like(g, 1.0), like(g, 0.5)
    if code == SILU:
        return g / (one + math.exp(-g))
    if code == SIGMOID:
        return one / (one + math.exp(-g))
    if code == GELU:
        return g * half * (one + math.erf(g * like(g, SQRT1_2)))
    if code == GELU_TANH:
        return half * g * (one + math.tanh(like(g, GELU_TANH_C) * (g + like(g, GELU_TANH_A) * g * g * g)))
    if code == RELU:
        return g if g > like(g, 0.0) else like(g, 0.0)
    return g


@device
def act_and_grad(g, code):
    """``(act(g), act'(g))`` for activation ``code`` (same formulas as torch_backend.ACT)."""
    zero, one, half = like(g, 0.0), like(g, 1.0), like(g, 0.5)
    if code == SILU:
        s = one / (one + math.exp(-g))
        return g * s, s * (one + g * (one - s))
    if code == SIGMOID:
        s = one / (one + math.exp(-g))
        return s, s * (one - s)
    if code == GELU:
        cdf = half * (one + math.erf(g * like(g, SQRT1_2)))
        return g * cdf, cdf + g * like(g, INV_SQRT_2PI) * math.exp(-half * g * g)
    if code == GELU_TANH:
        c, a = like(g, GELU_TANH_C), like(g, GELU_TANH_A)
        t = math.tanh(c * (g + a * g * g * g))
        dt = (one - t * t) * c * (one + like(g, 3.0) * a * g * g)
        return half * g * (one + t), half * (one + t) + half * g * dt
    if code == RELU:
        return (g, one) if g > zero else (zero, zero)
    return g, one
