"""What the benchmark measures (SPEC §7): shapes, presets, the paper's H100 latencies, and
the bytes / FLOP / memory formulas every row is judged by.

With ``T`` tokens, ``e`` bytes per element, ``n`` masks, ``W (d_ff, d_model)``::

    bytes  MGLU   fwd     d_ff*d_model*(e + n/8)      + T*(d_model + d_ff)*e     (SPEC §7)
           MGLU   bwd     d_ff*d_model*(2e + n/8 + n*e) + T*(2*d_model + d_ff)*e
           MGLU   fwdbwd  d_ff*d_model*(2e + 2*n*e)   + T*(2*d_model + 2*d_ff)*e
           SwiGLU fwd     2*d_ff*d_model*e            + T*(d_model + d_ff)*e     (SPEC §7)
           SwiGLU bwd     4*d_ff*d_model*e            + T*(2*d_model + d_ff)*e
           SwiGLU fwdbwd  4*d_ff*d_model*e            + T*(2*d_model + 2*d_ff)*e
    FLOPs  MGLU   2*T*d_ff*d_model*(n + 1) * {fwd: 1, bwd: 2, fwdbwd: 3}         (SPEC §7, §3)
           SwiGLU 4*T*d_ff*d_model         * {fwd: 1, bwd: 2, fwdbwd: 3}

Bytes are the compulsory traffic: every distinct input read once and every output written
once. For the forward that is exactly SPEC §7's floor. ``bwd`` reads ``x, W, packed
masks, dout`` and writes ``dx, dW, dS`` (the logits' gradient, ``n*e`` per element);
``fwdbwd`` reads the logits themselves (it packs them) and also writes ``out``. FLOPs
count the useful products only: SPEC §3's backward is ``n + 1`` products for ``dx`` and
``n + 1`` for ``dW``, twice the forward; recomputation a backend chooses is not credited.
"""

from dataclasses import dataclass

import torch

from ..dtypes import DTYPE_NAMES
from ..masks import packed_width

MODES = ("fwd", "bwd", "fwdbwd")
#: products of the backward relative to the forward: SPEC §3 (dx and dW each cost n + 1)
MODE_PRODUCT_FACTOR = {"fwd": 1, "bwd": 2, "fwdbwd": 3}

#: SPEC §7: decode is 1..64 tokens; larger batches are prefill / training and are judged
#: against the matmul rate instead of the copy bandwidth
DECODE_MAX_TOKENS = 64

DTYPES = DTYPE_NAMES
DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "fp64": "float64"}

#: SPEC §7 (d_model, d_ff): the paper's two shapes, LLaMA-2-7B's and a 70B-class FFN
PAPER_SHAPES = ((2048, 8192), (4096, 14336))
SPEC_SHAPES = ((2048, 8192), (4096, 14336), (4096, 11008), (8192, 28672))
DECODE_TOKENS = (1, 4, 16, 64)
PREFILL_TOKENS = (2048, 8192)
#: SPEC §2: four masks is the paper's recommended trade-off
DEFAULT_N_MASKS = 4


@dataclass(frozen=True)
class Preset:
    """A named sweep; command-line lists override its fields one by one."""

    shapes: tuple[tuple[int, int], ...]
    tokens: tuple[int, ...]
    n_masks: tuple[int, ...]
    dtypes: tuple[str, ...]
    help: str


PRESETS = {
    "paper": Preset(PAPER_SHAPES, (1,), (1, 2, 4, 8), ("float16",),
                    "the paper's two shapes, fp16, 1 token, n_masks 1/2/4/8, its H100 latencies beside ours"),
    "decode": Preset(SPEC_SHAPES, DECODE_TOKENS, (DEFAULT_N_MASKS,), ("bfloat16",),
                     "the four SPEC shapes, tokens 1/4/16/64, n_masks 4, bf16 (default on CUDA)"),
    "prefill": Preset(SPEC_SHAPES, PREFILL_TOKENS, (DEFAULT_N_MASKS,), ("bfloat16",),
                      "the four SPEC shapes, tokens 2048/8192, n_masks 4, bf16"),
    # fp32 because CPU half-precision matmul is ~200x slower than fp32 (seen: 1024^3 bf16
    # 2.3 s vs fp32 13 ms on our 2-core CPU); the sizes keep a CPU run to seconds
    "quick": Preset(((256, 1024),), (1, 16, 256), (1, 4), ("float32",),
                    "one small shape, tokens 1/16/256, n_masks 1/4, fp32: seconds, runs on CPU (default without CUDA)"),
}

#: The paper's H100 decode latencies in ms (SPEC §7): fp16, 1 token, forward. The
#: comparison assumes the paper's unit is SwiMGLU (activation silu).
PAPER_CONDITIONS = {"dtype": "float16", "tokens": 1, "mode": "fwd", "activation": "silu"}
PAPER_H100_MS = {
    # (d_model, d_ff): {n_masks: {"flash": FlashMGLU, "glu": torch GLU, "naive": naive torch MGLU}}
    (2048, 8192): {
        1: {"flash": 0.0395, "glu": 0.0485, "naive": 0.1296},
        2: {"flash": 0.0409, "glu": 0.0485, "naive": 0.2213},
        4: {"flash": 0.0428, "glu": 0.0485, "naive": 0.4117},
        8: {"flash": 0.0483, "glu": 0.0485, "naive": 0.7910},
    },
    (4096, 14336): {
        1: {"flash": 0.1044, "glu": 0.1215, "naive": 0.3896},
        2: {"flash": 0.1067, "glu": 0.1215, "naive": 0.7080},
        4: {"flash": 0.1110, "glu": 0.1215, "naive": 1.3454},
        8: {"flash": 0.1215, "glu": 0.1215, "naive": 2.6354},
    },
}


@dataclass(frozen=True)
class Case:
    """One benched problem: ``x (tokens, d_model)``, ``W (d_ff, d_model)``, ``n_masks`` masks."""

    d_model: int
    d_ff: int
    tokens: int
    n_masks: int
    dtype: str
    activation: str
    mode: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def elem_bytes(self) -> int:
        return torch.empty((), dtype=self.torch_dtype).element_size()

    @property
    def regime(self) -> str:
        return "decode" if self.tokens <= DECODE_MAX_TOKENS else "prefill"

    @property
    def glu_key(self) -> tuple:
        """The GLU baselines do not depend on ``n_masks``: one measurement per this key."""
        return (self.d_model, self.d_ff, self.tokens, self.dtype, self.activation, self.mode)

    def paper_ms(self, family: str, kind: str) -> float | None:
        """The paper's latency for this row (``flash`` for backends), or ``None``."""
        if any(getattr(self, k) != v for k, v in PAPER_CONDITIONS.items()):
            return None
        entry = PAPER_H100_MS.get((self.d_model, self.d_ff), {}).get(self.n_masks)
        if entry is None:
            return None
        return entry["glu" if family == "glu" else "flash" if kind == "backend" else "naive"]


def bytes_moved(family: str, mode: str, tokens: int, d_model: int, d_ff: int, n_masks: int, elem: int) -> float:
    """Compulsory bytes of one call (module docstring); ``family`` is ``mglu`` or ``glu``."""
    wn = d_ff * d_model
    if family == "glu":
        weights = {"fwd": 2 * wn * elem, "bwd": 4 * wn * elem, "fwdbwd": 4 * wn * elem}[mode]
    else:
        weights = {
            "fwd": wn * (elem + n_masks / 8),
            "bwd": wn * (2 * elem + n_masks / 8 + n_masks * elem),
            "fwdbwd": wn * (2 * elem + 2 * n_masks * elem),
        }[mode]
    acts = {"fwd": d_model + d_ff, "bwd": 2 * d_model + d_ff, "fwdbwd": 2 * d_model + 2 * d_ff}[mode]
    return weights + tokens * acts * elem


def flops(family: str, mode: str, tokens: int, d_model: int, d_ff: int, n_masks: int) -> int:
    """Useful FLOPs of one call (module docstring)."""
    products = 2 if family == "glu" else n_masks + 1
    return 2 * tokens * d_ff * d_model * products * MODE_PRODUCT_FACTOR[mode]


def param_bytes(d_model: int, d_ff: int, n_masks: int, elem: int) -> dict[str, int]:
    """Per-layer bytes of the up projection: MGLU inference (W + packed masks), MGLU training
    (W + logits) and SwiGLU (two weights)."""
    wn = d_ff * d_model
    return {
        "mglu_packed": wn * elem + n_masks * d_ff * packed_width(d_model),
        "mglu_training": wn * elem * (1 + n_masks),
        "swiglu": 2 * wn * elem,
    }


def parse_dtype(name: str) -> str:
    """Canonical dtype name from ``bf16``, ``bfloat16``, ... (``ValueError`` if unknown)."""
    key = DTYPE_ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in DTYPES:
        raise ValueError(f"--dtype: unknown {name!r}; valid: {', '.join([*DTYPES, *DTYPE_ALIASES])}")
    return key


def parse_shape(text: str) -> tuple[int, int]:
    """``'4096x11008'`` -> ``(d_model, d_ff)``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--shapes: expected D_MODELxD_FF such as 4096x11008, got {text!r}")
    return int(parts[0]), int(parts[1])


def expand(shapes, tokens, n_masks, dtypes, activation: str, mode: str) -> list[Case]:
    """Every combination, in the order shape, dtype, tokens, n_masks."""
    return [
        Case(dm, dff, t, n, dt, activation, mode)
        for dm, dff in shapes
        for dt in dtypes
        for t in tokens
        for n in n_masks
    ]

