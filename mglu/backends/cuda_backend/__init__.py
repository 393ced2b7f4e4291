"""CUDA C++ backend (CuPy/NVRTC): placeholder until its kernels land."""

from ..base import not_implemented

BACKEND = not_implemented("cuda", "CUDA C++ kernels compiled at run time through CuPy/NVRTC")
