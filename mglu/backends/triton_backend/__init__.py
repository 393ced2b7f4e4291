"""Triton backend: MGLU forward and backward as Triton kernels (``kernels.py``).

Shapes: ``x2d (T, d_model)``, ``weight (d_ff, d_model)``, ``packed (n_masks, d_ff,
ceil(d_model/8))`` uint8. Forward ``out (T, d_ff) = sum_i act(gate_i) * (total - gate_i)``;
backward ``(dx, dW, dM)`` of SPEC §3 in three kernels (``DS`` pass, ``dx``, ``dW``/``dM``).

Regimes (``tiles.py`` holds every tile constant and where it came from): ``T <=
GEMV_MAX_TOKENS`` runs the CUDA-core GEMV that streams ``W`` and the bit-planes once,
unless the forward must keep its gradient factors for autograd; on Hopper, 2 to
``WGMMA_NARROW_TOKENS`` tokens, or up to ``WGMMA_MAX_TOKENS`` at up to 4 masks, in fp16/bf16
with ``d_model % 128 == 0`` (``launch.wgmma_ok``, again not for the autograd forward) the
Gluon wgmma kernel (``wgmma.py``); every
other call the tensor-core kernel, which from ``STAGED_MIN_TOKENS`` (fp16/bf16) reads the
masked weights staged in HBM. The forward keeps the gradient factors for its backward
when asked (``saves_factors``). Without a GPU the same kernels run on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1`` set before triton is imported).
Triton is imported on first use, so ``import mglu`` works without it.
"""

import functools
import importlib.util
import os

import torch

from ..base import Backend, Problem

#: compute capability of bf16 tensor cores (``tl.dot`` in every dtype we take)
MIN_CAPABILITY = (8, 0)


@functools.cache
def interpreting() -> bool:
    """Whether Triton runs its interpreter: ``TRITON_INTERPRET`` as triton read it at its
    import, so looked up once (an environment read on every launch was host time)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _installed() -> bool:
    """Looked up once: ``find_spec`` of a package not yet imported searches sys.path
    (48 us per call on our CPU machine), and ``reasons`` runs on every call of the op."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def reasons(problem: Problem) -> list[str]:
    """Plain-text reasons why this backend cannot run ``problem`` (empty: it can)."""
    if not _installed():
        return ["triton is not installed (pip install 'mglu[triton]')"]
    if problem.device.type == "cpu":
        if not interpreting():
            return ["CPU tensors run only under Triton's interpreter: set TRITON_INTERPRET=1 before importing triton"]
        return []
    if problem.device.type != "cuda":
        return [f"device type {problem.device.type!r} is not supported (cuda, or cpu under the interpreter)"]
    if interpreting():
        return ["TRITON_INTERPRET=1 is set: Triton's interpreter runs CPU tensors only"]
    cap = _capability(problem.device.index if problem.device.index is not None else torch.cuda.current_device())
    if cap < MIN_CAPABILITY:
        return [f"needs compute capability >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}, got {cap[0]}.{cap[1]}"]
    return []


def forward(x2d, weight, packed, activation, factors=None):
    """``out (T, d_ff)`` in ``x2d.dtype``; fills ``factors`` (``Backend.saves_factors``) when given."""
    from . import launch

    return launch.forward(x2d, weight, packed, activation, factors)


def backward(dout, x2d, weight, packed, activation, dmask_dtype, factors=None):
    """``(dx, dW, dM)``; ``dM`` is ``None`` when ``dmask_dtype`` is ``None``; ``factors``: the
    forward's, when it saved them."""
    from . import launch

    return launch.backward(dout, x2d, weight, packed, activation, dmask_dtype, factors)


BACKEND = Backend(
    name="triton",
    reasons=reasons,
    forward=forward,
    backward=backward,
    description="Triton: CUDA-core GEMV at decode, Gluon wgmma at 2-64 tokens on sm_90, tensor cores (tl.dot on "
                "bit-masked W) above",
    saves_factors=True,
)
