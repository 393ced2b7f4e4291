"""Triton's index helpers: the plane offsets (``m T N``, ``i N K``) are int64 where int32
would wrap; ``_eight`` returns a group's elements in the order the GEMV's PTX assumes."""

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


@triton.jit
def _eight_probe(v_ptr, out_ptr):
    tl = triton.language
    i = tl.arange(0, 2)[:, None, None] * 16 + tl.arange(0, 2)[None, :, None] * 8 + tl.arange(0, 8)[None, None, :]
    parts = kernels._eight(tl.load(v_ptr + i))
    j = tl.arange(0, 2)[:, None] * 2 + tl.arange(0, 2)[None, :]
    for k in triton.language.static_range(8):
        tl.store(out_ptr + k * 4 + j, parts[k])


def test_eight_returns_the_order_the_chain_ptx_assumes():
    # element e of group (r, g) holds 100 (2 r + g) + e
    v = (100 * torch.arange(4).repeat_interleave(8) + torch.arange(8).repeat(4)).to(torch.int32).to(DEVICE)
    out = torch.full((8, 4), -1, dtype=torch.int32, device=DEVICE)
    _eight_probe[(1,)](v, out)
    want = [[100 * group + e for group in range(4)] for e in kernels.EIGHT_ORDER]
    assert out.tolist() == want
    assert sorted(kernels.EIGHT_ORDER) == list(range(8))
