"""Triton backend: placeholder until its kernels land."""

from ..base import not_implemented

BACKEND = not_implemented("triton", "Triton kernels")
