"""CUDA-graph capture of the public op on every kernel backend (GPU only; skipped on CPU)."""

import pytest
import torch

import mglu

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("tokens", [1, 16, 33])
@pytest.mark.parametrize("backend", ["triton", "cuda", "numba"])
def test_graph_replay_matches_eager_bitwise(backend, tokens):
    x = torch.randn(tokens, 256, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(384, 256, device="cuda", dtype=torch.bfloat16) / 16
    packed = mglu.pack_masks(torch.randn(4, 384, 256, device="cuda") > 0)
    eager = mglu.mglu(x, w, packed, backend=backend)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = mglu.mglu(x, w, packed, backend=backend)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, mglu.mglu(x, w, packed, backend=backend))
