import numpy as np
import pytest
import torch

from mglu import ACTIVATIONS, reference
from mglu.activations import PAPER_VARIANT
from mglu.backends import torch_backend
from mglu.bench.baselines import TORCH_ACT


def test_every_implementation_covers_the_one_list():
    assert tuple(PAPER_VARIANT) == ACTIVATIONS
    assert tuple(reference.ACT) == ACTIVATIONS
    assert tuple(torch_backend.ACT) == ACTIVATIONS
    assert tuple(TORCH_ACT) == ACTIVATIONS


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_torch_matches_reference_and_torch_functions(name):
    g = torch.linspace(-6, 6, 241, dtype=torch.float64)
    act, dact = torch_backend.ACT[name](g, True)
    assert torch.equal(torch_backend.ACT[name](g, False)[0], act) and torch_backend.ACT[name](g, False)[1] is None
    ref_act, ref_dact = reference.ACT[name](g.numpy())
    np.testing.assert_allclose(act.numpy(), ref_act, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dact.numpy(), ref_dact, rtol=1e-12, atol=1e-14)
    builtin = TORCH_ACT[name]  # the PyTorch functions the bench's baselines call
    gg = g.clone().requires_grad_()
    builtin(gg).sum().backward()
    torch.testing.assert_close(act, builtin(g), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(dact, gg.grad, rtol=1e-12, atol=1e-14)
