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


@triton.jit
def _narrow_probe(v_ptr, out_ptr, n):
    tl = triton.language
    offs = tl.arange(0, 2048)
    ok = offs < n
    v = tl.load(v_ptr + offs, mask=ok, other=0.0)
    tl.store(out_ptr + offs, kernels._narrow(v, out_ptr.dtype.element_ty), mask=ok)


def test_narrow_rounds_fp32_to_bf16_to_nearest_even_as_torch_does():
    """kernels._narrow against torch's fp32 -> bf16 cast (round to nearest, ties to even): ties
    both ways, a mantissa carry into the exponent at an odd and an even exponent, the largest
    finite values (one rounding to inf), subnormals, zeros, infinities, NaN, and random values.
    Under the interpreter (the CPU) a plain cast truncates; compiled, _narrow is the plain cast."""
    bits = [0x3F808000, 0x3F818000, 0x3F80C000, 0x3FFFFFFF, 0x407FFFFF, 0x3F7FFFFF, 0xBF808000, 0xBFFFFFFF,
            0x7F7FFFFF, 0x7F7F7FFF, 0x00000001, 0x00018000, 0x807FFFFF, 0x00000000, 0x80000000, 0x7F800000,
            0xFF800000]
    special = torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)
    gen = torch.Generator().manual_seed(0)
    v = torch.cat([special, torch.randn(1000, generator=gen) * 10.0 ** torch.randint(-30, 30, (1000,), generator=gen)])
    want = v.to(torch.bfloat16)
    out = torch.empty(v.numel() + 1, dtype=torch.bfloat16, device=DEVICE)
    vin = torch.cat([v, torch.tensor([float("nan")])]).to(DEVICE)
    _narrow_probe[(1,)](vin, out, vin.numel())
    got = out.cpu()
    assert torch.equal(got[:-1].view(torch.int16), want.view(torch.int16))
    assert got[-1].isnan()
