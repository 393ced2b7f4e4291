"""Float64 NumPy reference of MGLU, written from SPEC §1-3. No torch in this module.

Shapes: ``x (..., d_model)``, ``weight (d_ff, d_model)``, ``masks`` bool
``(n_masks, d_ff, d_model)``, ``out (..., d_ff)``.

    gate_i  = x @ (M_i * W).T,   value_i = x @ ((1 - M_i) * W).T
    out     = sum_i act(gate_i) * value_i

Backward, for upstream ``dout``:

    dG_i = dout * act'(gate_i) * value_i,   dV_i = dout * act(gate_i)
    dx   = sum_i dG_i @ (M_i W) + dV_i @ (Mc_i W)
    dW   = sum_i M_i * (dG_i.T @ x) + Mc_i * (dV_i.T @ x)
    dM_i = W * (dG_i - dV_i).T @ x            (straight-through: dS_i = dM_i)

The reference computes gate and value as two separate products (not ``total - gate``),
so it checks the kernels' identity rather than sharing it.
"""

import math

import numpy as np

from .activations import ACTIVATIONS, GELU_TANH_A, GELU_TANH_C

_erf = np.frompyfunc(math.erf, 1, 1)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _sigmoid(g):
    return 1.0 / (1.0 + np.exp(-g))


def _silu(g):
    return g * _sigmoid(g), _sigmoid(g) * (1.0 + g * (1.0 - _sigmoid(g)))


def _sig(g):
    s = _sigmoid(g)
    return s, s * (1.0 - s)


def _gelu(g):
    cdf = 0.5 * (1.0 + _erf(g * _INV_SQRT2).astype(np.float64))
    return g * cdf, cdf + g * _INV_SQRT2PI * np.exp(-0.5 * g * g)


def _gelu_tanh(g):
    t = np.tanh(GELU_TANH_C * (g + GELU_TANH_A * g**3))
    dt = (1.0 - t * t) * GELU_TANH_C * (1.0 + 3.0 * GELU_TANH_A * g * g)
    return 0.5 * g * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * g * dt


def _relu(g):
    return np.maximum(g, 0.0), (g > 0).astype(np.float64)


def _identity(g):
    return g, np.ones_like(g)


#: name -> g -> (act(g), act'(g)), both float64
ACT = {
    "silu": _silu,
    "sigmoid": _sig,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "relu": _relu,
    "identity": _identity,
}
assert tuple(ACT) == ACTIVATIONS


def unpack(packed: np.ndarray, d_model: int) -> np.ndarray:
    """Bool ``(n_masks, d_ff, d_model)`` from uint8 bit-planes: bit b of byte g is column 8g+b."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=-1, bitorder="little")
    return bits[..., :d_model].astype(bool)


def _streams(x2, w, masks):
    """Per mask: ``gate_i`` and ``value_i`` (tokens, d_ff) as separate float64 products."""
    m = masks.astype(np.float64)
    gates = np.einsum("tk,ink->itn", x2, m * w)
    values = np.einsum("tk,ink->itn", x2, (1.0 - m) * w)
    return m, gates, values


def _prepare(x, weight, masks):
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    return x, x.reshape(-1, x.shape[-1]), w, masks


def forward(x, weight, masks, activation: str = "silu") -> np.ndarray:
    """``out (..., d_ff)`` float64 = ``sum_i act(gate_i) * value_i``."""
    x, x2, w, masks = _prepare(x, weight, masks)
    _, gates, values = _streams(x2, w, masks)
    a, _ = ACT[activation](gates)
    return (a * values).sum(axis=0).reshape(*x.shape[:-1], w.shape[0])


def backward(x, weight, masks, dout, activation: str = "silu"):
    """``(dx, dW, dM)`` float64 for upstream ``dout (..., d_ff)``; ``dM`` is also ``dS``."""
    x, x2, w, masks = _prepare(x, weight, masks)
    m, gates, values = _streams(x2, w, masks)
    d = np.asarray(dout, dtype=np.float64).reshape(-1, w.shape[0])
    a, da = ACT[activation](gates)
    dg = d * da * values
    dv = d * a
    dx = np.einsum("itn,ink->tk", dg, m * w) + np.einsum("itn,ink->tk", dv, (1.0 - m) * w)
    pg = np.einsum("itn,tk->ink", dg, x2)
    pv = np.einsum("itn,tk->ink", dv, x2)
    dw = (m * pg + (1.0 - m) * pv).sum(axis=0)
    dm = w * (pg - pv)
    return dx.reshape(x.shape), dw, dm


def magnitudes(x, weight, masks, dout, activation: str = "silu") -> dict[str, np.ndarray]:
    """Each quantity's formula with every factor in absolute value, as the fast kernels group
    it (``value = total - gate``, ``dx`` from ``n_masks + 1`` products). It is the scale of
    the rounding a correct kernel makes, and the judge's denominator where a quantity
    vanishes identically (all-one masks make ``value``, ``out``, ``dx`` and ``dW`` zero)."""
    x, x2, w, masks = _prepare(x, weight, masks)
    m, gates, values = _streams(x2, w, masks)
    d = np.abs(np.asarray(dout, dtype=np.float64).reshape(-1, w.shape[0]))
    a, da = ACT[activation](gates)
    ax, aw = np.abs(x2), np.abs(w)
    total = ax @ aw.T
    dg, dv = d * np.abs(da) * total, d * np.abs(a)
    p = np.einsum("itn,tk->ink", dg + dv, ax)
    return {
        "out": (np.abs(a) * total).sum(axis=0).reshape(*x.shape[:-1], w.shape[0]),
        "dx": ((dg + dv).sum(axis=0) @ aw).reshape(x.shape),
        "dW": p.sum(axis=0),
        "dS": aw * p,
    }
