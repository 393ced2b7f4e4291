"""What gets timed: the baselines of SPEC §7 and every registered backend, bound to random
inputs of one :class:`~mglu.bench.cases.Case`.

Shapes: ``x (T, d_model)``, ``W, Wg, Wu (d_ff, d_model)``, ``dout (T, d_ff)``, masks
``(n_masks, d_ff, d_model)`` (bool or logits) or packed ``(n_masks, d_ff, ceil(d_model/8))``.

- ``naive`` (the paper's baseline): per call and per mask, materialise ``M_i * W`` and
  ``~M_i * W``, two products, ``act(gate) * value``, summed in the input dtype::

      out = sum_i act(x @ (M_i * W).T) * (x @ (~M_i * W).T)

  Inference (``fwd``) keeps the masks as ``bool`` tensors on the device (one byte per mask
  and element); training (``bwd``, ``fwdbwd``) uses logits in the input dtype with the
  straight-through mask ``M = (S > 0) + S - S.detach()`` and autograd for the gradients.
- ``naive+compile``: the same under ``torch.compile(fullgraph=True, dynamic=False)``
  (the paper's rebuttal baseline); compiled once per case, before timing.
- ``swiglu``: ``act(x @ Wg.T) * (x @ Wu.T)``, two products and the elementwise
  ``act * mul``, with the case's activation (SwiGLU for the default ``silu``);
  ``swiglu+compile`` the same under ``torch.compile``.
- ``<name> eager`` (``--eager``): the public op ``mglu.mglu(..., backend=name)`` called
  back to back with the host's work included (forward only).
- a backend ``name``: ``REGISTRY[name].forward`` / ``.backward`` called directly, the
  kernels without the public op's validation and dispatch. ``bwd`` times the backend's
  backward on masks packed beforehand (the step's forward packed them); ``fwdbwd`` times
  ``pack_masks(logits)`` + forward + backward, what a training step of the op runs,
  including the gradient factors a ``saves_factors`` backend passes from its forward to its
  backward.
"""

import math
from functools import cached_property
from typing import Callable

import torch
import torch.nn.functional as F

from ..activations import ACTIVATIONS
from ..backends import REGISTRY, Problem
from ..masks import pack_masks, packed_width, unpack_masks
from ..nn import LOGIT_INIT_STD
from .cases import Case
from .harness import Bound

#: every tensor of copy ``k`` has its own seed, ``SEED_STRIDE * k + SEEDS[name]``, so copy 0
#: is bit-identical for every runner whatever order it draws its tensors in
SEEDS = {"x": 1, "w": 2, "masks": 3, "dout": 4, "wg": 5, "wu": 6}
SEED_STRIDE = 16
#: SPEC §2: mask logits are initialised as 0.01 * randn
LOGIT_STD = LOGIT_INIT_STD


def _gelu_tanh(g):
    return F.gelu(g, approximate="tanh")


def _identity(g):
    return g


#: the PyTorch activation each baseline applies, by SPEC name
TORCH_ACT = {
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "relu": F.relu,
    "identity": _identity,
}
assert tuple(TORCH_ACT) == ACTIVATIONS


class Inputs:
    """Random inputs of copy ``k`` of ``case`` (never zeros), drawn on first use.

    ``x ~ N(0, 1)``; ``W, Wg, Wu ~ N(0, 1/d_model)`` so gates are ``O(1)`` in fp16;
    ``packed``: uniform random bytes (tail bits past ``d_model`` included, which every
    backend must ignore); ``logits ~ 0.01 N(0, 1)``; ``dout ~ N(0, 1)``.
    """

    def __init__(self, case: Case, device: torch.device, k: int):
        self.case, self.device, self.k = case, device, k

    def _gen(self, name: str) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(SEED_STRIDE * self.k + SEEDS[name])
        return g

    def _randn(self, name: str, shape, scale: float = 1.0) -> torch.Tensor:
        t = torch.randn(shape, generator=self._gen(name), device=self.device, dtype=self.case.torch_dtype)
        return t.mul_(scale) if scale != 1.0 else t

    @cached_property
    def x(self):
        return self._randn("x", (self.case.tokens, self.case.d_model))

    @cached_property
    def w(self):
        return self._randn("w", (self.case.d_ff, self.case.d_model), 1 / math.sqrt(self.case.d_model))

    @cached_property
    def wg(self):
        return self._randn("wg", (self.case.d_ff, self.case.d_model), 1 / math.sqrt(self.case.d_model))

    @cached_property
    def wu(self):
        return self._randn("wu", (self.case.d_ff, self.case.d_model), 1 / math.sqrt(self.case.d_model))

    @cached_property
    def dout(self):
        return self._randn("dout", (self.case.tokens, self.case.d_ff))

    @cached_property
    def frozen(self):
        """Packed masks of the inference form: random bytes."""
        c = self.case
        shape = (c.n_masks, c.d_ff, packed_width(c.d_model))
        return torch.randint(0, 256, shape, generator=self._gen("masks"), device=self.device, dtype=torch.uint8)

    @cached_property
    def bool_masks(self):
        return unpack_masks(self.frozen, self.case.d_model)

    @cached_property
    def logits(self):
        c = self.case
        return self._randn("masks", (c.n_masks, c.d_ff, c.d_model), LOGIT_STD)

    @cached_property
    def trained(self):
        """Packed ``logits > 0``: what a training step's forward hands its backward."""
        return pack_masks(self.logits)

    def packed(self) -> torch.Tensor:
        """The packed masks a backend sees in this case's mode."""
        return self.frozen if self.case.mode == "fwd" else self.trained


def naive_mglu(x, w, masks, act):
    """The paper's naive inference MGLU: bool ``masks (n, d_ff, d_model)``, materialised per call."""
    out = None
    for i in range(masks.shape[0]):
        m = masks[i]
        term = act(x @ (w * m).T) * (x @ (w * ~m).T)
        out = term if out is None else out + term
    return out


def naive_mglu_ste(x, w, logits, act):
    """The paper's naive training MGLU: hard masks ``S > 0`` with a straight-through gradient."""
    hard = (logits > 0).to(logits.dtype)
    m_all = hard + (logits - logits.detach())
    out = None
    for i in range(m_all.shape[0]):
        m = m_all[i]
        term = act(x @ (w * m).T) * (x @ (w * (1 - m)).T)
        out = term if out is None else out + term
    return out


def glu(x, wg, wu, act):
    """``act(x @ Wg.T) * (x @ Wu.T)``: PyTorch SwiGLU for ``act = silu``."""
    return act(x @ wg.T) * (x @ wu.T)


def autograd_bound(fn: Callable, inputs: list[tuple[str, torch.Tensor]], dout, mode: str) -> Bound:
    """A :class:`Bound` for a plain PyTorch function: ``fwd`` calls it; ``bwd`` runs the
    forward in ``pre`` and times ``out.backward(dout)``; ``fwdbwd`` times both. Gradients
    are returned under the names given with the inputs."""
    if mode == "fwd":
        args = [t for _, t in inputs]
        return Bound(step=lambda: {"out": fn(*args)}, read_bytes=sum(t.nbytes for t in args))
    names = [name for name, _ in inputs]
    leaves = [t.detach().requires_grad_(True) for _, t in inputs]
    state = {}

    def clear():
        for leaf in leaves:
            leaf.grad = None

    def grads():
        return {name: leaf.grad for name, leaf in zip(names, leaves)}

    read = sum(t.nbytes for t in leaves) + dout.nbytes
    if mode == "bwd":
        def pre():
            clear()
            state["out"] = fn(*leaves)

        def step():
            state.pop("out").backward(dout)
            return grads()

        return Bound(step=step, read_bytes=read, pre=pre)

    def step_all():
        out = fn(*leaves)
        out.backward(dout)
        return {"out": out.detach(), **grads()}

    return Bound(step=step_all, read_bytes=read, pre=clear)


class Runner:
    """A row source: ``family`` is ``mglu`` or ``glu`` (which reference judges it),
    ``kind`` is ``baseline`` or ``backend``."""

    name: str
    family: str
    kind: str = "baseline"
    compiled: bool = False

    def reasons(self, case: Case, device: torch.device) -> list[str]:
        """Why this runner cannot run ``case`` (empty: it can)."""
        return []

    def prepare(self, case: Case, device: torch.device) -> Callable[[Inputs], Bound]:
        """Once per case (compiles here, lazily on the first call): a binder of input copies."""
        raise NotImplementedError


def _maybe_compile(fn: Callable, compiled: bool) -> Callable:
    if not compiled:
        return fn
    # a fresh Dynamo cache per case: no recompile limit reached across a sweep, and with
    # dynamic=False every case gets kernels specialised to its exact shapes
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, dynamic=False)


class NaiveRunner(Runner):
    family = "mglu"

    def __init__(self, compiled: bool):
        self.compiled = compiled
        self.name = "naive+compile" if compiled else "naive"

    def prepare(self, case, device):
        act = TORCH_ACT[case.activation]
        base = naive_mglu if case.mode == "fwd" else naive_mglu_ste

        def naive(x, w, masks):
            return base(x, w, masks, act)

        fn = _maybe_compile(naive, self.compiled)

        def bind(inp: Inputs) -> Bound:
            if case.mode == "fwd":
                return autograd_bound(fn, [("dx", inp.x), ("dW", inp.w), ("masks", inp.bool_masks)], None, "fwd")
            return autograd_bound(fn, [("dx", inp.x), ("dW", inp.w), ("dS", inp.logits)], inp.dout, case.mode)

        return bind


class GLURunner(Runner):
    family = "glu"

    def __init__(self, compiled: bool):
        self.compiled = compiled
        self.name = "swiglu+compile" if compiled else "swiglu"

    def prepare(self, case, device):
        act = TORCH_ACT[case.activation]

        def swiglu(x, wg, wu):
            return glu(x, wg, wu, act)

        fn = _maybe_compile(swiglu, self.compiled)

        def bind(inp: Inputs) -> Bound:
            named = [("dx", inp.x), ("dWg", inp.wg), ("dWu", inp.wu)]
            return autograd_bound(fn, named, inp.dout if case.mode != "fwd" else None, case.mode)

        return bind


def problem_of(case: Case, device: torch.device) -> Problem:
    """The backend capability-check record of ``case``; training modes need ``dM``."""
    return Problem(
        tokens=case.tokens, d_model=case.d_model, d_ff=case.d_ff, n_masks=case.n_masks,
        dtype=case.torch_dtype, device=device, activation=case.activation,
        needs_dmask=case.mode != "fwd",
    )


class BackendRunner(Runner):
    family = "mglu"
    kind = "backend"

    def __init__(self, name: str):
        self.name = name

    def reasons(self, case, device):
        return list(REGISTRY[self.name].reasons(problem_of(case, device)))

    def prepare(self, case, device):
        be = REGISTRY[self.name]
        act, mode = case.activation, case.mode

        def bind(inp: Inputs) -> Bound:
            x, w = inp.x, inp.w
            if mode == "fwd":
                p = inp.frozen
                return Bound(step=lambda: {"out": be.forward(x, w, p, act)}, read_bytes=x.nbytes + w.nbytes + p.nbytes)
            s, dout = inp.logits, inp.dout
            out_shape = (x.shape[0], w.shape[0])
            if mode == "bwd":
                p = inp.trained

                def step():
                    dx, dw, ds = be.backward(dout, x, w, p, act, s.dtype)
                    return {"dx": dx, "dW": dw, "dS": ds}

                return Bound(step=step, read_bytes=x.nbytes + w.nbytes + p.nbytes + dout.nbytes)

            def step_all():
                # as the public op under autograd: a backend that keeps its gradient
                # factors (Backend.saves_factors) hands them from its forward to its backward
                packed = pack_masks(s)
                kept = {}
                if be.saves_factors:
                    kept["factors"] = torch.empty((packed.shape[0] + 1, *out_shape), dtype=x.dtype,
                                                  device=x.device)
                out = be.forward(x, w, packed, act, **kept)
                dx, dw, ds = be.backward(dout, x, w, packed, act, s.dtype, **kept)
                return {"out": out, "dx": dx, "dW": dw, "dS": ds}

            return Bound(step=step_all, read_bytes=x.nbytes + w.nbytes + s.nbytes + dout.nbytes)

        return bind


class OpRunner(BackendRunner):
    """``mglu.mglu(x, W, packed, backend=name)`` back to back, host time included
    (``Bound.host_inclusive``): the public op's validation, dispatch and launches as an
    eager decode loop meets them, beside the backend's device-time row. Forward only."""

    kind = "eager"

    def __init__(self, name: str):
        super().__init__(name)
        self.backend = name
        self.name = f"{name} eager"

    def reasons(self, case, device):
        if case.mode != "fwd":
            return ["the eager row times the forward (inference) only"]
        return list(REGISTRY[self.backend].reasons(problem_of(case, device)))

    def prepare(self, case, device):
        from ..ops import mglu as public_op

        act, backend = case.activation, self.backend

        def bind(inp: Inputs) -> Bound:
            x, w, p = inp.x, inp.w, inp.frozen
            return Bound(step=lambda: {"out": public_op(x, w, p, activation=act, backend=backend)},
                         read_bytes=x.nbytes + w.nbytes + p.nbytes, host_inclusive=True)

        return bind


#: baseline name -> runner, in table order
BASELINES: dict[str, Runner] = {
    r.name: r for r in (GLURunner(False), GLURunner(True), NaiveRunner(False), NaiveRunner(True))
}
