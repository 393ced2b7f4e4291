"""The packed mask format (SPEC §2): the one definition every backend reads.

``packed`` is a ``torch.uint8`` tensor of shape ``(n_masks, d_ff, ceil(d_model / 8))``.
Bit ``b`` (least significant first) of byte ``[i, n, g]`` is ``M_i[n, 8*g + b]``.
:func:`pack_masks` writes zeros at positions ``>= d_model``; every backend ignores
whatever stands there (no per-call scan of the masks).

Training form: real-valued logits ``S`` of shape ``(n_masks, d_ff, d_model)``; the hard
mask is ``M_i = (S_i > 0)``.
"""

import torch

from .dtypes import DTYPE_NAMES, SUPPORTED_DTYPES
from .errors import MGLUTypeError, MGLUValueError

MIN_MASKS = 1
#: the paper trains with up to 16 masks (SPEC §2)
MAX_MASKS = 16
BITS = 8
#: multiplier that gathers bit 0 of each byte of an int64 word into its top byte (pack_masks)
GATHER_BITS = 0x0102040810204080


def packed_width(d_model: int) -> int:
    """Bytes per mask row: ``ceil(d_model / 8)``."""
    return (d_model + BITS - 1) // BITS


def check_n_masks(n_masks, arg: str) -> None:
    """Raise unless ``n_masks`` is an int in ``MIN_MASKS..MAX_MASKS``; ``arg`` names the
    argument (``"n_masks"`` itself, or the tensor whose dim 0 it is)."""
    what = "n_masks" if arg == "n_masks" else f"{arg}: n_masks (dim 0)"
    if not isinstance(n_masks, int) or isinstance(n_masks, bool):
        raise MGLUTypeError(f"{what} must be an int, got {type(n_masks).__name__}")
    if not MIN_MASKS <= n_masks <= MAX_MASKS:
        raise MGLUValueError(f"{what} must be in {MIN_MASKS}..{MAX_MASKS}, got {n_masks}")


def check_size(value, arg: str) -> None:
    """Raise unless ``value`` is a positive int (``d_model``, ``d_ff``)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise MGLUTypeError(f"{arg}: expected a positive int, got {type(value).__name__}")
    if value < 1:
        raise MGLUValueError(f"{arg}: expected a positive int, got {value}")


def hard_masks(masks: torch.Tensor) -> torch.Tensor:
    """``bool`` masks ``(n_masks, d_ff, d_model)`` from bool masks or real logits (``S > 0``)."""
    if not isinstance(masks, torch.Tensor):
        raise MGLUTypeError(f"masks: expected a torch.Tensor, got {type(masks).__name__}")
    if masks.dtype == torch.bool:
        return masks
    if masks.dtype in SUPPORTED_DTYPES:
        return masks > 0
    raise MGLUTypeError(
        f"masks: expected a bool tensor or logits of dtype {', '.join(DTYPE_NAMES)}, got {masks.dtype}"
    )


def pack_masks(masks: torch.Tensor) -> torch.Tensor:
    """Pack bool masks or logits ``(n_masks, d_ff, d_model)`` into uint8 bit-planes.

    Returns ``(n_masks, d_ff, ceil(d_model/8))`` uint8 on the input's device, bit ``b`` of
    byte ``[i, n, g]`` = ``M_i[n, 8g + b]``, tail bits zero. Logits map to ``S > 0``.
    """
    bits = hard_masks(masks)
    if bits.dim() != 3:
        raise MGLUValueError(
            f"masks: expected shape (n_masks, d_ff, d_model), got {tuple(bits.shape)}"
        )
    check_n_masks(bits.shape[0], "masks")
    n, d_ff, d_model = bits.shape
    width = packed_width(d_model)
    if bits.numel() == 0:
        return torch.zeros((n, d_ff, width), dtype=torch.uint8, device=bits.device)
    if bits is masks or torch.compiler.is_compiling():
        # a fresh contiguous copy: the caller's bool tensor may be a view at any storage
        # offset (the int64 view below needs 8-byte alignment and unit stride; frozen
        # masks are packed once, not per step); under torch.compile because torch 2.11's
        # Inductor cannot lower a bool -> uint8 view (TypeError in to_dtype_bitcast, run 31
        # on the H200), the conversion fusing into S > 0 there
        planes = bits.to(torch.uint8, memory_format=torch.contiguous_format)
    else:
        planes = bits.contiguous().view(torch.uint8)  # the fresh result of S > 0
    if width * BITS != d_model:
        planes = torch.nn.functional.pad(planes, (0, width * BITS - d_model))
    # the 8 bytes (0 or 1) of a group, read as one little-endian int64 word, times
    # GATHER_BITS put byte b's bit at bit 56 + b with no carries (every partial product
    # lands on its own bit); byte 7 of the product is the packed byte. The product wraps
    # modulo 2**64 (two's complement), which leaves byte 7 exact. Three passes over the
    # masks instead of a shift and a byte reduction (which cost 2.2 ms of a 4096x11008,
    # n=4 training step on the H100: scripts/profile_step.py)
    words = planes.view(torch.int64) * GATHER_BITS
    return words.view(torch.uint8)[..., BITS - 1::BITS].contiguous()


def unpack_masks(packed: torch.Tensor, d_model: int) -> torch.Tensor:
    """Bool masks ``(n_masks, d_ff, d_model)`` from packed bit-planes; tail bits dropped."""
    check_packed(packed, d_model, arg="packed")
    return unpack_bits(packed, d_model)


def unpack_bits(packed: torch.Tensor, d_model: int) -> torch.Tensor:
    """:func:`unpack_masks` without validation, for backends; works on any leading shape."""
    shifts = torch.arange(BITS, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(*packed.shape[:-1], -1)[..., :d_model].to(torch.bool)


def check_packed(packed: torch.Tensor, d_model: int, arg: str = "masks", d_ff: int | None = None) -> None:
    """Raise unless ``packed`` is uint8 ``(n_masks, d_ff, ceil(d_model/8))`` with 1..16 masks."""
    if not isinstance(packed, torch.Tensor):
        raise MGLUTypeError(f"{arg}: expected a torch.Tensor, got {type(packed).__name__}")
    check_size(d_model, "d_model")
    if packed.dtype != torch.uint8:
        raise MGLUTypeError(f"{arg}: packed masks must be torch.uint8, got {packed.dtype}")
    width = packed_width(d_model)
    if packed.dim() != 3 or packed.shape[2] != width or (d_ff is not None and packed.shape[1] != d_ff):
        want_ff = "d_ff" if d_ff is None else str(d_ff)
        raise MGLUValueError(
            f"{arg}: packed masks must have shape (n_masks, {want_ff}, {width}) for "
            f"d_model={d_model}, got {tuple(packed.shape)}"
        )
    check_n_masks(packed.shape[0], arg)
