import logging

import pytest
import torch

import mglu
from mglu import BackendUnavailableError, MGLUValueError
from mglu.backends import REGISTRY, Backend, Problem, torch_backend


def _args(dtype=torch.float32):
    x = torch.randn(3, 16, dtype=dtype)
    w = torch.randn(8, 16, dtype=dtype)
    return x, w, mglu.pack_masks(torch.randn(2, 8, 16))


def test_auto_picks_torch_and_explains_everyone():
    sel = mglu.explain(*_args())
    assert sel.chosen == "torch"
    # with a GPU the interpreters are off (conftest.py), so triton and numba refuse CPU tensors
    assert set(sel.refused) == {"cuda"} | ({"triton", "numba"} if torch.cuda.is_available() else set())
    text = str(sel)
    for name in mglu.BACKEND_NAMES:
        assert name in text
    assert "needs a CUDA tensor" in text


def test_env_var_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("MGLU_BACKEND", "torch")
    assert mglu.explain(*_args()).requested == "torch"
    monkeypatch.setenv("MGLU_BACKEND", "cuda")
    assert mglu.explain(*_args()).requested == "cuda"
    with pytest.raises(BackendUnavailableError, match="needs a CUDA tensor") as info:
        mglu.mglu(*_args())
    assert info.value.backend == "cuda" and info.value.reasons == ['needs a CUDA tensor (got cpu)']


def test_argument_overrides_env(monkeypatch):
    # the environment names a backend that refuses CPU tensors: the call runs only if the
    # argument wins
    monkeypatch.setenv("MGLU_BACKEND", "cuda")
    out = mglu.mglu(*_args(), backend="torch")
    assert out.shape == (3, 8)
    assert mglu.explain(*_args(), backend="torch").requested == "torch"


@pytest.mark.parametrize("name", ["cuda", "numba", "triton"])
def test_named_unavailable_backend_raises_never_falls_back(name, monkeypatch):
    monkeypatch.setitem(REGISTRY, name, Backend(name, lambda p: ["refuses for the test"]))
    with pytest.raises(BackendUnavailableError, match="refuses for the test") as info:
        mglu.mglu(*_args(), backend=name)
    assert name in str(info.value)


def test_unknown_backend_lists_valid_names(monkeypatch):
    with pytest.raises(MGLUValueError, match="backend: unknown backend 'tensorrt'; valid names: auto, torch, triton, cuda, numba"):
        mglu.mglu(*_args(), backend="tensorrt")
    monkeypatch.setenv("MGLU_BACKEND", "Torch")
    with pytest.raises(MGLUValueError, match="MGLU_BACKEND: unknown backend 'Torch'"):
        mglu.mglu(*_args())


def test_auto_walks_priority_list(monkeypatch):
    calls = []

    def fwd(*a):
        calls.append("numba")
        return torch_backend.forward(*a)

    refusing = Backend("cuda", lambda p: ["refuses for the test"])
    monkeypatch.setitem(REGISTRY, "cuda", refusing)
    monkeypatch.setitem(REGISTRY, "numba", Backend("numba", lambda p: [], fwd, torch_backend.backward))
    monkeypatch.setattr("mglu.dispatch.auto_priority", lambda problem: ("cuda", "numba", "torch"))
    mglu.mglu(*_args())
    assert calls == ["numba"]
    monkeypatch.setattr("mglu.dispatch.auto_priority", lambda problem: ("cuda",))
    with pytest.raises(BackendUnavailableError, match="cuda: refuses for the test"):
        mglu.mglu(*_args())


def test_choice_is_logged(caplog):
    with caplog.at_level(logging.DEBUG, logger="mglu"):
        mglu.mglu(*_args())
    assert "runs on 'torch'" in caplog.text and "cuda    refused: needs a CUDA tensor" in caplog.text


def _problem(tokens, n_masks, device="cuda", backward=False):
    return Problem(tokens, 4096, 14336, n_masks, torch.bfloat16, torch.device(device), "silu", backward=backward)


@pytest.mark.parametrize("tokens,n_masks,first", [
    (1, 1, "triton"), (1, 2, "triton"), (1, 4, "triton"), (1, 5, "cuda"), (1, 8, "cuda"), (2, 1, "cuda"), (4, 4, "cuda"), (5, 4, "cuda"),
    (16, 1, "cuda"),
    (16, 4, "cuda"), (17, 4, "triton"), (64, 1, "triton"), (64, 4, "triton"), (65, 1, "triton"), (8192, 4, "triton"),
])
def test_auto_priority_follows_the_measured_regimes(tokens, n_masks, first):
    order = mglu.auto_priority(_problem(tokens, n_masks))
    assert order[0] == first and set(order) == set(mglu.BACKEND_NAMES)
    # the fallbacks: numba's CUDA-core kernels ahead of the torch backend in decode, behind it above
    assert order[-2:] == (("numba", "torch") if tokens <= 4 else ("torch", "numba"))


def test_auto_priority_cpu_and_backward():
    assert mglu.auto_priority(_problem(1, 4, device="cpu")) == ("torch",)
    assert mglu.auto_priority(_problem(2048, 4, backward=True))[0] == "triton"
    assert mglu.auto_priority(_problem(64, 4, backward=True))[0] == "torch"
