"""Pure-PyTorch MGLU: the CPU default and the ``e_torch`` yardstick of SPEC §4.

Shapes: ``x2d (T, d_model)``, ``weight (d_ff, d_model)``, ``packed (n_masks, d_ff,
ceil(d_model/8))`` uint8.  Forward, with ``total = x2d @ W.T`` and one product per mask::

    gate_i = x2d @ (M_i * W).T;   out = sum_i act(gate_i) * (total - gate_i)

Backward (SPEC §3), ``n_masks + 1`` products each for ``dx`` and ``dW``::

    D_i = dout * (act'(gate_i) * value_i - act(gate_i));   S = sum_i dout * act(gate_i)
    dx  = sum_i D_i @ (M_i W) + S @ W
    P_i = D_i.T @ x2d;   dW = sum_i M_i * P_i + S.T @ x2d;   dM_i = W * P_i

Products read their operands in the input dtype and return fp32 (fp64 for fp64) without
rounding to the input dtype in between (:func:`_mm`); everything elementwise accumulates
in that type. One masked copy of ``W`` exists at a time. fp32 products follow PyTorch's
matmul precision setting, IEEE by default.
"""

import torch
import torch.nn.functional as F

from ..activations import ACTIVATIONS, GELU_TANH_A, GELU_TANH_C
from ..dtypes import accum_dtype
from ..masks import unpack_bits
from .base import Backend, Problem, new_output


def _act_silu(g, grad):
    s = torch.sigmoid(g)
    return g * s, s * (1.0 + g * (1.0 - s)) if grad else None


def _act_sigmoid(g, grad):
    s = torch.sigmoid(g)
    return s, s * (1.0 - s) if grad else None


def _act_gelu(g, grad):
    cdf = 0.5 * (1.0 + torch.erf(g * 0.7071067811865476))
    return g * cdf, cdf + g * 0.3989422804014327 * torch.exp(-0.5 * g * g) if grad else None


def _act_gelu_tanh(g, grad):
    t = torch.tanh(GELU_TANH_C * (g + GELU_TANH_A * g * g * g))
    if not grad:
        return 0.5 * g * (1.0 + t), None
    dt = (1.0 - t * t) * GELU_TANH_C * (1.0 + 3.0 * GELU_TANH_A * g * g)
    return 0.5 * g * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * g * dt


def _act_relu(g, grad):
    return F.relu(g), (g > 0).to(g.dtype) if grad else None


def _act_identity(g, grad):
    return g, torch.ones_like(g) if grad else None


#: name -> (g, grad) -> (act(g), act'(g) or None); tests check the keys against ACTIVATIONS
ACT = {
    "silu": _act_silu,
    "sigmoid": _act_sigmoid,
    "gelu": _act_gelu,
    "gelu_tanh": _act_gelu_tanh,
    "relu": _act_relu,
    "identity": _act_identity,
}
assert tuple(ACT) == ACTIVATIONS


def _mm(a, b, acc_t):
    """``a @ b`` in ``acc_t`` from operands in the input dtype, no intermediate rounding.

    On CUDA, half types go through cuBLAS with fp32 output (``out_dtype``); the CPU has no
    such kernel, so there the operands are widened first (exact, so the result is the same
    product).
    """
    if a.dtype == acc_t:
        return a @ b
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=acc_t)
    return a.to(acc_t) @ b.to(acc_t)


def _masked(weight, bits):
    return torch.where(bits, weight, 0.0)


def forward(x2d, weight, packed, activation):
    """``out (T, d_ff)`` = ``sum_i act(gate_i) * (total - gate_i)`` in ``x2d.dtype``."""
    acc_t = accum_dtype(x2d.dtype)
    d_model = x2d.shape[1]
    total = _mm(x2d, weight.T, acc_t)
    acc = torch.zeros_like(total)
    for i in range(packed.shape[0]):
        gate = _mm(x2d, _masked(weight, unpack_bits(packed[i], d_model)).T, acc_t)
        act, _ = ACT[activation](gate, False)
        acc += act * (total - gate)
    out = new_output(total.shape, x2d.dtype, x2d.device)
    return out.copy_(acc)


def backward(dout, x2d, weight, packed, activation, dmask_dtype):
    """``(dx, dW, dM)``; ``dM`` is ``None`` when ``dmask_dtype`` is ``None``."""
    dtype, acc_t = x2d.dtype, accum_dtype(x2d.dtype)
    n_masks, d_ff, d_model = packed.shape[0], weight.shape[0], x2d.shape[1]
    d = dout.to(acc_t)
    total = _mm(x2d, weight.T, acc_t)
    dx = torch.zeros(x2d.shape, dtype=acc_t, device=x2d.device)
    dw = torch.zeros(weight.shape, dtype=acc_t, device=x2d.device)
    s = torch.zeros_like(total)
    dm = w_acc = None
    if dmask_dtype is not None:
        dm = new_output((n_masks, d_ff, d_model), dmask_dtype, x2d.device)
        w_acc = weight.to(acc_t)
    for i in range(n_masks):
        bits = unpack_bits(packed[i], d_model)
        w_i = _masked(weight, bits)
        gate = _mm(x2d, w_i.T, acc_t)
        act, dact = ACT[activation](gate, True)
        dv = d * act
        d_i = (d * dact * (total - gate) - dv).to(dtype)
        s += dv
        dx += _mm(d_i, w_i, acc_t)
        p_i = _mm(d_i.T, x2d, acc_t)
        dw += torch.where(bits, p_i, 0.0)
        if dm is not None:
            dm[i].copy_(w_acc * p_i)
    s = s.to(dtype)
    dx += _mm(s, weight, acc_t)
    dw += _mm(s.T, x2d, acc_t)
    dx_out = new_output(x2d.shape, dtype, x2d.device).copy_(dx)
    dw_out = new_output(weight.shape, dtype, x2d.device).copy_(dw)
    return dx_out, dw_out, dm


def reasons(problem: Problem) -> list[str]:
    """The torch backend runs every validated call on CPU and CUDA tensors."""
    if problem.device.type not in ("cpu", "cuda"):
        return [f"device type {problem.device.type!r} is untested (cpu and cuda are)"]
    return []


BACKEND = Backend(
    name="torch",
    reasons=reasons,
    forward=forward,
    backward=backward,
    description="pure PyTorch, n_masks+1 products per pass (CPU and CUDA)",
)
