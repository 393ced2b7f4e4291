"""The registered op pair: opcheck, torch.compile, autograd routing, shapes and layouts."""

import numpy as np
import pytest
import torch

import mglu
from mglu import reference

#: the op is opchecked where its kernel backends run: CUDA tensors on a GPU, CPU tensors
#: (interpreted / simulated kernels) without one
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(tokens=5, d_model=20, d_ff=12, n=3, dtype=torch.float64, grad=True):
    x = torch.randn(tokens, d_model, dtype=dtype, requires_grad=grad)
    w = torch.randn(d_ff, d_model, dtype=dtype, requires_grad=grad)
    logits = torch.randn(n, d_ff, d_model, dtype=dtype, requires_grad=grad)
    return x, w, logits


@pytest.mark.parametrize("backend,save", [("torch", True), ("triton", True), ("triton", False), ("cuda", False),
                                          ("numba", False)])
@pytest.mark.parametrize("permuted", [False, True])
@pytest.mark.parametrize("form", ["packed", "logits"])
def test_opcheck(permuted, form, backend, save):
    x, w, logits = (t.detach().to(DEVICE).requires_grad_() for t in _inputs())
    problem = mglu.backends.Problem.of(x, w, logits, "silu")
    if mglu.backends.REGISTRY[backend].reasons(problem):
        pytest.skip(f"{backend} cannot run here")
    if permuted:
        x = torch.randn(20, 5, dtype=torch.float64, device=DEVICE).T.requires_grad_()
        w = torch.randn(20, 12, dtype=torch.float64, device=DEVICE).T.requires_grad_()
    packed = mglu.pack_masks(logits)
    torch.library.opcheck(torch.ops.mglu.forward.default,
                          (x, w, packed, logits if form == "logits" else None, "silu", backend, save))
    _, factors = torch.ops.mglu.forward(x.detach(), w.detach(), packed, None, "gelu", backend, save)
    assert factors.shape == ((4, 5, 12) if save and backend == "triton" else (0,))
    if save and backend == "triton":
        half = [t.detach().to(torch.bfloat16) for t in (x, w)]
        _, factors16 = torch.ops.mglu.forward(*half, packed, None, "gelu", backend, True)
        assert factors16.dtype == torch.bfloat16
        torch.testing.assert_close(factors16.double().cpu(), _factors(*(t.cpu() for t in half), packed.cpu(), "gelu"),
                                   rtol=1e-2, atol=1e-2)
    dout = torch.randn(5, 12, dtype=torch.float64, device=DEVICE)
    torch.library.opcheck(torch.ops.mglu.backward.default,
                          (dout, x.detach(), w.detach(), packed, logits.detach() if form == "logits" else None,
                           factors, "gelu", backend))


def _factors(x, w, packed, activation):
    """float64 ``act'(g_i) (total - g_i) - act(g_i)`` per mask, then ``sum_i act(g_i)``."""
    x2, w2 = x.double().numpy(), w.double().numpy()
    m = reference.unpack(packed.numpy(), w2.shape[1]).astype(np.float64)
    gates = np.einsum("tk,ink->itn", x2, m * w2)
    a, da = reference.ACT[activation](gates)
    values = (x2 @ w2.T)[None] - gates
    return torch.from_numpy(np.concatenate([da * values - a, a.sum(0, keepdims=True)]))


@pytest.mark.parametrize("shape,dtype", [((4, 5, 11), torch.float64), ((4, 5, 12), torch.float32)])
def test_backward_rejects_factors_of_another_call(shape, dtype):
    x, w, logits = _inputs(grad=False)
    with pytest.raises(mglu.MGLUValueError, match="factors"):
        torch.ops.mglu.backward(torch.randn(5, 12, dtype=torch.float64), x, w, mglu.pack_masks(logits), None,
                                torch.zeros(shape, dtype=dtype), "silu", "torch")


def test_compile_fullgraph_matches_eager_forward_and_grads():
    torch.manual_seed(0)
    block = mglu.nn.MGLUFeedForward(16, 24, n_masks=3)
    x = torch.randn(2, 5, 16)
    eager = block(x)
    eager.square().sum().backward()
    want = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    compiled = torch.compile(block, fullgraph=True)
    got = compiled(x)
    got.square().sum().backward()
    torch.testing.assert_close(got, eager, rtol=0, atol=0)
    for g, w in zip([p.grad for p in block.parameters()], want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)


def test_compile_packs_strided_logits():
    """Under torch.compile the logits are packed through a contiguous uint8 copy (masks.py):
    strided logits (a transposed view) give the eager output."""
    torch.manual_seed(0)
    x, w = torch.randn(3, 16), torch.randn(24, 16)
    logits = torch.randn(2, 16, 24).transpose(1, 2)
    compiled = torch.compile(lambda a, b, s: mglu.mglu(a, b, s, backend="torch"), fullgraph=True)
    torch.testing.assert_close(compiled(x, w, logits), mglu.mglu(x, w, logits, backend="torch"), rtol=0, atol=0)


def test_logits_get_straight_through_grad_and_packed_get_none():
    x, w, logits = _inputs()
    out = mglu.mglu(x, w, logits, activation="sigmoid")
    dout = torch.randn_like(out)
    out.backward(dout)
    m = (logits > 0).numpy()
    _, _, dm = reference.backward(x.detach().numpy(), w.detach().numpy(), m, dout.numpy(), "sigmoid")
    np.testing.assert_allclose(logits.grad.numpy(), dm, rtol=1e-10, atol=1e-12)
    packed = mglu.pack_masks(logits)
    x.grad = None
    mglu.mglu(x, w, packed).sum().backward()
    assert x.grad is not None and packed.grad is None


def test_frozen_logits_do_not_pay_for_mask_grads(monkeypatch):
    seen = []
    from mglu.backends import torch_backend

    real = torch_backend.backward

    def spy(*args):
        seen.append(args[-1])
        return real(*args)

    monkeypatch.setitem(mglu.backends.REGISTRY, "torch",
                        mglu.backends.Backend("torch", torch_backend.reasons, torch_backend.forward, spy))
    x, w, logits = _inputs()
    mglu.mglu(x, w, logits.detach()).sum().backward()
    mglu.mglu(x, w, logits).sum().backward()
    assert seen == [None, torch.float64]


def test_shapes_dtypes_zero_tokens_and_noncontiguous():
    x, w, logits = _inputs(grad=False)
    packed = mglu.pack_masks(logits)
    want = reference.forward(x.numpy(), w.numpy(), (logits > 0).numpy(), "silu")
    flat = mglu.mglu(x.reshape(5, 20), w, packed)
    np.testing.assert_allclose(flat.numpy(), want, rtol=1e-12, atol=1e-12)
    batched = mglu.mglu(x.reshape(5, 1, 20), w, packed)
    assert batched.shape == (5, 1, 12)
    torch.testing.assert_close(batched.reshape(5, 12), flat, rtol=0, atol=0)
    strided = torch.randn(5, 40, dtype=torch.float64)[:, ::2]
    strided.copy_(x)
    torch.testing.assert_close(mglu.mglu(strided, w, packed), flat, rtol=0, atol=0)
    empty = mglu.mglu(torch.empty(0, 3, 20, dtype=torch.float64), w, packed)
    assert empty.shape == (0, 3, 12)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)):
        xd, wd = x.to(dtype), w.to(dtype)
        out = mglu.mglu(xd, wd, packed)
        assert out.dtype == dtype
        rounded = reference.forward(xd.double().numpy(), wd.double().numpy(), (logits > 0).numpy(), "silu")
        assert np.linalg.norm(out.double().numpy() - rounded) <= tol * np.linalg.norm(rounded)


def test_zero_tokens_backward_gives_zero_weight_grad():
    _, w, logits = _inputs()
    x = torch.empty(0, 20, dtype=torch.float64, requires_grad=True)
    mglu.mglu(x, w, logits).sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(logits.grad, torch.zeros_like(logits))


def test_plain_eager_calls_skip_the_op_and_match_it(monkeypatch):
    from mglu import ops
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []
    real = ops.forward_op
    monkeypatch.setattr(ops, "forward_op", lambda *a: calls.append(1) or real(*a))

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    x, w, logits = _inputs(grad=False)
    packed = mglu.pack_masks(logits)
    plain = mglu.mglu(x, w, packed)
    assert calls == []
    with Passthrough():
        through_op = mglu.mglu(x, w, packed)
    assert calls == [1]
    assert torch.equal(plain, through_op) and torch.equal(plain, real(x, w, packed, None, "silu", "auto", False)[0])
    xg = x.clone().requires_grad_()
    mglu.mglu(xg, w, packed)
    assert calls == [1, 1]
    with torch.no_grad():
        mglu.mglu(xg, w, logits.requires_grad_())
    assert calls == [1, 1]
