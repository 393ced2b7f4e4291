"""Launchers of the Triton kernels: tile choice (``tiles.py``), grids, output buffers.

Shapes: ``x2d (T, K)``, ``weight (N, K)``, ``packed (n, N, KB)``; outputs from
:func:`mglu.backends.base.new_output` (NaN-poisoned under conformance). Every launch goes
on PyTorch's current stream (Triton's own rule); nothing here synchronises the host or
reads device values, so calls are CUDA-graph capturable once compiled.
"""

import torch
import triton
import triton.language as tl

from ..base import new_output
from . import _capability, interpreting, kernels, tiles
from .act import ACT_ID

#: fp32 dots are IEEE (SPEC §4: no TF32 unless a caller opts in)
PRECISION = "ieee"
#: Triton's interpreter is only right in bf16 (and exact in fp16) with fp32 operands
_UPCAST = (torch.float16, torch.bfloat16)
#: wgmma.fwd_wgmma's operand layouts (k_width 2, the pair selects) are for 16-bit elements
_WGMMA_DTYPES = (torch.float16, torch.bfloat16)


def _cdiv(a: int, b: int) -> int:
    """``ceil(a / b)``; ``triton.cdiv`` is a jitted function whose Python call cost ~6 us
    of host time per launch on our CPU machine (cProfile of the eager one-token call)."""
    return -(-a // b)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _upcast(dtype: torch.dtype) -> bool:
    return interpreting() and dtype in _UPCAST


def forward(x2d, weight, packed, activation, factors=None):
    """``out (T, d_ff) = sum_i act(gate_i) * (total - gate_i)`` in ``x2d.dtype``; with
    ``factors`` (``(n + 1, T, d_ff)``, input dtype), the tensor-core kernel also writes the
    backward's gradient factors there (``F[i] = act'(g_i) (total - g_i) - act(g_i)``,
    ``F[n] = sum_i act(g_i)``)."""
    T, K = x2d.shape
    N, n = weight.shape[0], packed.shape[0]
    out = new_output((T, N), x2d.dtype, x2d.device)
    if T == 0:
        return out
    act = ACT_ID[activation]
    if factors is None and T <= tiles.GEMV_MAX_TOKENS:
        launch_gemv(x2d, weight, packed, out, act, tiles.gemv_tiles(n))
    elif factors is None and wgmma_ok(x2d, weight, packed):
        launch_wgmma(x2d, weight, packed, out, act, tiles.wgmma_tiles(n, T))
    else:
        c = _fwd_tiles(x2d.dtype, T, n)
        launch_gates(x2d, weight, packed, out, factors, act, 0 if factors is None else 2, c,
                     expand(weight, packed) if c.staged else None)
    return out


def wgmma_ok(x2d, weight, packed) -> bool:
    """Whether ``wgmma.fwd_wgmma`` serves this forward (its regime, tiles.WGMMA_*): a
    Hopper GPU (sm_90: wgmma), fp16/bf16, ``2 <= T <= WGMMA_NARROW_TOKENS`` or, at up to
    ``WGMMA_WIDE_MAX_MASKS`` masks, ``T <= WGMMA_MAX_TOKENS``, ``d_model`` a multiple of
    ``WGMMA_BK`` (whole stages, whole 16-byte mask rows) and every input 16-byte aligned
    (its 16-byte cp.async copies). Other calls take fwd_mma."""
    T, K = x2d.shape
    return (x2d.is_cuda and not interpreting() and x2d.dtype in _WGMMA_DTYPES
            and tiles.wgmma_serves(T, packed.shape[0]) and K % tiles.WGMMA_BK == 0
            and _capability(x2d.device.index) == (9, 0)
            and x2d.data_ptr() % 16 == 0 and weight.data_ptr() % 16 == 0 and packed.data_ptr() % 16 == 0)


def expand(weight, packed):
    """``WM (n_masks, N, K)``: the masked weights ``M_i W`` staged in HBM (``expand_masks``)."""
    (N, K), n = weight.shape, packed.shape[0]
    wm = new_output((n, N, K), weight.dtype, weight.device)
    c = tiles.EXPAND_TILES
    kernels.expand_masks[(_cdiv(N, c.BN), _cdiv(K, c.BK))](
        weight, packed, wm, N, K, packed.shape[2], N_MASKS=n, BN=c.BN, BK=c.BK, num_warps=c.num_warps)
    return wm


def _fwd_tiles(dtype, T: int, n: int) -> tiles.Mma:
    if dtype == torch.float64:
        return tiles.FP64_TILES
    return tiles.mma_fwd_tiles(T, n, dtype.itemsize)


def launch_gemv(x2d, weight, packed, out, act: int, c: tiles.Gemv):
    """``fwd_gemv`` with tiles ``c`` (``scripts/triton_tune.py`` passes its own), through
    :func:`_launch_compiled` on a GPU."""
    T, K = x2d.shape
    N, n = weight.shape[0], packed.shape[0]
    grid = (T, _cdiv(N, c.BN))
    args = (x2d, weight, packed, out, N, K, packed.shape[2])
    constexprs = dict(N_MASKS=n, G=tiles.gate_group(n, tiles.MAX_GEMV_ACCS), ACT=act, BN=c.BN, BG=c.BG,
                      UNROLL=c.UNROLL, ASM=not interpreting() and x2d.dtype != torch.float64, ACC=_acc(x2d.dtype))
    options = dict(num_warps=c.num_warps, maxnreg=c.maxnreg)
    if interpreting():
        return kernels.fwd_gemv[grid](*args, **constexprs, **options)
    return _launch_compiled(kernels.fwd_gemv, grid, args, constexprs, options)


#: compiled kernels by (kernel, device, constexprs, options, the arguments' specialisation)
_COMPILED = {}


def _specialisation(v) -> tuple:
    """What Triton specialises a runtime argument (a tensor or an int) on, or finer: a
    tensor's dtype and 16-byte alignment; an int's being 1, its divisibility by 16 and its
    width (i32/i64)."""
    if type(v) is int:
        return v == 1, v % 16 == 0, -(2**31) <= v < 2**31
    return v.dtype, v.data_ptr() % 16 == 0


def _hook_set(hook) -> bool:
    """Whether a Triton launch hook is active: a callable (triton 3.4-3.6 keep ``None`` when
    unset), or a ``HookChain`` with calls in it (later versions keep an empty chain)."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _launch_compiled(jit_fn, grid, args: tuple, constexprs: dict, options: dict):
    """``jit_fn[grid](*args, **constexprs, **options)`` on PyTorch's current stream, without
    Triton's per-call binding after the first call of a specialisation: the compiled
    kernel is kept under a key at least as fine as Triton's own cache key (the constexprs,
    options and :func:`_specialisation` of every argument) and launched through
    ``CompiledKernel.run``, the call ``JITFunction.run`` ends in (triton/runtime/jit.py). On
    the H200 ``JITFunction.run`` was the largest host cost of an eager decode call after
    the op's own code (``scripts/host_loop.py --profile``, triton_backend/MEASUREMENTS_H200.md run
    27). With a launch hook set (a profiler) every call takes Triton's own path."""
    runtime = triton.knobs.runtime
    hooked = _hook_set(runtime.launch_enter_hook) or _hook_set(runtime.launch_exit_hook)
    device = args[0].device.index
    key = (jit_fn, device, *constexprs.values(), *options.values(), *map(_specialisation, args))
    hit = None if hooked else _COMPILED.get(key)
    if hit is None:
        kernel = jit_fn[grid](*args, **constexprs, **options)
        # the constexprs in the kernel's parameter order, after the runtime arguments
        _COMPILED[key] = (kernel, tuple(constexprs[a] for a in jit_fn.arg_names[len(args):]))
        return kernel
    kernel, tail = hit
    stream = torch._C._cuda_getCurrentRawStream(device)
    kernel.run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1, stream, kernel.function,
               kernel.packed_metadata, None, None, None, *args, *tail)
    return kernel


def wgmma_constexprs(n: int, act: int, c: tiles.Wgmma) -> dict:
    """``fwd_wgmma``'s compile-time arguments for ``n`` masks and tiles ``c`` (as
    scripts/triton_compile_check.py and tests/test_triton_wgmma.py compile it)."""
    return dict(N_MASKS=n, G=tiles.gate_group(n, c.gates), ACT=act, BN=tiles.WGMMA_BN, BT=c.BT, BK=c.BK,
                STAGES=c.stages, WAIT=c.wait)


def launch_wgmma(x2d, weight, packed, out, act: int, c: tiles.Wgmma):
    """``wgmma.fwd_wgmma`` (Gluon; sm_90, fp16/bf16, ``T <= c.BT``, ``K % c.BK == 0``,
    16-byte aligned rows) with tiles ``c``, through :func:`_launch_compiled`."""
    from . import wgmma

    T, K = x2d.shape
    N, n = weight.shape[0], packed.shape[0]
    if T > c.BT or K % c.BK:
        raise ValueError(f"fwd_wgmma with BT={c.BT}, BK={c.BK} cannot take {T} tokens of d_model {K}")
    grid = (_cdiv(N, tiles.WGMMA_BN),)
    # the planes as 32-bit words (K % 128 == 0: whole words a row)
    args = (x2d, weight, packed.view(torch.int32), out, T, N, K, packed.shape[2] // 4)
    return _launch_compiled(wgmma.fwd_wgmma, grid, args, wgmma_constexprs(n, act, c), dict(num_warps=4))


def launch_gates(x2d, weight, packed, dst, aux, act: int, mode: int, c: tiles.Mma, wm=None):
    """``fwd_mma``: ``out`` (mode 0; mode 2 also fills ``aux``, the factors) or the backward's
    ``DS`` from ``aux = dout`` (mode 1), tiles ``c``; the masked tiles are read from ``wm``
    (:func:`expand`) when given, else built from the bits."""
    T, K = x2d.shape
    N, n = weight.shape[0], packed.shape[0]
    g = tiles.gate_group(n, c.gates)
    grid = (_cdiv(N, c.BN) * _cdiv(T, c.BT),)
    return kernels.fwd_mma[grid](
        x2d, weight, packed, wm, dst, aux, T, N, K, packed.shape[2],
        N_MASKS=n, G=g, ACT=act, MODE=mode, BN=c.BN, BT=c.BT, BK=c.BK, GROUP=tiles.GROUP, STAGED=wm is not None,
        PREC=PRECISION, UPCAST=_upcast(x2d.dtype), ACC=_acc(x2d.dtype), PAIRS=_pairs(c, x2d.dtype),
        num_warps=c.num_warps, num_stages=c.num_stages)


def _pairs(c: tiles.Mma, dtype) -> bool:
    """Whether tiles ``c`` build their masked tiles in inline PTX (``Mma.pairs``)."""
    return c.pairs and not c.staged and dtype in (torch.float16, torch.bfloat16) and not interpreting()


def backward(dout, x2d, weight, packed, activation, dmask_dtype, factors=None):
    """``(dx, dW, dM)`` of SPEC §3; ``dM`` is ``None`` when ``dmask_dtype`` is ``None``.

    Pass 1 writes ``DS (n + 1, T, N)`` in the input dtype: ``DS[i] = dout * (act'(g_i)
    (total - g_i) - act(g_i))``, ``DS[n] = sum_i dout * act(g_i)`` (the torch backend's
    ``D_i`` and ``S``), element-wise from the forward's saved ``factors`` when given (the
    factor rounded to the input dtype, then the product: two roundings), else recomputing
    the gates (``fwd_mma``, MODE 1: one rounding, as the torch backend).
    """
    T, K = x2d.shape
    N, n = weight.shape[0], packed.shape[0]
    dtype, dev = x2d.dtype, x2d.device
    if T == 0:
        dm = new_output((n, N, K), dmask_dtype, dev).zero_() if dmask_dtype is not None else None
        return new_output((T, K), dtype, dev), new_output((N, K), dtype, dev).zero_(), dm
    # each buffer is allocated when its kernel comes: the peak holds DS with either the
    # staged weights and dx or dW and dM, not all of them
    ds = new_output((n + 1, T, N), dtype, dev)
    fp64 = dtype == torch.float64
    c = _fwd_tiles(dtype, T, n)
    if factors is not None:
        b = tiles.DS_BLOCK
        kernels.ds_from_factors[(_cdiv(T * N, b),)](factors, dout, ds, T * N, N_MASKS=n, BLOCK=b,
                                                           ACC=_acc(dtype), num_warps=tiles.DS_WARPS)
    wm = expand(weight, packed) if c.staged else None
    if factors is None:
        launch_gates(x2d, weight, packed, ds, dout, ACT_ID[activation], 1, c, wm)
    dx = new_output((T, K), dtype, dev)
    launch_dx(ds, weight, packed, dx, tiles.FP64_TILES if fp64 else tiles.mma_dx_tiles(T, c.staged), wm)
    del wm
    dw = new_output((N, K), dtype, dev)
    dm = new_output((n, N, K), dmask_dtype, dev) if dmask_dtype is not None else None
    launch_dw(ds, x2d, weight, packed, dw, dm, tiles.FP64_TILES if fp64 else tiles.mma_dw_tiles())
    return dx, dw, dm


def launch_dx(ds, weight, packed, dx, c: tiles.Mma, wm=None):
    """``bwd_dx``: ``dx = sum_{i <= n} DS[i] @ (M_i W)`` with tiles ``c``, the masked tiles
    from ``wm`` when given."""
    T, K = dx.shape
    N, n = weight.shape[0], packed.shape[0]
    grid = (_cdiv(T, c.BT) * _cdiv(K, c.BK),)
    return kernels.bwd_dx[grid](
        ds, weight, packed, wm, dx, T, N, K, packed.shape[2],
        N_MASKS=n, BT=c.BT, BN=c.BN, BK=c.BK, GROUP=tiles.GROUP, STAGED=wm is not None, PREC=PRECISION,
        UPCAST=_upcast(dx.dtype), ACC=_acc(dx.dtype), num_warps=c.num_warps, num_stages=c.num_stages)


def launch_dw(ds, x2d, weight, packed, dw, dm, c: tiles.Mma):
    """``bwd_dw``: ``dW`` and, when ``dm`` is given, ``dM_i = W * P_i``, with tiles ``c``."""
    T, K = x2d.shape
    N, n = weight.shape[0], packed.shape[0]
    grid = (_cdiv(N, c.BN) * _cdiv(K, c.BK),)
    return kernels.bwd_dw[grid](
        ds, x2d, weight, packed, dw, dm if dm is not None else dw, T, N, K, packed.shape[2],
        N_MASKS=n, HAS_DM=dm is not None, BN=c.BN, BK=c.BK, BT=c.BT, GROUP=tiles.GROUP,
        PREC=PRECISION, UPCAST=_upcast(dw.dtype), ACC=_acc(dw.dtype),
        num_warps=c.num_warps, num_stages=c.num_stages)
