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
from .backends import Problem, new_output
from .dtypes import DTYPE_NAMES, SUPPORTED_DTYPES
from .errors import MGLUTypeError, MGLUValueError
from .masks import check_n_masks, check_packed, pack_masks


@torch.library.custom_op("mglu::forward", mutates_args=())
def forward_op(
    x2d: Tensor, weight: Tensor, packed: Tensor, logits: Optional[Tensor], activation: str, backend: str,
    save_factors: bool,
) -> tuple[Tensor, Tensor]:
    """``(out (T, d_ff), factors)`` on the backend ``backend`` resolves to; ``logits`` only
    routes grads. ``factors``: ``(n_masks + 1, T, d_ff)`` in the input dtype, the gradient
    factors ``act'(g_i) (total - g_i) - act(g_i)`` then ``sum_i act(g_i)``, written when
    ``save_factors`` and the backend keeps them for its backward (``Backend.saves_factors``);
    else empty."""
    out, factors = _run_forward(x2d, weight, packed, logits, activation, backend, save_factors)
    return out, factors if factors is not None else x2d.new_empty((0,))


def _run_forward(x2d, weight, packed, logits, activation, backend, save_factors):
    """``(out, factors or None)`` on the chosen backend: the body of :func:`forward_op`, and
    what a plain eager call (:func:`_plain_call`) runs without the op."""
    x2d, weight, packed = x2d.contiguous(), weight.contiguous(), packed.contiguous()
    chosen = dispatch.select(backend, Problem.of(x2d, weight, packed, activation))
    if not _saves(chosen, backend, x2d, weight, packed, logits, activation, save_factors):
        return chosen.forward(x2d, weight, packed, activation), None
    factors = new_output(_factors_shape(x2d, weight, packed), x2d.dtype, x2d.device)
    return chosen.forward(x2d, weight, packed, activation, factors=factors), factors


def _factors_shape(x2d, weight, packed) -> tuple[int, int, int]:
    return packed.shape[0] + 1, x2d.shape[0], weight.shape[0]


def _saves(chosen, backend, x2d, weight, packed, logits, activation, save_factors) -> bool:
    """Whether the forward keeps the gradient factors: asked to, and both the forward's
    backend and the one the backward will run on (``auto`` may pick another) use them."""
    if not (save_factors and chosen.saves_factors):
        return False
    problem = Problem.of(x2d, weight, packed, activation, logits is not None, backward=True)
    return dispatch.select(backend, problem).saves_factors


@forward_op.register_fake
def _forward_fake(x2d, weight, packed, logits, activation, backend, save_factors):
    out = x2d.new_empty((x2d.shape[0], weight.shape[0]))
    chosen = dispatch.select(backend, Problem.of(x2d, weight, packed, activation))
    if _saves(chosen, backend, x2d, weight, packed, logits, activation, save_factors):
        return out, x2d.new_empty(_factors_shape(x2d, weight, packed))
    return out, x2d.new_empty((0,))


@torch.library.custom_op("mglu::backward", mutates_args=())
def backward_op(
    dout: Tensor, x2d: Tensor, weight: Tensor, packed: Tensor, logits: Optional[Tensor], factors: Tensor,
    activation: str, backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, dW, dM)``; ``dM`` has the shape and dtype of ``logits``, or is empty without them.
    ``factors``: the forward's saved gradient factors (see :func:`forward_op`), or empty."""
    dout, x2d, weight, packed = dout.contiguous(), x2d.contiguous(), weight.contiguous(), packed.contiguous()
    needs_dmask = logits is not None
    chosen = dispatch.select(backend, Problem.of(x2d, weight, packed, activation, needs_dmask, backward=True))
    args = (dout, x2d, weight, packed, activation, logits.dtype if needs_dmask else None)
    want = _factors_shape(x2d, weight, packed)
    if factors.numel() and (tuple(factors.shape) != want or factors.dtype != x2d.dtype):
        raise MGLUValueError(f"factors: expected the forward's saved gradient factors {want} of dtype {x2d.dtype} "
                             f"or an empty tensor, got {tuple(factors.shape)} of dtype {factors.dtype}")
    if factors.numel() and chosen.saves_factors:
        dx, dw, dm = chosen.backward(*args, factors=factors)
    else:
        dx, dw, dm = chosen.backward(*args)
    return dx, dw, dm if needs_dmask else x2d.new_empty((0,))


@backward_op.register_fake
def _backward_fake(dout, x2d, weight, packed, logits, factors, activation, backend):
    dm = logits.new_empty(logits.shape) if logits is not None else x2d.new_empty((0,))
    return x2d.new_empty(x2d.shape), weight.new_empty(weight.shape), dm


def _setup_context(ctx, inputs, output):
    x2d, weight, packed, logits, activation, backend, _ = inputs
    ctx.save_for_backward(x2d, weight, packed, logits, output[1])
    ctx.activation, ctx.backend = activation, backend
    # the factors output gets no gradient: without this autograd would allocate and zero an
    # (n_masks + 1, T, d_ff) tensor for it on every backward
    ctx.set_materialize_grads(False)


def _backward(ctx, dout, _dfactors):
    if dout is None:
        return None, None, None, None, None, None, None
    x2d, weight, packed, logits, factors = ctx.saved_tensors
    wants_dmask = logits is not None and ctx.needs_input_grad[3]
    dx, dw, dm = backward_op(dout, x2d, weight, packed, logits if wants_dmask else None, factors,
                             ctx.activation, ctx.backend)
    return dx, dw, None, dm if wants_dmask else None, None, None, None


forward_op.register_autograd(_backward, setup_context=_setup_context)


def _check_tensor(t, arg: str) -> None:
    if not isinstance(t, Tensor):
        raise MGLUTypeError(f"{arg}: expected a torch.Tensor, got {type(t).__name__}")


def validate(x, weight, masks, activation) -> bool:
    """Raise a typed error naming the argument on any invalid call; return ``is_packed``.
    (Runs on every call: the checks are written out, no loops or generators.)"""
    _check_tensor(x, "x")
    _check_tensor(weight, "weight")
    _check_tensor(masks, "masks")
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
    device = x.device
    if weight.device != device:
        raise MGLUValueError(f"weight: expected device {device} (the device of x), got {weight.device}")
    if masks.device != device:
        raise MGLUValueError(f"masks: expected device {device} (the device of x), got {masks.device}")
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


def _plain_call(*tensors: Tensor) -> bool:
    """Whether this call may run the backend directly instead of through ``mglu::forward``.

    The registered op is what autograd, ``torch.compile``, functorch transforms and
    dispatch modes see; a plain eager call without gradients needs none of them, and the op
    layer costs more host time than a decode kernel's launch (``scripts/host_loop.py
    --profile`` on the H100: ``custom_ops.backend_impl`` was the largest host cost per call).
    Both paths run the same ``dispatch.select`` and backend function.
    """
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    if torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled():
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if type(t) not in _PLAIN_TYPES or (grad and t.requires_grad):
            return False
    return True


#: tensor types a plain call may take: subclasses (with their own __torch_function__) go
#: through the op
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


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
    flat = x.dim() == 2  # (T, d_model) in, (T, d_ff) out: no reshapes
    x2d = x if flat else x.reshape(-1, d_model)
    if _plain_call(x, weight, masks):
        out = _run_forward(x2d, weight, packed, None, activation, requested, False)[0]
    else:
        save = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or masks.requires_grad)
        out = forward_op(x2d, weight, packed, logits, activation, requested, save)[0]
    return out if flat else out.reshape(*x.shape[:-1], d_ff)


def explain(x: Tensor, weight: Tensor, masks: Tensor, *, activation: str = DEFAULT_ACTIVATION, backend: str | None = None, backward: bool = False) -> dispatch.Selection:
    """Which backend :func:`mglu` would run this call on (``backward=True``: its backward), and why."""
    is_packed = validate(x, weight, masks, activation)
    requested = dispatch.requested_backend(backend)
    x2d = x.reshape(-1, weight.shape[1])
    problem = Problem.of(x2d, weight, masks, activation, needs_dmask=backward and not is_packed, backward=backward)
    return dispatch.explain_problem(requested, problem)
