"""The triton backend's launch cache (``launch._launch_compiled``): which calls reuse a
compiled kernel and which go through Triton's own ``jit_fn[grid](...)``.

A stand-in for a ``JITFunction`` records the calls, so this runs without a GPU; on the GPU
the same path is exercised by the conformance suite and tests/test_cuda_graphs.py (graph
replay of a cached launch equals the eager call bitwise).
"""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


class FakeCompiled:
    function, packed_metadata = "function", "metadata"

    def __init__(self, log):
        self.log = log

    def run(self, *args):
        self.log.append(("run", args))


class FakeJit:
    """``fake[grid](*args, **kw)`` as Triton's: compiles (logged) and returns a kernel."""

    arg_names = ["x_ptr", "N", "A", "B"]

    def __init__(self):
        self.log = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.log.append(("jit", grid, args, kwargs))
            return FakeCompiled(self.log)

        return launch


@pytest.fixture
def launch(monkeypatch):
    from mglu.backends.triton_backend import launch

    monkeypatch.setattr(launch, "_COMPILED", {})
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 7, raising=False)
    return launch


def _call(launch, fn, x, n=32, a=1, grid=(3, 2)):
    return launch._launch_compiled(fn, grid, (x, n), {"B": 5, "A": a}, {"num_warps": 4})


def test_the_second_call_of_a_specialisation_runs_the_compiled_kernel(launch):
    fn, x = FakeJit(), torch.zeros(64, dtype=torch.float16)
    _call(launch, fn, x)
    _call(launch, fn, x, grid=(5,))
    assert [e[0] for e in fn.log] == ["jit", "run"]
    # grid padded to three dims, the stream, then the runtime args and the constexprs in the
    # kernel's parameter order (A before B, whatever the dict's order)
    assert fn.log[1][1] == (5, 1, 1, 7, "function", "metadata", None, None, None, x, 32, 1, 5)


@pytest.mark.parametrize("change", ["misaligned", "dtype", "n_is_1", "n_not_16", "wide", "constexpr"])
def test_a_call_triton_would_specialise_differently_compiles_again(launch, change):
    fn, base = FakeJit(), torch.zeros(64, dtype=torch.float16)
    _call(launch, fn, base)
    x, n, a = base, 32, 1
    if change == "misaligned":
        x = base[1:]  # 2 bytes past a 16-byte boundary
    elif change == "dtype":
        x = torch.zeros(64, dtype=torch.bfloat16)
    elif change == "n_is_1":
        n = 1
    elif change == "n_not_16":
        n = 33
    elif change == "wide":
        n = 2**31
    else:
        a = 2
    _call(launch, fn, x, n=n, a=a)
    assert [e[0] for e in fn.log] == ["jit", "jit"]


def test_a_launch_hook_sends_every_call_through_triton(launch):
    import triton

    fn, x = FakeJit(), torch.zeros(64, dtype=torch.float16)
    _call(launch, fn, x)
    unset, triton.knobs.runtime.launch_enter_hook = triton.knobs.runtime.launch_enter_hook, lambda *a: None
    try:
        _call(launch, fn, x)
    finally:
        triton.knobs.runtime.launch_enter_hook = unset
    assert [e[0] for e in fn.log] == ["jit", "jit"]


def test_hook_set_reads_both_kinds_of_triton_hook(launch):
    class Chain:  # later Triton keeps an empty chain where 3.4-3.6 keep None
        def __init__(self, calls):
            self.calls = calls

    assert not launch._hook_set(None)
    assert not launch._hook_set(Chain([]))
    assert launch._hook_set(Chain([print]))
    assert launch._hook_set(print)
