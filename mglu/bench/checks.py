"""Correct before timed: the first call of every row is judged by the SPEC §4 rule.

For a quantity ``y`` of the benched call (``out``, ``dx``, ``dW``, ``dS``; ``dWg``, ``dWu``
for the GLU baselines) the row passes when, on a reduced copy,

    rel_error(y[idx], ref) <= bound(dtype, e_yard)        (mglu.conformance.tolerances)

- ``ref`` is the torch backend (GLU: the eager expression) run on inputs upcast to fp32
  (fp64 when the benched dtype is fp32 or fp64, so the reference is always more precise);
- the reduced copy keeps all tokens and ``CHECK_ROWS`` rows of ``W`` for the quantities
  that are row-local (``out[:, rows]``, ``dW[rows]``, ``dS[:, rows]``), and all of ``W``
  with ``CHECK_TOKENS`` tokens for ``dx[toks]``: so the full-size output of the timed
  call itself is what gets judged, while the reference stays cheap;
- ``e_yard`` is the same error of the torch backend (GLU: eager) in the benched dtype;
  the yardsticks themselves (the ``torch`` backend, ``swiglu``) are held to the floor.

Every full-size output must also be finite everywhere (backends write into NaN-poisoned
buffers during the check call, so an element a kernel skipped fails here).
"""

from dataclasses import dataclass

import torch

from ..backends import REGISTRY
from ..conformance.tolerances import bound, rel_error
from .baselines import TORCH_ACT, Inputs, glu
from .cases import Case

#: rows of W judged: the first and last quarter-block catch edge tiles, the rest is spread
CHECK_ROWS = 256
#: tokens judged for dx (each dx row needs all of W in the reference)
CHECK_TOKENS = 64
#: (dim indexed, index set) of each quantity
LAYOUT = {
    "out": (1, "rows"), "dW": (0, "rows"), "dS": (1, "rows"),
    "dWg": (0, "rows"), "dWu": (0, "rows"), "dx": (0, "toks"),
}
#: runners that are their family's yardstick and so are held to the floor alone
YARDSTICKS = {"torch", "swiglu"}


def sample(n: int, k: int) -> torch.Tensor:
    """Sorted distinct indices into ``0..n-1``: all if ``n <= k``, else the first and last
    ``k // 4`` and ``k // 2`` spread evenly between."""
    if n <= k:
        return torch.arange(n)
    edge = k // 4
    middle = torch.linspace(edge, n - edge - 1, k - 2 * edge).round().long()
    return torch.unique(torch.cat([torch.arange(edge), middle, torch.arange(n - edge, n)]))


def reference_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32


@dataclass
class Quantity:
    dim: int
    index: torch.Tensor
    ref: object  # float64 numpy array
    e_yard: float


@dataclass
class Verdict:
    ok: bool
    details: dict[str, dict[str, float]]
    message: str


def _mglu_pieces(case: Case, inp: Inputs, dt: torch.dtype, rows, toks) -> dict[str, torch.Tensor]:
    tb = REGISTRY["torch"]
    act, mode = case.activation, case.mode
    x, w, p = inp.x.to(dt), inp.w.to(dt), inp.packed()
    w_r, p_r = w.index_select(0, rows), p.index_select(1, rows).contiguous()
    res = {}
    if mode != "bwd":
        res["out"] = tb.forward(x, w_r, p_r, act)
    if mode != "fwd":
        dout = inp.dout.to(dt)
        _, res["dW"], res["dS"] = tb.backward(dout.index_select(1, rows).contiguous(), x, w_r, p_r, act, dt)
        res["dx"] = tb.backward(dout.index_select(0, toks), x.index_select(0, toks), w, p, act, None)[0]
    return res


def _glu_pieces(case: Case, inp: Inputs, dt: torch.dtype, rows, toks) -> dict[str, torch.Tensor]:
    act, mode = TORCH_ACT[case.activation], case.mode
    x, wg, wu = inp.x.to(dt), inp.wg.to(dt), inp.wu.to(dt)
    wg_r, wu_r = wg.index_select(0, rows), wu.index_select(0, rows)
    res = {}
    if mode != "bwd":
        res["out"] = glu(x, wg_r, wu_r, act)
    if mode != "fwd":
        dout = inp.dout.to(dt)
        wg_l, wu_l = wg_r.requires_grad_(True), wu_r.requires_grad_(True)
        glu(x, wg_l, wu_l, act).backward(dout.index_select(1, rows))
        res["dWg"], res["dWu"] = wg_l.grad, wu_l.grad
        xt = x.index_select(0, toks).requires_grad_(True)
        glu(xt, wg, wu, act).backward(dout.index_select(0, toks))
        res["dx"] = xt.grad
    return res


def reference(case: Case, family: str, device: torch.device) -> dict[str, Quantity]:
    """The reduced-copy references of ``case`` for ``family`` (``mglu`` or ``glu``)."""
    inp = Inputs(case, device, 0)
    rows = sample(case.d_ff, CHECK_ROWS).to(device)
    toks = sample(case.tokens, CHECK_TOKENS).to(device)
    pieces = _glu_pieces if family == "glu" else _mglu_pieces
    with torch.enable_grad():
        ref = pieces(case, inp, reference_dtype(case.torch_dtype), rows, toks)
        yard = pieces(case, inp, case.torch_dtype, rows, toks)
    out = {}
    for name, r in ref.items():
        dim, which = LAYOUT[name]
        r64 = r.detach().double().cpu().numpy()
        out[name] = Quantity(dim, rows if which == "rows" else toks, r64, rel_error(yard[name], r64))
    return out


def judge(runner: str, outputs: dict, refs: dict[str, Quantity], dtype: torch.dtype) -> Verdict:
    """Judge the full-size ``outputs`` of one call against ``refs`` (module docstring)."""
    details, failures = {}, []
    for name, q in refs.items():
        y = outputs.get(name)
        if y is None:
            failures.append(f"{name} missing")
            continue
        y = y.detach()
        err = rel_error(y.index_select(q.dim, q.index.to(y.device)), q.ref)
        b = bound(dtype, None if runner in YARDSTICKS else q.e_yard)
        details[name] = {"rel_error": err, "bound": b}
        if not bool(torch.isfinite(y).all()):
            failures.append(f"{name} has NaN/Inf")
        elif not err <= b:
            failures.append(f"{name} rel err {err:.2e} > bound {b:.2e}")
    return Verdict(not failures, details, "; ".join(failures))
