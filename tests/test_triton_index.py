"""Triton's plane offsets (``m T N``, ``i N K``) are int64 where int32 would wrap."""

import pytest
import torch

triton = pytest.importorskip("triton")

from mglu.backends.triton_backend import kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _probe(out, T, N, M: triton.language.constexpr):
    triton.language.store(out, kernels._wide(M) * T * N)
    for i in range(2):
        triton.language.store(out + 1 + i, kernels._wide(i + M) * T * N)


def test_plane_offsets_pass_two_to_the_31():
    out = torch.zeros(3, dtype=torch.int64, device=DEVICE)
    _probe[(1,)](out, 65536, 65536, M=3)
    assert out.tolist() == [3 << 32, 3 << 32, 4 << 32]
