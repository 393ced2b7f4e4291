"""Numba CUDA backend: bandwidth-bound MGLU kernels written in Python (numba-cuda).

Shapes: ``x2d (T, d_model)``, ``weight (d_ff, d_model)``, ``packed (n_masks, d_ff,
ceil(d_model/8))`` uint8. Forward ``out (T, d_ff) = sum_i act(gate_i) * (total - gate_i)``
with ``total = x2d @ W.T``, ``gate_i = x2d @ (M_i W).T``, in one kernel: for
``T <= DECODE_MAX_TOKENS`` ``decode_wide`` (fp16/bf16 with 16-byte loads, where
:func:`decode_plan` allows) or ``decode``, else ``tiled`` (kernels.py). Backward (SPEC §3) in three
kernels: A (the forward kernel in GRAD mode) writes ``D_i`` and ``S``, B writes ``dx``,
C writes ``dW`` and ``dM``. Design and launch shapes: DESIGN.md.

On the GPU the kernels run on PyTorch's current stream on views of the torch tensors
(bf16 viewed as int16), with nothing in the launch path that synchronises or reads device
values. Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's simulator on
NumPy views of CPU tensors, for small problems only. numba is imported on first use, so
``import mglu`` works without it. The decode launch constants are re-exported here for
the tuner and the tests (scripts/numba_tune.py, tests/test_numba_wide.py).
"""

import contextlib
import functools
import importlib.util
import os

import torch

from ..base import Backend, Problem, new_output
from .constants import (
    DECODE_BLOCK,
    DECODE_DEFAULTS,
    DECODE_MAX_LANES,
    DECODE_MAX_TOKENS,
    DECODE_VARIANTS,
    default_variant,
    ELEM_BLOCK,
    SIM_MAX_BLOCKS,
    SIM_MAX_LANES,
    SIM_MAX_MACS,
    SIM_MAX_WEIGHTS,
    TILE_N,
    TILE_T,
    TILE_THREADS,
    twin,
)

_state = {}


def _numba():
    """The kernel modules, imported on first use (numba is an optional dependency)."""
    if "mods" not in _state:
        from . import kernels, numerics

        _state["mods"] = (kernels, numerics)
    return _state["mods"]


def _simulating() -> bool:
    """Whether numba runs in its CUDA simulator; read like numba does, without importing it."""
    if "mods" in _state:
        return _state["mods"][1].SIMULATED
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@functools.cache
def _installed() -> bool:
    """Looked up once: ``find_spec`` of a package not yet imported searches sys.path
    (48 us per call on our CPU machine), and ``reasons`` runs on every call of the op."""
    return importlib.util.find_spec("numba") is not None and importlib.util.find_spec("numba_cuda") is not None


def reasons(problem: Problem) -> list[str]:
    """Empty when the kernels can run ``problem``; else plain sentences why not."""
    if not _installed():
        return ["numba and numba-cuda are not installed (pip install 'mglu[numba]')"]
    out = []
    if _simulating():
        if problem.device.type != "cpu":
            out.append("under NUMBA_ENABLE_CUDASIM=1 the numba backend takes CPU tensors only")
        weights = problem.d_ff * problem.d_model
        if weights > SIM_MAX_WEIGHTS:
            out.append(
                f"too big for Numba's CUDA simulator: d_ff*d_model = {weights} elements of W, "
                f"the limit is {SIM_MAX_WEIGHTS}"
            )
        macs = problem.tokens * problem.d_ff * problem.d_model * (problem.n_masks + 1)
        if macs > SIM_MAX_MACS:
            out.append(
                f"too big for Numba's CUDA simulator: tokens*d_ff*d_model*(n_masks+1) = {macs} "
                f"multiply-adds, the limit is {SIM_MAX_MACS}"
            )
    elif problem.device.type != "cuda":
        out.append("the numba backend runs on CUDA tensors (CPU tensors only under NUMBA_ENABLE_CUDASIM=1)")
    return out


#: the array type of a mask word of ``span`` bytes in ``decode_wide`` (signed: every
#: torch dtype here has a ``__cuda_array_interface__`` type)
_MASK_WORD = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _view(t: torch.Tensor, as_dtype: torch.dtype | None = None):
    """A flat kernel argument sharing ``t``'s memory: its bits as ``as_dtype`` if given,
    else bf16 as int16 bits; NumPy in the simulator, a numba device array (no copy, no
    stream sync) on the GPU."""
    t = t.detach().reshape(-1)
    if as_dtype is not None:
        t = t.view(as_dtype)
    elif t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    if _simulating():
        return t.numpy()
    from numba import cuda

    return cuda.as_cuda_array(t, sync=False)


def _on_device(device: torch.device):
    """Numba's current context on the tensors' GPU (as_cuda_array and launches use it)."""
    if _simulating():
        return contextlib.nullcontext()
    from numba import cuda

    return cuda.gpus[device.index if device.index is not None else torch.cuda.current_device()]


def _launcher(device: torch.device):
    """``launch(kernel, blocks, block, *args)`` on PyTorch's current stream of ``device``.
    Every kernel strides over its work by ``gridDim.x``, so the simulator launches at most
    SIM_MAX_BLOCKS blocks."""
    if _simulating():

        def launch(kernel, blocks, block, *args):
            kernel[min(blocks, SIM_MAX_BLOCKS), block](*args)

        return launch
    from numba import cuda

    stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)

    def launch(kernel, blocks, block, *args):
        kernel[blocks, block, stream](*args)

    return launch


def decode_plan(x2d, weight, packed, variant: str | None = None) -> str:
    """The decode kernel that runs for ``variant`` (a key of DECODE_VARIANTS; ``None``: the
    measured default for ``n_masks``, :func:`constants.default_variant`): ``variant``
    where its 16-byte loads apply (fp16/bf16, ``d_model % (8 span) == 0``, ``x`` and ``W``
    16-byte aligned, the masks ``span``-byte aligned) and its int32 indices do not overflow
    (a chunk index ``< d_ff d_model / 8``, a mask word index ``< n_masks d_ff d_model /
    (8 span)``, a token's chunk ``< T d_model / 8``: all below 2**31; the guard bounds the
    mask bytes, ``packed.numel()``, a stricter test than the words), else ``"scalar"``
    (the element-wise ``decode`` kernel: any dtype, ``d_model`` and alignment). An
    interleaved variant whose ``lanes * span`` chunks do not divide a row hands the row to
    its adjacent twin (:func:`constants.twin`) first; it reads the masks as bytes, so they
    need no alignment."""
    variant = default_variant(packed.shape[0]) if variant is None else variant
    shape = DECODE_VARIANTS[variant]
    if shape is None or x2d.dtype not in (torch.float16, torch.bfloat16):
        return "scalar"
    span, interleave = shape.span, shape.interleave
    if interleave and (x2d.shape[1] // 8) % (decode_lanes(x2d.shape[1] // (8 * span), shape.lanes) * span):
        variant, interleave = twin(variant, interleave=False), False
    aligned = packed.data_ptr() % (1 if interleave else span) == 0
    if x2d.shape[1] % (8 * span) or x2d.data_ptr() % 16 or weight.data_ptr() % 16 or not aligned:
        return "scalar"
    if max(weight.numel() // 8, packed.numel(), x2d.numel() // 8) >= 2**31:
        return "scalar"
    return variant


def decode_lanes(words: int, cap: int = DECODE_MAX_LANES) -> int:
    """Lanes per row of the decode kernels for ``words`` mask words (or byte groups) per
    row: the power of two covering them, at most ``cap`` (a variant's ``lanes``;
    DECODE_MAX_LANES for the element-wise kernel) and SIM_MAX_LANES in the simulator."""
    return min(SIM_MAX_LANES if _simulating() else cap, 1 << (words - 1).bit_length())


def _products(mode, x2d, weight, packed, activation, dout, out, dg, variant=None):
    """Launch the decode (``variant`` per :func:`decode_plan`) or tiled kernel in ``mode``
    (FORWARD: ``out``; GRAD: ``out`` = S, ``dg`` = D)."""
    kernels, numerics = _numba()
    tokens, d_model = x2d.shape
    d_ff, n_masks = weight.shape[0], packed.shape[0]
    code, acc64 = numerics.ACT_CODE[activation], x2d.dtype == torch.float64
    rest = [_view(t) for t in (dout, out, dg)] + [tokens, d_ff, d_model]
    launch = _launcher(x2d.device)
    if tokens > DECODE_MAX_TOKENS:
        tiles = -(-d_ff // TILE_N) * -(-tokens // TILE_T)
        operands = [_view(t) for t in (x2d, weight, packed)]
        launch(kernels.tiled_kernel(n_masks, code, acc64, mode), tiles, TILE_THREADS, *operands, *rest)
        return
    plan = decode_plan(x2d, weight, packed, variant)
    if plan == "scalar":
        kernel = kernels.decode_kernel(n_masks, code, acc64, mode)
        lanes = decode_lanes((d_model + 7) // 8)
        operands = [_view(t) for t in (x2d, weight, packed)]
        launch(kernel, -(-d_ff // (DECODE_BLOCK // lanes)), DECODE_BLOCK, *operands, *rest, lanes)
        return
    shape = DECODE_VARIANTS[plan]
    kernel = kernels.decode_wide_kernel(n_masks, code, mode, x2d.dtype == torch.bfloat16, *shape)
    lanes = decode_lanes(d_model // (8 * shape.span), shape.lanes)
    masks = _view(packed, torch.uint8 if shape.interleave else _MASK_WORD[shape.span])
    operands = [_view(x2d, torch.int32), _view(weight, torch.int32), masks]
    launch(kernel, -(-d_ff // (shape.block // lanes * shape.rows)), shape.block, *operands, *rest, lanes)


def forward(x2d, weight, packed, activation, variant: str | None = None):
    """``out (T, d_ff)`` = ``sum_i act(gate_i) * (total - gate_i)`` in ``x2d.dtype``; ``variant``
    picks the decode kernel (DECODE_VARIANTS; ``None``: the measured default; the tuner
    times each)."""
    kernels, _ = _numba()
    out = new_output((x2d.shape[0], weight.shape[0]), x2d.dtype, x2d.device)
    if x2d.shape[0]:
        unused = out.new_empty(0)  # dout and D exist only in GRAD mode; never aliases of out
        with _on_device(x2d.device):
            _products(kernels.FORWARD, x2d, weight, packed, activation, unused, out, unused, variant)
    return out


def backward(dout, x2d, weight, packed, activation, dmask_dtype):
    """``(dx, dW, dM)`` of SPEC §3; ``dM (n_masks, d_ff, d_model)`` in ``dmask_dtype``, or
    ``None`` when ``dmask_dtype`` is ``None``. D and S are scratch in the input dtype."""
    kernels, _ = _numba()
    dtype, device = x2d.dtype, x2d.device
    (tokens, d_model), d_ff, n_masks = x2d.shape, weight.shape[0], packed.shape[0]
    acc64 = dtype == torch.float64
    dg = torch.empty((n_masks, tokens, d_ff), dtype=dtype, device=device)
    s = torch.empty((tokens, d_ff), dtype=dtype, device=device)
    dx = new_output((tokens, d_model), dtype, device)
    dw = new_output((d_ff, d_model), dtype, device)
    dm = None if dmask_dtype is None else new_output((n_masks, d_ff, d_model), dmask_dtype, device)
    with _on_device(device):
        launch = _launcher(device)
        if tokens:
            _products(kernels.GRAD, x2d, weight, packed, activation, dout, s, dg)
            blocks = -(-tokens * d_model // ELEM_BLOCK)
            args = [_view(t) for t in (weight, packed, dg, s, dx)]
            launch(kernels.dx_kernel(n_masks, acc64), blocks, ELEM_BLOCK, *args, tokens, d_ff, d_model)
        blocks = -(-d_ff * d_model // ELEM_BLOCK)
        unused = dw.new_empty(0)  # no dM for frozen masks; never an alias of dw (the simulator
        # copies each argument back after the launch)
        args = [_view(t) for t in (x2d, weight, packed, dg, s, dw, unused if dm is None else dm)]
        kernel = kernels.dw_kernel(n_masks, acc64, dm is not None)
        launch(kernel, blocks, ELEM_BLOCK, *args, tokens, d_ff, d_model)
    return dx, dw, dm


BACKEND = Backend(
    name="numba",
    reasons=reasons,
    forward=forward,
    backward=backward,
    description="Numba CUDA kernels: decode and tiled forward, three-kernel backward (CUDA cores)",
)
