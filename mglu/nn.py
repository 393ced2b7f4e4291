"""``torch.nn`` modules: a trainable MGLU layer and a feed-forward block built on it.

:class:`MGLU` maps ``x (..., d_model) -> (..., d_ff)``,
``sum_i act(x @ (M_i W).T) * (x @ ((1 - M_i) W).T)``, holding ``weight (d_ff, d_model)`` and
mask logits ``(n_masks, d_ff, d_model)`` (``M_i = logits_i > 0``, straight-through grad).
``freeze()`` swaps the logits for packed uint8 bit-planes, 1/8 byte per mask and element.
:class:`MGLUFeedForward` adds the down projection and stands where a SwiGLU MLP stands.
"""

import math

import torch
from torch import nn

from .activations import DEFAULT_ACTIVATION, check_activation
from .dispatch import requested_backend
from .dtypes import DTYPE_NAMES, SUPPORTED_DTYPES
from .errors import MGLUTypeError
from .masks import check_n_masks, check_size, pack_masks
from .ops import mglu

#: the paper initialises mask logits as 0.01 * randn (SPEC §2)
LOGIT_INIT_STD = 0.01


class MGLU(nn.Module):
    """MGLU projection ``(..., d_model) -> (..., d_ff)`` with learnable masks.

    Parameters: ``weight (d_ff, d_model)``, ``mask_logits (n_masks, d_ff, d_model)``. After
    :meth:`freeze`, ``mask_logits`` is ``None`` and the buffer ``packed_masks`` (uint8
    ``(n_masks, d_ff, ceil(d_model/8))``) holds the masks.
    """

    def __init__(self, d_model: int, d_ff: int, n_masks: int = 4, activation: str = DEFAULT_ACTIVATION,
                 backend: str | None = None, device=None, dtype=None):
        super().__init__()
        check_size(d_model, "d_model")
        check_size(d_ff, "d_ff")
        check_n_masks(n_masks, "n_masks")
        check_activation(activation)
        if backend is not None:
            requested_backend(backend)
        if dtype is not None and dtype not in SUPPORTED_DTYPES:
            raise MGLUTypeError(f"dtype: must be one of {', '.join(DTYPE_NAMES)}, got {dtype}")
        self.d_model, self.d_ff, self.n_masks = d_model, d_ff, n_masks
        self.activation, self.backend = activation, backend
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(d_ff, d_model, **factory))
        self.mask_logits = nn.Parameter(torch.empty(n_masks, d_ff, d_model, **factory))
        self.register_buffer("packed_masks", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``weight`` as ``nn.Linear`` initialises it; logits ``0.01 * randn``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.mask_logits is not None:
            nn.init.normal_(self.mask_logits, std=LOGIT_INIT_STD)

    @property
    def frozen(self) -> bool:
        return self.mask_logits is None

    def masks(self) -> torch.Tensor:
        """What the op receives: packed masks once frozen, else the logits."""
        return self.packed_masks if self.frozen else self.mask_logits

    def freeze(self) -> "MGLU":
        """Replace the logits by packed bit-planes of ``logits > 0`` (inference form)."""
        if not self.frozen:
            packed = pack_masks(self.mask_logits.detach())
            self.mask_logits = None
            self.packed_masks = packed
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mglu(x, self.weight, self.masks(), activation=self.activation, backend=self.backend)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if not self.frozen and state_dict.get(prefix + "packed_masks") is not None:
            self.freeze()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_ff={self.d_ff}, n_masks={self.n_masks}, "
                f"activation={self.activation!r}, frozen={self.frozen}")


class MGLUFeedForward(nn.Module):
    """``x (..., d_model) -> down_proj(MGLU(x)) (..., d_model)``: a SwiGLU MLP's drop-in.

    Where a SwiGLU MLP holds ``gate_proj``, ``up_proj`` and ``down_proj``, this holds one
    :class:`MGLU` (``mglu``) and ``down_proj``, an ordinary ``nn.Linear(d_ff, d_model)``.
    """

    def __init__(self, d_model: int, d_ff: int, n_masks: int = 4, activation: str = DEFAULT_ACTIVATION,
                 backend: str | None = None, bias: bool = False, device=None, dtype=None):
        super().__init__()
        self.mglu = MGLU(d_model, d_ff, n_masks, activation, backend, device=device, dtype=dtype)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias, device=device, dtype=dtype)

    def freeze(self) -> "MGLUFeedForward":
        self.mglu.freeze()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.mglu(x))
