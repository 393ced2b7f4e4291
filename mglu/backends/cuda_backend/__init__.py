"""CUDA C++ backend: kernels in ``*.cu`` compiled at run time by NVRTC through CuPy.

Shapes: ``x2d (T, d_model)``, ``weight (d_ff, d_model)``, ``packed (n_masks, d_ff,
ceil(d_model/8))`` uint8. Forward, one read of ``W`` and the bits per (token, row)::

    total = x2d @ W.T;  gate_i = x2d @ (M_i * W).T;  out = sum_i act(gate_i) * (total - gate_i)

Backward (SPEC §3) in three kernels, no ``(n_masks, d_ff, d_model)`` fp32 intermediate::

    A: D_i = dout * (act'(gate_i) * (total - gate_i) - act(gate_i)),  S = sum_i dout * act(gate_i)
    B: dx  = sum_i D_i @ (M_i W) + S @ W
    C: P_i = D_i.T @ x2d;  dW = sum_i M_i * P_i + S.T @ x2d;  dM_i = W * P_i

fp16/bf16 from ``launcher.GEMM_MIN_TOKENS`` tokens: ``WM_i = M_i * W`` staged in HBM
(``n_masks`` planes of the input dtype, freed after use), then forward, A, B and C are each
one shared-memory GEMM over the ``n_masks + 1`` planes (mglu_gemm.cu); A's ``D`` and ``S``
share one ``(n_masks + 1, T, d_ff)`` buffer (``S`` first). Each backward buffer is
allocated when its kernel comes and the staged weights are freed before ``dW``/``dM``.

``D`` and ``S`` are rounded to the input dtype (as the torch backend does). Accumulation in
fp32 (fp64 for fp64), IEEE; activations as ``torch_backend.ACT``. See DESIGN.md.
"""

import functools

import numpy as np
import torch

from ..base import Backend, Problem, new_output
from . import launcher
from .launcher import (GEMM_DS, GEMM_DW, GEMM_DX, GEMM_FWD, MODE_BWD, MODE_FWD, aligned, dw_plan, dx_plan, expand_plan,
                       gemm_plan, launch, pointer, rowdot_plan)

#: bf16 conversions (cvt.rn.bf16.f32) need sm_80
MIN_CAPABILITY = (8, 0)


@functools.cache
def _cupy_missing() -> str | None:
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return f"cupy is not installed or does not load ({type(exc).__name__}: {exc})"
    return None


def reasons(problem: Problem) -> list[str]:
    """Runs CUDA tensors on sm_80 or newer with CuPy installed, within the grid limits."""
    if problem.device.type != "cuda":
        return [f"needs a CUDA tensor (got {problem.device.type})"]
    out = []
    missing = _cupy_missing()
    if missing:
        out.append(missing)
    cap = launcher._capability(problem.device.index if problem.device.index is not None else torch.cuda.current_device())
    if cap < MIN_CAPABILITY:
        out.append(f"needs compute capability {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer (got {cap[0]}.{cap[1]})")
    return out + launcher.grid_limits(problem.tokens, problem.d_ff)


def _what(x2d, weight, packed, activation):
    """The problem in words, for an error message (built only when a launch fails)."""
    return lambda: (f"T={x2d.shape[0]} d_model={x2d.shape[1]} d_ff={weight.shape[0]} n_masks={packed.shape[0]} "
                    f"dtype={x2d.dtype} activation={activation}")


#: the decode kernel's 32-bit mask loads need 4-byte aligned mask rows
MASK_WORD_BYTES = 4


def _rowdot(mode, x2d, weight, packed, activation, dout, out, dbuf, variant=None):
    tokens, d_model = x2d.shape
    d_ff, n_masks = weight.shape[0], packed.shape[0]
    # the ring kernel's 16-byte copies (launcher.ring_ok); asked only where it may run (its
    # defaults start at 2 tokens; a ring variant named at 1 token runs too)
    aligned16 = (tokens > 1 or variant in launcher.RING_VARIANTS) and aligned(x2d, weight, packed)
    plan = rowdot_plan(x2d.dtype, n_masks, mode, tokens, d_ff, d_model, variant, aligned16)
    args = [pointer(x2d), pointer(weight), pointer(packed), pointer(dout), pointer(out), pointer(dbuf),
            np.int32(tokens), np.int32(d_model), np.int32(d_ff), np.int32(launcher.activation_id(activation))]
    if plan.takes_vec:
        vec = int(d_model % 8 == 0 and aligned(x2d, weight))
        # 32-bit mask words: mask rows of d_model / 8 bytes, a multiple of 4
        if vec and plan.word_masks and d_model % 32 == 0 and packed.data_ptr() % MASK_WORD_BYTES == 0:
            vec = 2
        args.append(np.int32(vec))
    args += [np.int32(v) for v in plan.tail]
    launch(plan, tuple(args), x2d.device, _what(x2d, weight, packed, activation))


def _uses_gemm(x2d, weight, *more) -> bool:
    """The staged GEMM path: fp16/bf16, GEMM_MIN_TOKENS tokens or more, d_model and d_ff
    multiples of 8, 16-byte aligned inputs (the staged buffers are fresh allocations)."""
    return launcher.gemm_shapes_ok(x2d.dtype, x2d.shape[0], x2d.shape[1], weight.shape[0]) and aligned(
        x2d, weight, *more)


def _expand(weight, packed, what):
    """``WM (n_masks, d_ff, d_model)`` = ``M_i * W`` in the weight's dtype."""
    wm = torch.empty((packed.shape[0], *weight.shape), dtype=weight.dtype, device=weight.device)
    launch(expand_plan(weight.dtype, *weight.shape), (pointer(weight), pointer(packed), pointer(wm),
           np.int32(packed.shape[0]), np.int32(weight.shape[0]), np.int32(weight.shape[1])), weight.device, what)
    return wm


def _gemm(mode, what, a, b0, b1, planes, m, n, k, act=0, dout=None, masks=None, w=None, out=None, dbuf=None,
          dm=None):
    """One mglu_gemm launch (argument order of the kernel)."""
    plan = gemm_plan(a.dtype, mode, m, n, planes - 1, None if dm is None else dm.dtype)
    launch(plan, (pointer(a), pointer(b0), pointer(b1), np.int32(planes), np.int32(m), np.int32(n), np.int32(k),
                  np.int32(act), pointer(dout), pointer(masks), pointer(w), pointer(out), pointer(dbuf),
                  pointer(dm)), a.device, what)


def forward(x2d, weight, packed, activation, variant=None):
    """``out (T, d_ff)`` = ``sum_i act(gate_i) * (total - gate_i)`` in ``x2d.dtype``;
    ``variant`` (scripts/cuda_tune.py): a kernel variant of launcher.rowdot_plan, None the
    default (the staged GEMM where :func:`_uses_gemm`)."""
    (tokens, d_model), (d_ff, n_masks) = x2d.shape, (weight.shape[0], packed.shape[0])
    out = new_output((tokens, d_ff), x2d.dtype, x2d.device)
    if variant is None and _uses_gemm(x2d, weight):
        what = _what(x2d, weight, packed, activation)
        wm = _expand(weight, packed, what)
        _gemm(GEMM_FWD, what, x2d, weight, wm, n_masks + 1, tokens, d_ff, d_model,
              act=launcher.activation_id(activation), out=out)
    elif tokens > 0:
        _rowdot(MODE_FWD, x2d, weight, packed, activation, None, out, None, variant)
    return out


def _backward_gemm(dout, x2d, weight, packed, activation, dmask_dtype):
    """The staged GEMM backward: WM, then DS (S first) by the forward's products, dx over the
    n_masks + 1 planes, WM freed, dW/dM with one P_i accumulator a plane (no fp32 buffer)."""
    (tokens, d_model), (d_ff, n_masks) = x2d.shape, (weight.shape[0], packed.shape[0])
    dtype, device = x2d.dtype, x2d.device
    what = _what(x2d, weight, packed, activation)
    wm = _expand(weight, packed, what)
    ds = torch.empty((n_masks + 1, tokens, d_ff), dtype=dtype, device=device)
    _gemm(GEMM_DS, what, x2d, weight, wm, n_masks + 1, tokens, d_ff, d_model, act=launcher.activation_id(activation),
          dout=dout, out=ds[0], dbuf=ds[1])
    dx = new_output((tokens, d_model), dtype, device)
    _gemm(GEMM_DX, what, ds, weight, wm, n_masks + 1, tokens, d_model, d_ff, out=dx)
    del wm
    dw = new_output((d_ff, d_model), dtype, device)
    dm = None if dmask_dtype is None else new_output((n_masks, d_ff, d_model), dmask_dtype, device)
    _gemm(GEMM_DW, what, ds, x2d, None, n_masks + 1, d_ff, d_model, tokens, masks=packed, w=weight, out=dw, dm=dm)
    return dx, dw, dm


def backward(dout, x2d, weight, packed, activation, dmask_dtype):
    """``(dx, dW, dM)``; ``dM (n_masks, d_ff, d_model)`` in ``dmask_dtype``, or ``None``."""
    if _uses_gemm(x2d, weight, dout):
        return _backward_gemm(dout, x2d, weight, packed, activation, dmask_dtype)
    tokens, d_model = x2d.shape
    d_ff, n_masks = weight.shape[0], packed.shape[0]
    dtype, device = x2d.dtype, x2d.device
    what = _what(x2d, weight, packed, activation)
    dx = new_output((tokens, d_model), dtype, device)
    dw = new_output((d_ff, d_model), dtype, device)
    dm = None if dmask_dtype is None else new_output((n_masks, d_ff, d_model), dmask_dtype, device)
    # scratch, every element written by kernel A before B and C read it
    dbuf = torch.empty((n_masks, tokens, d_ff), dtype=dtype, device=device)
    s = torch.empty((tokens, d_ff), dtype=dtype, device=device)
    if tokens > 0:
        _rowdot(MODE_BWD, x2d, weight, packed, activation, dout, s, dbuf)
        plan = dx_plan(dtype, tokens, d_model)
        args = [pointer(weight), pointer(packed), pointer(dbuf), pointer(s), pointer(dx),
                np.int32(n_masks), np.int32(tokens), np.int32(d_model), np.int32(d_ff)]
        if plan.takes_vec:  # D and S rows read with 16-byte loads
            args.append(np.int32(d_ff % 8 == 0 and aligned(dbuf, s)))
        launch(plan, tuple(args), device, what)
    launch(dw_plan(dtype, dmask_dtype, d_ff, d_model),
           (pointer(x2d), pointer(weight), pointer(packed), pointer(dbuf), pointer(s), pointer(dw), pointer(dm),
            np.int32(n_masks), np.int32(tokens), np.int32(d_model), np.int32(d_ff)), device, what)
    return dx, dw, dm


BACKEND = Backend(
    name="cuda",
    reasons=reasons,
    forward=forward,
    backward=backward,
    description="CUDA C++ kernels compiled at run time through CuPy/NVRTC",
)
