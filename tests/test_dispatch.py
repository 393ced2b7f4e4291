import logging

import pytest
import torch

import mglu
from mglu import BackendUnavailableError, MGLUValueError
from mglu.backends import REGISTRY, Backend, torch_backend


def _args(dtype=torch.float32):
    x = torch.randn(3, 16, dtype=dtype)
    w = torch.randn(8, 16, dtype=dtype)
    return x, w, mglu.pack_masks(torch.randn(2, 8, 16))


def test_auto_picks_torch_and_explains_everyone():
    sel = mglu.explain(*_args())
    assert sel.chosen == "torch"
    assert set(sel.refused) == {"triton", "cuda", "numba"}
    text = str(sel)
    for name in mglu.BACKEND_NAMES:
        assert name in text
    assert "not implemented yet" in text


def test_env_var_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("MGLU_BACKEND", "torch")
    assert mglu.explain(*_args()).requested == "torch"
    monkeypatch.setenv("MGLU_BACKEND", "triton")
    assert mglu.explain(*_args()).requested == "triton"
    with pytest.raises(BackendUnavailableError, match="not implemented yet") as info:
        mglu.mglu(*_args())
    assert info.value.backend == "triton" and info.value.reasons == ["not implemented yet"]


def test_argument_overrides_env(monkeypatch):
    monkeypatch.setenv("MGLU_BACKEND", "triton")
    out = mglu.mglu(*_args(), backend="torch")
    assert out.shape == (3, 8)


@pytest.mark.parametrize("name", ["cuda", "numba", "triton"])
def test_named_unavailable_backend_raises_never_falls_back(name):
    with pytest.raises(BackendUnavailableError) as info:
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
    monkeypatch.setattr("mglu.dispatch.AUTO_PRIORITY", ("cuda", "numba", "torch"))
    mglu.mglu(*_args())
    assert calls == ["numba"]
    monkeypatch.setattr("mglu.dispatch.AUTO_PRIORITY", ("cuda",))
    with pytest.raises(BackendUnavailableError, match="cuda: refuses for the test"):
        mglu.mglu(*_args())


def test_choice_is_logged(caplog):
    with caplog.at_level(logging.DEBUG, logger="mglu"):
        mglu.mglu(*_args())
    assert "runs on 'torch'" in caplog.text and "triton  refused: not implemented yet" in caplog.text
