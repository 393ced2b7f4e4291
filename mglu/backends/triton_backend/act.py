"""The six gate activations and their derivatives as Triton device functions.

``act(g, ACT)`` and ``act_grad(g, ACT) -> (act(g), act'(g))`` for ``g`` in fp32 or fp64
(``tl.exp``/``tl.sigmoid`` accept only those; a ``tl.constexpr`` global must stand
right of a tensor in a product, or the product becomes a constexpr), ``ACT`` the index of the name in
:data:`mglu.activations.ACTIVATIONS` (a ``tl.constexpr``, so each kernel specialises on
it). The formulas are those of ``mglu.backends.torch_backend.ACT``; tanh is written as
``2 * sigmoid(2u) - 1`` (``tl`` has no tanh that runs both compiled and interpreted).
"""

import triton
import triton.language as tl

from ...activations import ACTIVATIONS, GELU_TANH_A, GELU_TANH_C

#: activation name -> the ``ACT`` constexpr the kernels take
ACT_ID = {name: i for i, name in enumerate(ACTIVATIONS)}
assert tuple(ACT_ID) == ("silu", "sigmoid", "gelu", "gelu_tanh", "relu", "identity")

_C = tl.constexpr(GELU_TANH_C)
_A = tl.constexpr(GELU_TANH_A)
_INV_SQRT2 = tl.constexpr(0.7071067811865476)
_INV_SQRT2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _sigmoid(g):
    return 1.0 / (1.0 + tl.exp(-g))


@triton.jit
def _tanh(u):
    return 2.0 * _sigmoid(2.0 * u) - 1.0


@triton.jit
def act(g, ACT: tl.constexpr):
    """``act(g)`` elementwise."""
    if ACT == 0:
        r = g * _sigmoid(g)
    elif ACT == 1:
        r = _sigmoid(g)
    elif ACT == 2:
        r = 0.5 * g * (1.0 + tl.erf(g * _INV_SQRT2))
    elif ACT == 3:
        r = 0.5 * g * (1.0 + _tanh((g + g * g * g * _A) * _C))
    elif ACT == 4:
        r = tl.where(g > 0, g, 0.0)
    else:
        r = g
    return r


@triton.jit
def act_grad(g, ACT: tl.constexpr):
    """``(act(g), act'(g))`` elementwise."""
    if ACT == 0:
        s = _sigmoid(g)
        a = g * s
        d = s * (1.0 + g * (1.0 - s))
    elif ACT == 1:
        a = _sigmoid(g)
        d = a * (1.0 - a)
    elif ACT == 2:
        cdf = 0.5 * (1.0 + tl.erf(g * _INV_SQRT2))
        a = g * cdf
        d = cdf + g * _INV_SQRT2PI * tl.exp(-0.5 * g * g)
    elif ACT == 3:
        t = _tanh((g + g * g * g * _A) * _C)
        a = 0.5 * g * (1.0 + t)
        d = 0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * _C * (1.0 + g * g * (3.0 * _A))
    elif ACT == 4:
        a = tl.where(g > 0, g, 0.0)
        d = tl.where(g > 0, 1.0, 0.0)
    else:
        a = g
        d = tl.full(g.shape, 1.0, g.dtype)
    return a, d
