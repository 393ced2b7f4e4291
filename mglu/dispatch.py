"""Backend choice (SPEC §5): ``backend=`` argument, else ``MGLU_BACKEND``, else ``auto``.

A named backend that cannot run the call raises :class:`BackendUnavailableError` with its
reasons; it never falls back. ``auto`` walks ``auto_priority(problem)`` and takes the first backend
whose capability check passes. Each choice is logged at DEBUG on the ``mglu`` logger, and
:func:`mglu.explain` returns the same :class:`Selection` without running anything.
"""

import logging
import os
from dataclasses import dataclass, field

from .backends import AUTO, BACKEND_NAMES, REGISTRY, Backend, Problem, auto_priority
from .errors import BackendUnavailableError, MGLUTypeError, MGLUValueError

ENV_VAR = "MGLU_BACKEND"
log = logging.getLogger("mglu")


def requested_backend(backend: str | None = None) -> str:
    """The name asked for: ``backend`` if given, else ``$MGLU_BACKEND`` (read now), else auto."""
    source = "backend"
    if backend is None:
        backend, source = os.environ.get(ENV_VAR, AUTO), ENV_VAR
    if not isinstance(backend, str):
        raise MGLUTypeError(f"{source}: expected a backend name (str), got {type(backend).__name__}")
    valid = (AUTO,) + BACKEND_NAMES
    if backend not in valid:
        raise MGLUValueError(f"{source}: unknown backend {backend!r}; valid names: {', '.join(valid)}")
    return backend


@dataclass
class Selection:
    """Which backend a call gets (``chosen``, or ``None``) and why each other one was refused."""

    requested: str
    chosen: str | None
    refused: dict[str, list[str]] = field(default_factory=dict)
    candidates: tuple[str, ...] = ()

    def __str__(self) -> str:
        head = f"requested {self.requested!r}: " + (
            f"runs on {self.chosen!r}" if self.chosen else "no backend can run this call"
        )
        lines = [head]
        for name in BACKEND_NAMES:
            if name == self.chosen:
                verdict = "chosen"
            elif name in self.refused:
                verdict = "refused: " + "; ".join(self.refused[name])
            elif name in self.candidates:
                verdict = "can run, lower priority"
            else:
                verdict = "can run, not considered (not in the priority list)"
            lines.append(f"  {name:7s} {verdict}")
        return "\n".join(lines)


def explain_problem(requested: str, problem: Problem) -> Selection:
    """The :class:`Selection` for ``problem`` without raising or running anything."""
    refused = {name: r for name, b in REGISTRY.items() if (r := b.reasons(problem))}
    candidates = auto_priority(problem) if requested == AUTO else (requested,)
    chosen = next((name for name in candidates if name not in refused), None)
    return Selection(requested, chosen, refused, candidates)


def select(requested: str, problem: Problem) -> Backend:
    """The backend to run ``problem`` on; raises :class:`BackendUnavailableError` if none can.

    Asks the candidates in order and stops at the first that accepts; the full
    :class:`Selection` (every backend's reasons) is built only for the DEBUG log line.
    """
    candidates = auto_priority(problem) if requested == AUTO else (requested,)
    refused = {}
    for name in candidates:
        reasons = REGISTRY[name].reasons(problem)
        if not reasons:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("mglu: %s", str(explain_problem(requested, problem)).replace("\n", " |"))
            return REGISTRY[name]
        refused[name] = reasons
    if requested != AUTO:
        raise BackendUnavailableError(requested, refused[requested])
    raise BackendUnavailableError(requested, [f"{n}: {'; '.join(r)}" for n, r in refused.items()])
