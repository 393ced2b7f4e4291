"""MGLU kernel lab: the Masked Gated Linear Unit (Tajima et al., 2025) on several backends.

    out = sum_i act(x @ (M_i * W).T) * (x @ ((1 - M_i) * W).T)

``x (..., d_model)``, ``W (d_ff, d_model)``, ``n_masks`` binary masks ``M_i``. See
``mglu.mglu`` for the op, ``mglu.nn`` for modules, ``python -m mglu --help`` for the CLI.
"""

from . import nn
from .activations import ACTIVATIONS
from .backends import BACKEND_NAMES, auto_priority
from .dispatch import ENV_VAR, Selection
from .errors import BackendUnavailableError, MGLUError, MGLUTypeError, MGLUValueError
from .masks import MAX_MASKS, pack_masks, unpack_masks
from .ops import explain, mglu

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "BACKEND_NAMES",
    "ENV_VAR",
    "MAX_MASKS",
    "BackendUnavailableError",
    "MGLUError",
    "MGLUTypeError",
    "MGLUValueError",
    "Selection",
    "explain",
    "mglu",
    "nn",
    "pack_masks",
    "unpack_masks",
    "auto_priority",
]
