"""The public op and its one registered op pair (SPEC §5).

``mglu(x, weight, masks)`` with ``x (..., d_model)``, ``weight (d_ff, d_model)`` and
``masks`` either packed uint8 ``(n_masks, d_ff, ceil(d_model/8))`` (frozen) or floating
logits ``(n_masks, d_ff, d_model)`` (trainable, straight-through) returns
``out (..., d_ff) = sum_i act(x @ (M_i W).T) * (x @ (Mc_i W).T)``.

``mglu::forward`` and ``mglu::backward`` are ``torch.library.custom_op``s with fake
(meta) kernels and one autograd rule; the backend name travels as a string argument and
is resolved inside the op, so autograd and ``torch.compile`` see one op for all backends.
"""

from typing import Optional

import torch
from torch import Tensor

from . import dispatch
from .activations import DEFAULT_ACTIVATION, check_activation
from .backends import Problem
from .dtypes import DTYPE_NAMES, SUPPORTED_DTYPES
from .errors import MGLUTypeError, MGLUValueError
from .masks import check_n_masks, check_packed, pack_masks


@torch.library.custom_op("mglu::forward", mutates_args=())
def forward_op(
    x2d: Tensor, weight: Tensor, packed: Tensor, logits: Optional[Tensor], activation: str, backend: str
) -> Tensor:
    """``out (T, d_ff)`` on the backend ``backend`` resolves to; ``logits`` only routes grads."""
    x2d, weight, packed = x2d.contiguous(), weight.contiguous(), packed.contiguous()
    chosen = dispatch.select(backend, Problem.of(x2d, weight, packed, activation))
    return chosen.forward(x2d, weight, packed, activation)


@forward_op.register_fake
def _forward_fake(x2d, weight, packed, logits, activation, backend):
    return x2d.new_empty((x2d.shape[0], weight.shape[0]))


@torch.library.custom_op("mglu::backward", mutates_args=())
def backward_op(
    dout: Tensor, x2d: Tensor, weight: Tensor, packed: Tensor, logits: Optional[Tensor], activation: str, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, dW, dM)``; ``dM`` has the shape and dtype of ``logits``, or is empty without them."""
    dout, x2d, weight, packed = dout.contiguous(), x2d.contiguous(), weight.contiguous(), packed.contiguous()
    needs_dmask = logits is not None
    chosen = dispatch.select(backend, Problem.of(x2d, weight, packed, activation, needs_dmask, backward=True))
    dx, dw, dm = chosen.backward(dout, x2d, weight, packed, activation, logits.dtype if needs_dmask else None)
    return dx, dw, dm if needs_dmask else x2d.new_empty((0,))


@backward_op.register_fake
def _backward_fake(dout, x2d, weight, packed, logits, activation, backend):
    dm = logits.new_empty(logits.shape) if logits is not None else x2d.new_empty((0,))
    return x2d.new_empty(x2d.shape), weight.new_empty(weight.shape), dm


def _setup_context(ctx, inputs, output):
    x2d, weight, packed, logits, activation, backend = inputs
    ctx.save_for_backward(x2d, weight, packed, logits)
    ctx.activation, ctx.backend = activation, backend


def _backward(ctx, dout):
    x2d, weight, packed, logits = ctx.saved_tensors
    wants_dmask = logits is not None and ctx.needs_input_grad[3]
    dx, dw, dm = backward_op(dout, x2d, weight, packed, logits if wants_dmask else None, ctx.activation, ctx.backend)
    return dx, dw, None, dm if wants_dmask else None, None, None


forward_op.register_autograd(_backward, setup_context=_setup_context)


def _check_tensor(t, arg: str) -> None:
    if not isinstance(t, Tensor):
        raise MGLUTypeError(f"{arg}: expected a torch.Tensor, got {type(t).__name__}")


def validate(x, weight, masks, activation) -> bool:
    """Raise a typed error naming the argument on any invalid call; return ``is_packed``."""
    for t, arg in ((x, "x"), (weight, "weight"), (masks, "masks")):
        _check_tensor(t, arg)
    if x.dtype not in SUPPORTED_DTYPES:
        raise MGLUTypeError(f"x: dtype must be one of {', '.join(DTYPE_NAMES)}, got {x.dtype}")
    if weight.dtype != x.dtype:
        raise MGLUTypeError(f"weight: dtype must match x ({x.dtype}), got {weight.dtype}")
    if x.dim() < 1:
        raise MGLUValueError("x: expected shape (..., d_model), got a 0-d tensor")
    if weight.dim() != 2 or 0 in weight.shape:
        raise MGLUValueError(f"weight: expected shape (d_ff, d_model) with both > 0, got {tuple(weight.shape)}")
    d_ff, d_model = weight.shape
    if x.shape[-1] != d_model:
        raise MGLUValueError(f"x: last dim must equal d_model = weight.shape[1] = {d_model}, got {x.shape[-1]}")
    for t, arg in ((weight, "weight"), (masks, "masks")):
        if t.device != x.device:
            raise MGLUValueError(f"{arg}: expected device {x.device} (the device of x), got {t.device}")
    check_activation(activation)
    if masks.dtype == torch.uint8:
        check_packed(masks, d_model, arg="masks", d_ff=d_ff)
        return True
    if masks.dtype not in SUPPORTED_DTYPES:
        raise MGLUTypeError(
            f"masks: expected packed torch.uint8 (see mglu.pack_masks) or logits of dtype "
            f"{', '.join(DTYPE_NAMES)}, got {masks.dtype}"
        )
    if masks.dim() != 3 or tuple(masks.shape[1:]) != (d_ff, d_model):
        raise MGLUValueError(
            f"masks: logits must have shape (n_masks, {d_ff}, {d_model}), got {tuple(masks.shape)}"
        )
    check_n_masks(masks.shape[0], "masks")
    return False


def mglu(x: Tensor, weight: Tensor, masks: Tensor, *, activation: str = DEFAULT_ACTIVATION, backend: str | None = None) -> Tensor:
    """``out (..., d_ff) = sum_i act(x @ (M_i W).T) * (x @ ((1 - M_i) W).T)``.

    ``masks``: packed uint8 ``(n_masks, d_ff, ceil(d_model/8))`` (frozen, no mask grad) or
    floating logits ``(n_masks, d_ff, d_model)`` with ``M_i = S_i > 0`` and the
    straight-through gradient ``dS = dM``. ``backend``: a registered name or ``"auto"``;
    ``None`` reads ``MGLU_BACKEND`` at call time. Any leading batch shape, zero tokens and
    non-contiguous inputs work; the result has ``x``'s dtype.
    """
    is_packed = validate(x, weight, masks, activation)
    requested = dispatch.requested_backend(backend)
    d_ff, d_model = weight.shape
    packed, logits = (masks, None) if is_packed else (pack_masks(masks), masks)
    out = forward_op(x.reshape(-1, d_model), weight, packed, logits, activation, requested)
    return out.reshape(*x.shape[:-1], d_ff)


def explain(x: Tensor, weight: Tensor, masks: Tensor, *, activation: str = DEFAULT_ACTIVATION, backend: str | None = None, backward: bool = False) -> dispatch.Selection:
    """Which backend :func:`mglu` would run this call on (``backward=True``: its backward), and why."""
    is_packed = validate(x, weight, masks, activation)
    requested = dispatch.requested_backend(backend)
    x2d = x.reshape(-1, weight.shape[1])
    problem = Problem.of(x2d, weight, masks, activation, needs_dmask=backward and not is_packed, backward=backward)
    return dispatch.explain_problem(requested, problem)
