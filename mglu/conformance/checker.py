"""The SPEC §4 checker: one backend on one :class:`Case`, through the public op.

For each case it runs ``mglu.mglu(..., backend=name)`` forward and backward (autograd) on
fresh random inputs with NaN-poisoned outputs, and judges ``out``, ``dx``, ``dW`` and
``dS`` (logits form) against the float64 reference by
``rel_error <= max(2 * e_torch, FLOOR[dtype])``. It also requires two runs to agree
bitwise and, for small fp64 cases, ``torch.autograd.gradcheck`` for ``x`` and ``W``.
"""

import secrets
import traceback
from dataclasses import dataclass, field

import torch

from .. import reference
from ..backends import REGISTRY, Problem, poisoned_outputs
from ..errors import BackendUnavailableError
from ..masks import pack_masks
from ..ops import backward_op, mglu
from .cases import Case, make_inputs
from .tolerances import bound, rel_error

#: gradcheck (fast mode: a few random directions) on fp64 cases up to this many elements
#: of x and W; at 2500 the whole fp64 catalogue gradchecks in about 2 s on 2 CPU cores
GRADCHECK_MAX_ELEMENTS = 2500
#: fp64 central differences (eps 1e-6) are good to about 1e-10 on these O(1) problems;
#: gradcheck's defaults (atol 1e-5, rtol 1e-3) let a 1% gradient error through in fast mode
GRADCHECK_TOL = {"atol": 1e-8, "rtol": 1e-6}
TORCH = "torch"


@dataclass
class Quantity:
    name: str
    error: float
    bound: float

    @property
    def passed(self) -> bool:
        return self.error <= self.bound


@dataclass
class CaseResult:
    """Outcome of one case on one backend; ``skipped`` holds the backend's refusal reasons."""

    case: Case
    backend: str
    seed: int
    quantities: list[Quantity] = field(default_factory=list)
    deterministic: bool | None = None
    gradcheck: bool | None = None
    skipped: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return (
            not self.skipped
            and self.error is None
            and all(q.passed for q in self.quantities)
            and self.deterministic is not False
            and self.gradcheck is not False
        )

    @property
    def verdict(self) -> str:
        if self.skipped:
            return "skip"
        return "PASS" if self.passed else "FAIL"

    def describe(self) -> str:
        parts = [f"{self.backend} {self.case.id} seed={self.seed}: {self.verdict}"]
        parts += [f"{q.name} err={q.error:.3g} bound={q.bound:.3g}" for q in self.quantities]
        if self.deterministic is False:
            parts.append("two runs differ bitwise")
        if self.gradcheck is False:
            parts.append("gradcheck failed")
        if self.skipped:
            parts.append("refused: " + "; ".join(self.skipped))
        if self.error:
            parts.append(self.error)
        return " | ".join(parts)


#: suffix of the gradients a factor-saving backend computes again without the saved factors
RECOMPUTED = " (recomputed gates)"
#: suffix of ``out`` from a call without gradients (the op layer's direct path, and for a
#: factor-saving backend the kernels that do not keep them, e.g. Triton's one-token GEMV)
NO_GRAD = " (no grad)"


def base_quantity(name: str) -> str:
    """The reference quantity a checked name is judged against (``dx`` for ``dx`` + suffix)."""
    return name.removesuffix(RECOMPUTED).removesuffix(NO_GRAD)


def _run(backend: str, case: Case, inputs) -> dict[str, torch.Tensor]:
    """``out`` and the gradients through the public op, outputs poisoned with NaN; ``out``
    again from a call without gradients. A backend whose forward saves gradient factors
    (``Backend.saves_factors``) is also run through ``mglu::backward`` without them, so both
    of its backward paths are judged."""
    x = inputs.x.detach().requires_grad_()
    weight = inputs.weight.detach().requires_grad_()
    masks = inputs.masks.detach()
    if case.form == "logits":
        masks.requires_grad_()
    with poisoned_outputs():
        out = mglu(x, weight, masks, activation=case.activation, backend=backend)
        out.backward(inputs.dout)
    got = {"out": out.detach(), "dx": x.grad, "dW": weight.grad}
    if case.form == "logits":
        got["dS"] = masks.grad
    with poisoned_outputs(), torch.no_grad():
        got["out" + NO_GRAD] = mglu(inputs.x, inputs.weight, inputs.masks, activation=case.activation,
                                    backend=backend)
    if REGISTRY[backend].saves_factors:
        logits = masks.detach() if case.form == "logits" else None
        packed = pack_masks(logits) if logits is not None else masks
        d_ff, d_model = weight.shape
        with poisoned_outputs():
            dx, dw, ds = backward_op(inputs.dout.reshape(-1, d_ff), x.detach().reshape(-1, d_model),
                                     weight.detach(), packed, logits, x.new_empty((0,)), case.activation, backend)
        got["dx" + RECOMPUTED], got["dW" + RECOMPUTED] = dx.reshape(x.shape), dw
        if logits is not None:
            got["dS" + RECOMPUTED] = ds
    return got


def _reference(case: Case, inputs):
    """Reference values and magnitudes (the denominators where a value is all zero)."""
    args = [t.double().cpu().numpy() for t in (inputs.x, inputs.weight)] + [inputs.bool_masks]
    dout = inputs.dout.double().cpu().numpy()
    ref = {"out": reference.forward(*args, case.activation)}
    ref["dx"], ref["dW"], ref["dS"] = reference.backward(*args, dout, case.activation)
    return ref, reference.magnitudes(*args, dout, case.activation)


def _errors(got, ref) -> dict[str, float]:
    values, magnitudes = ref
    return {name: rel_error(y, values[base_quantity(name)], magnitudes[base_quantity(name)])
            for name, y in got.items()}


def _same_bits(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _gradcheck(backend: str, case: Case, inputs) -> bool | None:
    size = inputs.x.numel() + inputs.weight.numel()
    if case.dtype != torch.float64 or size > GRADCHECK_MAX_ELEMENTS or case.tokens == 0:
        return None
    x = inputs.x.detach().requires_grad_()
    weight = inputs.weight.detach().requires_grad_()
    masks = inputs.masks.detach()
    fn = lambda a, b: mglu(a, b, masks, activation=case.activation, backend=backend)  # noqa: E731
    return torch.autograd.gradcheck(fn, (x, weight), fast_mode=True, raise_exception=False, **GRADCHECK_TOL)


def refusal(backend: str, case: Case, device) -> list[str]:
    """The backend's reasons for refusing this case on ``device`` (empty: it can run)."""
    problem = Problem(case.tokens, case.d_model, case.d_ff, case.n_masks, case.dtype,
                      torch.device(device), case.activation, case.form == "logits")
    return REGISTRY[backend].reasons(problem)


def check_case(backend: str, case: Case, device="cpu", seed: int | None = None) -> CaseResult:
    """Judge ``backend`` on ``case``; exceptions become a failed result, refusals a skip."""
    seed = secrets.randbits(31) if seed is None else seed
    result = CaseResult(case, backend, seed)
    result.skipped = refusal(backend, case, device)
    if result.skipped:
        return result
    try:
        inputs = make_inputs(case, seed, device)
        ref = _reference(case, inputs)
        got = _run(backend, case, inputs)
        errors = _errors(got, ref)
        e_torch = None if backend == TORCH else _errors(_run(TORCH, case, inputs), ref)
        result.quantities = [
            Quantity(name, err, bound(case.dtype, None if e_torch is None else e_torch[base_quantity(name)]))
            for name, err in errors.items()
        ]
        result.deterministic = _same_bits(got, _run(backend, case, inputs))
        result.gradcheck = _gradcheck(backend, case, inputs)
    except BackendUnavailableError as exc:
        result.error = f"refused at run time: {exc}"
    except Exception as exc:  # a crashing backend is a failed case, reported with its trace
        result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    return result
