"""Typed exceptions of the public surface (SPEC §6).

Every invalid call raises one of these; each message names the argument, what was
expected and what was given.
"""


class MGLUError(Exception):
    """Base class of every error mglu raises on purpose."""


class MGLUValueError(MGLUError, ValueError):
    """A value or shape is out of range (wrong rank, mismatched d_model, n_masks > 16, ...)."""


class MGLUTypeError(MGLUError, TypeError):
    """An argument has the wrong type or dtype."""


class BackendUnavailableError(MGLUError, RuntimeError):
    """A named backend cannot run this call; ``reasons`` lists why, in plain text."""

    def __init__(self, backend: str, reasons: list[str]):
        self.backend = backend
        self.reasons = list(reasons)
        super().__init__(
            f"backend={backend!r} cannot run this call: " + "; ".join(self.reasons)
        )
