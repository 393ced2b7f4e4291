import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mglu import MGLUTypeError, MGLUValueError, pack_masks, unpack_masks
from mglu import reference


@given(n=st.integers(1, 16), d_ff=st.integers(1, 5), d_model=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_round_trip_and_reference_agree(n, d_ff, d_model, seed):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, d_ff, d_model, generator=gen) < 0.5
    packed = pack_masks(masks)
    assert packed.dtype == torch.uint8 and packed.shape == (n, d_ff, (d_model + 7) // 8)
    assert torch.equal(unpack_masks(packed, d_model), masks)
    assert (reference.unpack(packed.numpy(), d_model) == masks.numpy()).all()


def test_bit_order_and_zero_tail():
    masks = torch.zeros(1, 1, 11, dtype=torch.bool)
    masks[0, 0, [0, 2, 8, 10]] = True
    packed = pack_masks(masks)
    assert packed.tolist() == [[[0b00000101, 0b00000101]]]


def test_every_byte_pattern_packs_to_its_value():
    patterns = torch.tensor(list(itertools.product([0, 1], repeat=8)), dtype=torch.bool).reshape(1, 256, 8)
    want = (patterns.to(torch.int64) << torch.arange(8)).sum(-1).to(torch.uint8)
    assert torch.equal(pack_masks(patterns).reshape(-1), want.reshape(-1))


def test_empty_and_offset_masks_pack():
    assert pack_masks(torch.zeros(1, 0, 5, dtype=torch.bool)).shape == (1, 0, 1)
    assert pack_masks(torch.zeros(1, 3, 0, dtype=torch.bool)).shape == (1, 3, 0)
    base = torch.randn(65) > 0
    offset = base[1:].view(2, 2, 16)
    assert offset.storage_offset() == 1
    assert torch.equal(unpack_masks(pack_masks(offset), 16), offset)


def test_logits_threshold_is_strictly_positive():
    logits = torch.tensor([[[-1.0, 0.0, 1e-30, 2.0]]])
    assert unpack_masks(pack_masks(logits), 4).tolist() == [[[False, False, True, True]]]


def test_unpack_ignores_tail_bits():
    packed = torch.full((2, 3, 2), 0xFF, dtype=torch.uint8)
    assert unpack_masks(packed, 9).shape == (2, 3, 9)
    assert unpack_masks(packed, 9).all()


@pytest.mark.parametrize(
    "masks, exc, message",
    [
        (torch.zeros(4, 5, dtype=torch.bool), MGLUValueError, r"masks: expected shape \(n_masks, d_ff, d_model\), got \(4, 5\)"),
        (torch.zeros(17, 2, 3, dtype=torch.bool), MGLUValueError, r"masks: n_masks \(dim 0\) must be in 1\.\.16, got 17"),
        (torch.zeros(0, 2, 3, dtype=torch.bool), MGLUValueError, r"masks: n_masks \(dim 0\) must be in 1\.\.16, got 0"),
        (torch.zeros(2, 2, 3, dtype=torch.int32), MGLUTypeError, r"masks: expected a bool tensor or logits .* got torch\.int32"),
        ([[1]], MGLUTypeError, "masks: expected a torch.Tensor, got list"),
    ],
)
def test_pack_rejects(masks, exc, message):
    with pytest.raises(exc, match=message):
        pack_masks(masks)


@pytest.mark.parametrize(
    "packed, exc",
    [
        (torch.zeros(2, 3, 3, dtype=torch.uint8), MGLUValueError),
        (torch.zeros(2, 3, 2, dtype=torch.int8), MGLUTypeError),
        (torch.zeros(17, 3, 2, dtype=torch.uint8), MGLUValueError),
    ],
)
def test_unpack_rejects(packed, exc):
    with pytest.raises(exc, match="packed"):
        unpack_masks(packed, 9)
