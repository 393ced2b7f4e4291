"""The float64 reference against independent derivations: finite differences and loops."""

import numpy as np
import pytest

from mglu import reference
from mglu.activations import ACTIVATIONS


def _problem(seed, tokens=3, d_model=6, d_ff=5, n_masks=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, d_model))
    w = rng.standard_normal((d_ff, d_model)) / np.sqrt(d_model)
    masks = rng.random((n_masks, d_ff, d_model)) < 0.5
    masks[..., 0], masks[..., 1] = True, False  # no gate sits at exactly 0 (relu's kink)
    dout = rng.standard_normal((tokens, d_ff))
    return x, w, masks, dout


def _soft_forward(x, w, m, act):
    """The op with real-valued masks m (no thresholding): its gradient in m at m in {0, 1}
    is the straight-through dM."""
    a_fn = reference.ACT[act]
    out = 0.0
    for mi in m:
        gate = x @ (mi * w).T
        out = out + a_fn(gate)[0] * (x @ ((1.0 - mi) * w).T)
    return out


def _central_diff(f, arr, h=1e-6):
    grad = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        old = arr[idx]
        arr[idx] = old + h
        up = f()
        arr[idx] = old - h
        down = f()
        arr[idx] = old
        grad[idx] = (up - down) / (2 * h)
    return grad


def test_forward_matches_explicit_loop():
    x, w, masks, _ = _problem(0)
    out = reference.forward(x, w, masks, "silu")
    want = np.zeros((x.shape[0], w.shape[0]))
    for t in range(x.shape[0]):
        for n in range(w.shape[0]):
            for mi in masks:
                g = sum(x[t, k] * w[n, k] for k in range(x.shape[1]) if mi[n, k])
                v = sum(x[t, k] * w[n, k] for k in range(x.shape[1]) if not mi[n, k])
                want[t, n] += g / (1 + np.exp(-g)) * v
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_backward_against_finite_differences(act):
    x, w, masks, dout = _problem(1)
    dx, dw, dm = reference.backward(x, w, masks, dout, act)
    loss = lambda: float((reference.forward(x, w, masks, act) * dout).sum())  # noqa: E731
    np.testing.assert_allclose(dx, _central_diff(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, _central_diff(loss, w), rtol=1e-6, atol=1e-7)
    m = masks.astype(np.float64)
    soft = lambda: float((_soft_forward(x, w, m, act) * dout).sum())  # noqa: E731
    np.testing.assert_allclose(dm, _central_diff(soft, m), rtol=1e-6, atol=1e-7)


def test_batch_shape_and_zero_tokens():
    x, w, masks, _ = _problem(2, tokens=6)
    out3 = reference.forward(x.reshape(2, 3, -1), w, masks)
    np.testing.assert_array_equal(out3.reshape(6, -1), reference.forward(x, w, masks))
    empty = reference.forward(np.zeros((0, x.shape[1])), w, masks)
    assert empty.shape == (0, w.shape[0])


def test_unpack_bit_order():
    # byte 0b00000101 = columns 0 and 2 set; byte 2 of row: bit 0 = column 16
    packed = np.array([[[0b101, 0, 1]]], dtype=np.uint8)
    got = reference.unpack(packed, 17)
    assert got.shape == (1, 1, 17)
    assert np.flatnonzero(got[0, 0]).tolist() == [0, 2, 16]


def test_magnitudes_bound_values():
    x, w, masks, dout = _problem(3)
    mags = reference.magnitudes(x, w, masks, dout, "silu")
    vals = dict(zip(("dx", "dW", "dS"), reference.backward(x, w, masks, dout, "silu")))
    vals["out"] = reference.forward(x, w, masks, "silu")
    for name, v in vals.items():
        assert np.all(np.abs(v) <= mags[name] + 1e-12), name
