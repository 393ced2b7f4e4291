"""The backend contract: tensor-in/tensor-out functions plus a capability check.

A backend is a :class:`Backend` record:

- ``forward(x2d, weight, packed, activation) -> out``: ``x2d (T, d_model)``,
  ``weight (d_ff, d_model)``, ``packed`` uint8 ``(n_masks, d_ff, ceil(d_model/8))``,
  ``out (T, d_ff)`` in ``x2d.dtype``; ``out = sum_i act(gate_i) * (total - gate_i)``.
- ``backward(dout, x2d, weight, packed, activation, dmask_dtype) -> (dx, dW, dM)``:
  ``dx (T, d_model)``, ``dW (d_ff, d_model)`` in the input dtype; ``dM (n_masks, d_ff,
  d_model)`` in ``dmask_dtype``, or ``None`` when ``dmask_dtype`` is ``None`` (frozen masks).
- ``reasons(problem) -> list[str]``: empty when the backend can run the call, else
  plain-text reasons why not.
- ``saves_factors``: when true, ``forward`` also takes ``factors=F``, a ``(n_masks + 1,
  T, d_ff)`` buffer of the input dtype that it fills with the gradient factors
  ``F[i] = act'(gate_i) (total - gate_i) - act(gate_i)`` for ``i < n_masks`` and
  ``F[n_masks] = sum_i act(gate_i)`` (so SPEC §3's ``D_i = dout F[i]``, ``S = dout
  F[n_masks]``), and ``backward`` takes ``factors=F`` from such a forward to skip
  recomputing the gates. The op layer passes ``factors`` only when autograd will run the
  backward; both functions must still work without it.

Inputs arrive validated and contiguous. Backends allocate outputs with :func:`new_output`
so that the conformance checker can poison them (NaN) before a kernel writes them.
No autograd code lives in a backend.
"""

import contextlib
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch

# Process-wide, not a context variable: autograd runs CUDA backward on its own thread.
_poison = [False]


@contextlib.contextmanager
def poisoned_outputs():
    """Within this block, :func:`new_output` fills new outputs with NaN (conformance)."""
    before, _poison[0] = _poison[0], True
    try:
        yield
    finally:
        _poison[0] = before


def new_output(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An output buffer every element of which the backend must write."""
    if _poison[0]:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


class Problem(NamedTuple):
    """What a capability check may look at: one call's sizes, types and device. A
    NamedTuple, immutable: built on every call of the op, and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) was the op layer's costliest line after
    validation (cProfile of the eager call with the kernel stubbed, on our CPU: triton_backend/
    DESIGN.md, after run 29)."""

    tokens: int
    d_model: int
    d_ff: int
    n_masks: int
    dtype: torch.dtype
    device: torch.device
    activation: str
    needs_dmask: bool = False
    backward: bool = False

    @classmethod
    def of(cls, x2d, weight, packed, activation, needs_dmask=False, backward=False) -> "Problem":
        return cls(x2d.shape[0], x2d.shape[1], weight.shape[0], packed.shape[0], x2d.dtype, x2d.device, activation,
                   needs_dmask, backward)


@dataclass(frozen=True)
class Backend:
    """One registered backend: its capability check and its two tensor functions."""

    name: str
    reasons: Callable[[Problem], list[str]]
    forward: Optional[Callable] = None
    backward: Optional[Callable] = None
    description: str = ""
    saves_factors: bool = False

