"""The dtypes every backend supports (SPEC §4), by name: the one list mglu reads."""

import torch

SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
#: "float16" -> torch.float16, ...
DTYPE_NAMES: dict[str, torch.dtype] = {str(d).removeprefix("torch."): d for d in SUPPORTED_DTYPES}


def accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 for fp64 inputs, else fp32 (SPEC §4): what kernels accumulate and keep in."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
