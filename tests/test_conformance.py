"""Every backend that runs here on the whole catalogue, and the checker on broken backends."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from mglu.backends import BACKEND_NAMES, REGISTRY, Backend, new_output, torch_backend
from mglu.conformance.cases import Case, catalogue, make_inputs
from mglu.conformance.checker import check_case, refusal
from mglu.conformance.tolerances import FLOOR, bound, rel_error

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASES = catalogue()
HERE = [name for name in BACKEND_NAMES if any(not refusal(name, c, DEVICE) for c in CASES)]
#: without a GPU the kernel backends run interpreted (Triton) or simulated (Numba), 10-100x
#: slower than the torch backend: CI judges them on the quick catalogue (every dtype, both
#: mask forms, tails, garbage bits, n_masks 1 and 16), the GPU on every case
KERNEL_CASES = CASES if DEVICE == "cuda" else catalogue(quick=True)
RUNS = [(b, c) for b in HERE for c in (CASES if b == "torch" else KERNEL_CASES)]


def test_torch_backend_runs_here():
    assert "torch" in HERE


def test_every_installed_kernel_backend_runs_here():
    """HERE drops a backend that refuses every case; an installed one must not be dropped
    (a broken capability check would leave it untested while the suite passes). CPU: triton
    and numba (interpreter, simulator); a GPU: cuda too."""
    import importlib.util

    installed = {"triton": importlib.util.find_spec("triton") is not None,
                 "numba": importlib.util.find_spec("numba_cuda") is not None,
                 "cuda": importlib.util.find_spec("cupy") is not None and DEVICE == "cuda"}
    assert set(HERE) == {"torch"} | {name for name, ok in installed.items() if ok}


def test_catalogue_covers_the_issue_list():
    names = {c.name for c in CASES}
    assert {"one_token", "zero_tokens", "batch_3d", "noncontig", "odd_dims", "garbage_tail",
            "masks_zeros", "masks_ones", "mid"} <= names
    assert {c.n_masks for c in CASES} >= {1, 2, 3, 4, 8, 16}
    assert {c.dtype for c in CASES} == set(FLOOR)
    assert {c.form for c in CASES} == {"packed", "logits"}
    assert len({c.id for c in CASES}) == len(CASES)
    # a case that names its dtypes is in those only; the GEMV keeps an fp64 case
    limited = {c.name for c in CASES if c.dtypes is not None}
    assert limited and all(c.dtype in c.dtypes for c in CASES if c.name in limited)
    assert not any(c.name in limited and c.dtype == torch.float64 for c in CASES)
    assert any(c.name == "triton_gemv_k_tail" and c.dtype == torch.float64 for c in CASES)


@pytest.mark.parametrize("backend,case", RUNS, ids=lambda v: v if isinstance(v, str) else v.id)
def test_conformance(backend, case):
    result = check_case(backend, case, DEVICE)
    if result.skipped:
        pytest.skip("; ".join(result.skipped))
    assert result.passed, result.describe()


@pytest.mark.parametrize("case", [c for c in CASES if c.noncontig], ids=lambda c: c.id)
def test_inputs_are_fresh_random_and_strided_where_asked(case):
    a, b = make_inputs(case, 1), make_inputs(case, 2)
    assert a.x.stride(-1) == 2 and a.weight.stride(0) == 2, (a.x.stride(), a.weight.stride())
    assert a.x.dtype == case.dtype and a.weight.dtype == case.dtype
    assert not torch.equal(a.x, b.x) and a.x.abs().min() > 0


def test_garbage_tail_sets_tail_bits():
    case = next(c for c in CASES if c.name == "garbage_tail" and c.form == "packed")
    packed = make_inputs(case, 0).masks
    assert (packed[..., -1] >> (case.d_model % 8)).ne(0).all()


def test_rel_error_rules():
    ref = np.ones(4)
    assert rel_error(torch.tensor([1.0, 1, 1, float("nan")]), ref) == math.inf
    assert rel_error(torch.ones(3), ref) == math.inf
    assert rel_error(torch.zeros(4), np.zeros(4)) == 0.0
    assert rel_error(torch.full((4,), 1e-3), np.zeros(4)) == math.inf
    assert rel_error(torch.full((4,), 1e-3), np.zeros(4), magnitude=np.ones(4)) == pytest.approx(1e-3)
    assert rel_error(torch.tensor([1.0, 1, 1, 2]), ref) == pytest.approx(0.5)
    assert bound(torch.float16, None) == 2e-3 and bound(torch.bfloat16, 0.02) == 0.04


def _fake(forward=None, backward=None):
    return Backend("numba", lambda p: [], forward or torch_backend.forward, backward or torch_backend.backward)


def _skips_last(x2d, weight, packed, activation):
    good = torch_backend.forward(x2d, weight, packed, activation)
    out = new_output(good.shape, good.dtype, good.device)
    out.view(-1)[:-1] = good.view(-1)[:-1]
    return out


def _scaled_out(x2d, weight, packed, activation):
    return torch_backend.forward(x2d, weight, packed, activation) * 1.001


def _noisy_out(x2d, weight, packed, activation):
    out = torch_backend.forward(x2d, weight, packed, activation)
    return out + 1e-9 * torch.randn_like(out)


def _raises(x2d, weight, packed, activation):
    raise RuntimeError("kernel exploded")


def _bad_dmask(*args):
    dx, dw, dm = torch_backend.backward(*args)
    return dx, dw, dm * 2 if dm is not None else None


FP32 = Case("probe", (5,), 24, 40, 3, dtype=torch.float32, form="logits")


@pytest.mark.parametrize(
    "fake, symptom",
    [
        (_fake(forward=_skips_last), "out err=inf"),
        (_fake(forward=_scaled_out), "out err=0.001"),
        (_fake(forward=_noisy_out), "two runs differ"),
        (_fake(forward=_raises), "kernel exploded"),
        (_fake(backward=_bad_dmask), "dS err=1"),
    ],
)
def test_checker_catches_broken_backends(monkeypatch, fake, symptom):
    monkeypatch.setitem(REGISTRY, "numba", fake)
    result = check_case("numba", FP32)
    assert not result.passed and symptom in result.describe()


def test_checker_passes_a_faithful_copy_and_compares_to_torch(monkeypatch):
    monkeypatch.setitem(REGISTRY, "numba", _fake())
    result = check_case("numba", FP32)
    assert result.passed, result.describe()
    assert [q.name for q in result.quantities] == ["out", "dx", "dW", "dS", "out (no grad)"]


def test_checker_runs_gradcheck_on_small_fp64(monkeypatch):
    result = check_case("torch", replace(FP32, dtype=torch.float64))
    assert result.gradcheck is True
    monkeypatch.setitem(REGISTRY, "numba", _fake(backward=lambda *a: tuple(
        t * 1.01 if t is not None else None for t in torch_backend.backward(*a))))
    assert check_case("numba", replace(FP32, dtype=torch.float64)).gradcheck is False


def test_refusal_becomes_skip():
    result = check_case("cuda", FP32)
    assert result.verdict == "skip" and result.skipped == ['needs a CUDA tensor (got cpu)']
