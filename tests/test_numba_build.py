"""The numba backend's kernels build to sm_90 PTX: the GPU path's type check without a GPU.

The simulator (which the conformance tests use here) runs kernels as Python and checks no
types, so this builds, in subprocesses without NUMBA_ENABLE_CUDASIM, every kind of kernel
the launcher can request with ``cuda.compile_ptx(..., cc=(9, 0))``: every dtype with
n_masks 1, 4 and 16, every n_masks in bf16 for the wide decode kernel (whose variant changes
with n_masks; the other kernels' per-mask arrays only grow with n_masks, so 16 is their
worst case), every activation in fp32 and fp64 accumulators,
dM in another dtype than x; in fp16/bf16 also the wide-load decode kernel of the default
variant for that n_masks (constants.default_variant). It also requires that no specialisation spills its
per-mask accumulators to local memory, that no fp32 kernel does fp64 arithmetic and that
the wide decode kernel reads W with 16-byte loads (``ld.global.nc.v4.u32``) and its mask
words through the read-only path (``ld.global.nc.u8/16/32/64``).
"""

import importlib.util
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed"
)

SCRIPT = r'''
import sys
import numba.cuda.dispatcher as dispatcher

# compile_ptx builds the kernel for the cc given, but the device functions it calls are
# compiled for the current device; there is none here, so report the one we target.
class _SM90:
    compute_capability = (9, 0)

dispatcher.get_current_device = lambda: _SM90()

from numba import cuda
from mglu.backends.numba_backend import kernels as K
from mglu.backends.numba_backend.constants import DECODE_VARIANTS, default_variant
from mglu.backends.numba_backend.numerics import ACT_CODE

MASK_WORD = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}

ARRAY = {"float64": "float64", "float32": "float32", "float16": "float16", "bfloat16": "int16"}


def specs(dtype, n_masks, act, dm_dtype, only_wide):
    a, m, acc64 = ARRAY[dtype] + "[::1]", ARRAY[dm_dtype] + "[::1]", dtype == "float64"
    code = ACT_CODE[act]
    products = f"void({a},{a},uint8[::1],{a},{a},{a},int64,int64,int64"
    for mode in (K.FORWARD, K.GRAD):
        if not only_wide:
            yield "decode", K.decode_kernel(n_masks, code, acc64, mode), products + ",int64)"
        if dtype in ("float16", "bfloat16"):
            shape = DECODE_VARIANTS[default_variant(n_masks)]
            span = shape.span
            kernel = K.decode_wide_kernel(n_masks, code, mode, dtype == "bfloat16", *shape)
            words = "uint8" if shape.interleave else MASK_WORD[span]  # interleaved: one byte per chunk
            yield "decode_wide", kernel, f"void(int32[::1],int32[::1],{words}[::1],{a},{a},{a},int64,int64,int64,int64)"
        if not only_wide:
            yield "tiled", K.tiled_kernel(n_masks, code, acc64, mode), products + ")"
    if only_wide:
        return
    yield "dx", K.dx_kernel(n_masks, acc64), f"void({a},uint8[::1],{a},{a},{a},int64,int64,int64)"
    for with_dm in (False, True):
        dm = m if with_dm else a
        yield "dw", K.dw_kernel(n_masks, acc64, with_dm), f"void({a},{a},uint8[::1],{a},{a},{a},{dm},int64,int64,int64)"


failures, count = [], 0
for item in sys.argv[1:]:
    dtype, n_masks, act, dm_dtype, kinds = item.split(":")
    for name, kernel, sig in specs(dtype, int(n_masks), act, dm_dtype, kinds == "wide"):
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        count += 1
        if "__local_depot" in ptx:
            failures.append(f"{item} {name}: uses local memory")
        if name == "decode_wide" and "ld.global.nc.v4.u32" not in ptx:
            failures.append(f"{item} {name}: no 16-byte load of W")
        if name == "decode_wide" and not any(f"ld.global.nc.u{b} " in ptx for b in (8, 16, 32, 64)):
            failures.append(f"{item} {name}: mask words not read through the read-only path")
        if dtype != "float64" and dm_dtype != "float64" and ".f64" in ptx:
            failures.append(f"{item} {name}: fp64 arithmetic in an fp32 kernel")
print(f"built {count} kernels")
if failures:
    sys.exit("\n".join(failures))
'''

DTYPES = ("float64", "float32", "float16", "bfloat16")
ACTS = ("silu", "sigmoid", "gelu", "gelu_tanh", "relu", "identity")


def _items():
    """``dtype:n_masks:activation:dM dtype:kinds`` (kinds: all, or the wide decode kernel only)."""
    items = {f"{d}:{n}:silu:{d}:all" for d in DTYPES for n in (1, 4, 16)}
    items |= {f"bfloat16:{n}:silu:bfloat16:wide" for n in range(1, 17) if n not in (1, 4, 16)}
    items |= {f"{d}:2:{a}:{d}:all" for d in ("float32", "float64") for a in ACTS}
    items |= {"bfloat16:3:silu:float32:all", "float16:3:gelu:float64:all"}
    return sorted(items)


def test_every_specialisation_builds_to_sm90_ptx():
    items = _items()
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    halves = (items[0::2], items[1::2])  # two processes: CI has two cores
    procs = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, *half], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for half in halves
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (out + err)[-4000:]
        assert "built" in out
