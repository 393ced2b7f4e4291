"""Registry of backends and the order ``auto`` tries them in.

Each module registers one :class:`~mglu.backends.base.Backend`. ``AUTO_PRIORITY`` is the
order ``MGLU_BACKEND=auto`` walks; a backend enters it at the rank the benchmark
(``python -m mglu bench``) measured for it. Only the torch backend runs today, so it is
the whole list.
"""

from . import cuda_backend, numba_backend, torch_backend, triton_backend
from .base import Backend, Problem, new_output, not_implemented, poisoned_outputs

REGISTRY: dict[str, Backend] = {
    "torch": torch_backend.BACKEND,
    "triton": triton_backend.BACKEND,
    "cuda": cuda_backend.BACKEND,
    "numba": numba_backend.BACKEND,
}

BACKEND_NAMES: tuple[str, ...] = tuple(REGISTRY)
AUTO = "auto"
AUTO_PRIORITY: tuple[str, ...] = ("torch",)

__all__ = [
    "AUTO",
    "AUTO_PRIORITY",
    "BACKEND_NAMES",
    "REGISTRY",
    "Backend",
    "Problem",
    "new_output",
    "not_implemented",
    "poisoned_outputs",
]
