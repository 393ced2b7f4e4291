"""The tolerance table and error measure of SPEC §4: the one copy every judge reads.

A backend passes a quantity (``out``, ``dx``, ``dW``, ``dS``) when
``rel_error(y, ref) <= bound(dtype, e_torch)`` with ``rel_error = ||y - ref|| / ||ref||``
(Frobenius, against the float64 reference) and ``bound = max(2 * e_torch, FLOOR[dtype])``,
``e_torch`` being the torch backend's error on the same inputs in the same dtype. The
torch backend itself is held to the floor alone. NaN or Inf never passes.

Where the reference is exactly zero (all-one masks make ``out``, ``dx`` and ``dW`` vanish
identically while a kernel sums cancelling terms), the denominator is the norm of
``magnitude``, the same formula in absolute values (:func:`mglu.reference.magnitudes`).
"""

import math

import numpy as np
import torch

#: relative-error floor per dtype (SPEC §4), one per entry of mglu.dtypes.SUPPORTED_DTYPES
FLOOR = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}

#: a backend may be this many times worse than the torch backend in the same dtype
TORCH_FACTOR = 2.0


def rel_error(y, ref, magnitude=None) -> float:
    """``||y - ref|| / ||ref||`` in float64, or ``/ ||magnitude||`` where ``ref`` is all zero;
    then ``0/0 = 0`` and ``x/0 = inf``. A non-finite ``y`` or a shape mismatch gives inf."""
    y = np.asarray(y.detach().cpu().double() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if y.shape != ref.shape or not np.all(np.isfinite(y)):
        return math.inf
    num, den = float(np.linalg.norm(y - ref)), float(np.linalg.norm(ref))
    if den == 0.0 and magnitude is not None:
        den = float(np.linalg.norm(np.asarray(magnitude, dtype=np.float64)))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def bound(dtype: torch.dtype, e_torch: float | None) -> float:
    """``max(2 * e_torch, FLOOR[dtype])``; ``e_torch=None`` (judging torch itself) gives the floor."""
    floor = FLOOR[dtype]
    return floor if e_torch is None else max(TORCH_FACTOR * e_torch, floor)
