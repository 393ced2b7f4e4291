"""SPEC §6: every invalid call raises a typed error that names the argument."""

import pytest
import torch

import mglu
from mglu import MGLUError, MGLUTypeError, MGLUValueError

X = torch.randn(3, 20)
W = torch.randn(12, 20)
P = mglu.pack_masks(torch.randn(2, 12, 20))
S = torch.randn(2, 12, 20)

CASES = {
    "x not a tensor": (dict(x=[[1.0]]), MGLUTypeError, "x: expected a torch.Tensor"),
    "x 0-d": (dict(x=torch.tensor(1.0)), MGLUValueError, "x: expected shape"),
    "weight not a tensor": (dict(weight=[[1.0]]), MGLUTypeError, "weight: expected a torch.Tensor"),
    "masks not a tensor": (dict(masks=[[1]]), MGLUTypeError, "masks: expected a torch.Tensor"),
    "weight rank": (dict(weight=torch.randn(12, 20, 1)), MGLUValueError, "weight: expected shape"),
    "weight empty": (dict(weight=torch.randn(0, 20)), MGLUValueError, r"weight: expected shape .* both > 0, got \(0, 20\)"),
    "d_model mismatch": (dict(x=torch.randn(3, 21)), MGLUValueError, "x: last dim must equal d_model"),
    "d_ff mismatch packed": (dict(weight=torch.randn(13, 20)), MGLUValueError, "masks: packed masks must have shape"),
    "d_ff mismatch logits": (dict(weight=torch.randn(13, 20), masks=S), MGLUValueError, "masks: logits must have shape"),
    "packed wrong width": (dict(masks=torch.zeros(2, 12, 2, dtype=torch.uint8)), MGLUValueError, r"masks: .*\(n_masks, 12, 3\)"),
    "packed wrong dtype": (dict(masks=torch.zeros(2, 12, 3, dtype=torch.int8)), MGLUTypeError, "masks: expected packed torch.uint8"),
    "bool masks": (dict(masks=torch.zeros(2, 12, 20, dtype=torch.bool)), MGLUTypeError, "masks: expected packed"),
    "n_masks 0": (dict(masks=torch.zeros(0, 12, 3, dtype=torch.uint8)), MGLUValueError, "masks: n_masks"),
    "n_masks 17": (dict(masks=torch.randn(17, 12, 20)), MGLUValueError, r"masks: n_masks .* 1\.\.16, got 17"),
    "devices differ": (dict(weight=torch.randn(12, 20, device="meta")), MGLUValueError, "weight: expected device cpu"),
    "masks device": (dict(masks=torch.randn(2, 12, 20, device="meta")), MGLUValueError, "masks: expected device cpu"),
    "int dtype": (dict(x=torch.ones(3, 20, dtype=torch.int64)), MGLUTypeError, "x: dtype must be one of"),
    "mixed dtype": (dict(weight=W.double()), MGLUTypeError, "weight: dtype must match x"),
    "unknown activation": (dict(activation="swish"), MGLUValueError, "activation: unknown 'swish'"),
    "activation type": (dict(activation=None), MGLUTypeError, "activation: expected an activation name"),
    "fp8 logits": (dict(masks=torch.randn(2, 12, 20).to(torch.float8_e4m3fn)), MGLUTypeError, "masks: expected packed torch.uint8 .* logits of dtype"),
    "unknown backend": (dict(backend="cudnn"), MGLUValueError, "backend: unknown backend 'cudnn'"),
    "backend type": (dict(backend=3), MGLUTypeError, "backend: expected a backend name"),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_raises_typed_error_naming_the_argument(name):
    change, exc, message = CASES[name]
    args = dict(x=X, weight=W, masks=P, activation="silu", backend=None) | change
    with pytest.raises(exc, match=message) as info:
        mglu.mglu(args.pop("x"), args.pop("weight"), args.pop("masks"), **args)
    assert isinstance(info.value, MGLUError)


def test_errors_are_standard_exception_types():
    assert issubclass(MGLUValueError, ValueError) and issubclass(MGLUTypeError, TypeError)
    assert issubclass(mglu.BackendUnavailableError, RuntimeError)


@pytest.mark.parametrize(
    "d_model, exc", [("32", MGLUTypeError), (32.0, MGLUTypeError), (True, MGLUTypeError), (-3, MGLUValueError), (0, MGLUValueError)]
)
def test_unpack_rejects_bad_d_model(d_model, exc):
    with pytest.raises(exc, match="d_model: expected a positive int"):
        mglu.unpack_masks(P, d_model)


NN_CASES = {
    "d_model": (dict(d_model=-1), MGLUValueError, "d_model: expected a positive int, got -1"),
    "d_ff": (dict(d_ff="8"), MGLUTypeError, "d_ff: expected a positive int, got str"),
    "n_masks float": (dict(n_masks=2.0), MGLUTypeError, "n_masks must be an int, got float"),
    "n_masks range": (dict(n_masks=0), MGLUValueError, r"n_masks must be in 1\.\.16, got 0"),
    "activation": (dict(activation="tanh"), MGLUValueError, "activation: unknown 'tanh'"),
    "backend": (dict(backend="nope"), MGLUValueError, "backend: unknown backend 'nope'"),
    "dtype": (dict(dtype=torch.int32), MGLUTypeError, "dtype: must be one of float64, float32, float16, bfloat16"),
}


@pytest.mark.parametrize("name", NN_CASES)
def test_module_constructor_rejects(name):
    change, exc, message = NN_CASES[name]
    args = dict(d_model=8, d_ff=8) | change
    with pytest.raises(exc, match=message):
        mglu.nn.MGLU(**args)
