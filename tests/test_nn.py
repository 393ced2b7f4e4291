import numpy as np
import pytest
import torch

import mglu
from mglu import reference
from mglu.nn import MGLU, MGLUFeedForward


def test_layer_equals_functional_and_trains_masks():
    torch.manual_seed(0)
    layer = MGLU(16, 24, n_masks=3, activation="gelu")
    x = torch.randn(4, 16)
    out = layer(x)
    m = (layer.mask_logits > 0).numpy()
    want = reference.forward(x.numpy(), layer.weight.detach().numpy(), m, "gelu")
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert layer.mask_logits.grad is not None and layer.mask_logits.grad.abs().sum() > 0
    assert layer.mask_logits.std().item() == pytest.approx(0.01, rel=0.2)


def test_freeze_keeps_outputs_and_packs_masks():
    torch.manual_seed(1)
    block = MGLUFeedForward(16, 24, n_masks=4)
    x = torch.randn(2, 3, 16)
    before = block(x)
    logits = block.mglu.mask_logits.detach().clone()
    block.freeze()
    assert block.mglu.frozen and block.mglu.mask_logits is None
    assert torch.equal(block.mglu.packed_masks, mglu.pack_masks(logits))
    torch.testing.assert_close(block(x), before, rtol=0, atol=0)
    assert block(x).shape == (2, 3, 16)


def test_state_dict_round_trips():
    torch.manual_seed(2)
    trained = MGLUFeedForward(16, 24, n_masks=2)
    fresh = MGLUFeedForward(16, 24, n_masks=2)
    fresh.load_state_dict(trained.state_dict())
    x = torch.randn(5, 16)
    torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)
    trained.freeze()
    state = trained.state_dict()
    assert state["mglu.packed_masks"].dtype == torch.uint8 and "mglu.mask_logits" not in state
    fresh = MGLUFeedForward(16, 24, n_masks=2)
    fresh.load_state_dict(state)
    assert fresh.mglu.frozen
    torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)


def test_constructor_validates():
    with pytest.raises(mglu.MGLUValueError, match="n_masks"):
        MGLU(8, 8, n_masks=17)
    with pytest.raises(mglu.MGLUValueError, match="activation"):
        MGLU(8, 8, activation="tanh")


def test_module_backend_is_used():
    layer = MGLU(8, 8, backend="cuda")
    with pytest.raises(mglu.BackendUnavailableError, match="cuda"):
        layer(torch.randn(2, 8))
