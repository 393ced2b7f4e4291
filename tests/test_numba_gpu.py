"""The numba backend on a GPU: CUDA-graph capture of its launches and the on-disk kernel
cache (a second process loads, does not compile). Skipped without CUDA."""

import importlib.util
import subprocess
import sys

import pytest
import torch

import mglu
from mglu.backends import REGISTRY, Problem

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("numba_cuda") is None,
    reason="needs a CUDA device and numba-cuda",
)


def _inputs(tokens, dtype=torch.bfloat16, d_model=256, d_ff=384, n_masks=4):
    x = torch.randn(tokens, d_model, device="cuda", dtype=dtype)
    w = torch.randn(d_ff, d_model, device="cuda", dtype=dtype) / 16
    packed = mglu.pack_masks(torch.randn(n_masks, d_ff, d_model, device="cuda"))
    return x, w, packed


@pytest.mark.parametrize("tokens", [1, 33])  # decode and tiled
def test_forward_and_backward_capture_in_a_cuda_graph(tokens):
    backend = REGISTRY["numba"]
    x, w, packed = _inputs(tokens)
    assert not backend.reasons(Problem.of(x, w, packed, "silu", needs_dmask=True))
    dout = torch.randn(tokens, w.shape[0], device="cuda", dtype=x.dtype)
    eager = (backend.forward(x, w, packed, "silu"),) + backend.backward(dout, x, w, packed, "silu", x.dtype)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = backend.forward(x, w, packed, "silu")
        grads = backend.backward(dout, x, w, packed, "silu", x.dtype)
    graph.replay()
    torch.cuda.synchronize()
    for got, want in zip((out,) + grads, eager):
        assert torch.equal(got, want)


CACHE_PROBE = r"""
import torch, mglu
from mglu.backends import REGISTRY
from mglu.backends.numba_backend import DECODE_VARIANTS, decode_plan, kernels
x = torch.randn(1, 64, device="cuda", dtype=torch.float16)
w = torch.randn(96, 64, device="cuda", dtype=torch.float16)
packed = mglu.pack_masks(torch.randn(2, 96, 64, device="cuda"))
REGISTRY["numba"].forward(x, w, packed, "gelu")
torch.cuda.synchronize()
shape = DECODE_VARIANTS[decode_plan(x, w, packed)]  # a wide-load kernel here
stats = kernels.decode_wide_kernel(2, 2, kernels.FORWARD, False, *shape).stats
print("hits", sum(stats.cache_hits.values()), "misses", sum(stats.cache_misses.values()))
"""


def test_second_process_loads_kernels_from_the_disk_cache():
    first = subprocess.run([sys.executable, "-c", CACHE_PROBE], capture_output=True, text=True)
    second = subprocess.run([sys.executable, "-c", CACHE_PROBE], capture_output=True, text=True)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert "hits 1 misses 0" in second.stdout, (first.stdout, second.stdout)
