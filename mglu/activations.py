"""The gate activations, by name: the one list every part of mglu reads (SPEC §1).

``act`` is applied to ``gate_i``; ``out = sum_i act(gate_i) * value_i``. The float64
reference (NumPy) and each backend implement these names; ``tests/test_activations.py``
checks that every implementation covers exactly this list.
"""

from .errors import MGLUTypeError, MGLUValueError

#: name -> the paper's name for the resulting unit
PAPER_VARIANT = {
    "silu": "SwiMGLU",
    "sigmoid": "MGLU (original GLU)",
    "gelu": "GeMGLU (exact erf GELU)",
    "gelu_tanh": "GeMGLU (tanh approximation)",
    "relu": "ReMGLU",
    "identity": "bilinear MGLU",
}

ACTIVATIONS: tuple[str, ...] = tuple(PAPER_VARIANT)
DEFAULT_ACTIVATION = "silu"

#: sqrt(2/pi) and the cubic coefficient of the tanh GELU (Hendrycks & Gimpel, 2016)
GELU_TANH_C = 0.7978845608028654
GELU_TANH_A = 0.044715


def check_activation(name, arg: str = "activation") -> None:
    """Raise a typed error naming ``arg`` unless ``name`` is one of :data:`ACTIVATIONS`."""
    if not isinstance(name, str):
        raise MGLUTypeError(f"{arg}: expected an activation name (str), got {type(name).__name__}")
    if name not in ACTIVATIONS:
        raise MGLUValueError(f"{arg}: unknown {name!r}; valid names: {', '.join(ACTIVATIONS)}")
