"""Host cost of the cuda backend's launch path, piece by piece (a GPU machine).

Usage: python scripts/cuda_host_probe.py [--calls 3000]

At 1 token, bf16, n_masks 4, d_model 4096 and a small d_ff (256 rows: the kernel takes a
few microseconds, so the host is the bottleneck and wall time / calls is host time), the
host wall time per call of: the backend's forward; its launch plan; its argument tuple;
``launcher.launch``; CuPy's ``with Device, Stream.from_external`` alone; the CuPy call
alone inside those blocks; the whole of that CuPy path (the launcher before the third H200
session); and the bare ``cupy.cuda.driver.launchKernel`` with the arguments packed by
``struct`` (what ``launcher.launch`` now does, without its checks and caches).
"""

import argparse
import struct
import sys
import time

import numpy as np
import torch

import mglu
from mglu.backends import cuda_backend
from mglu.backends.cuda_backend import launcher


def per_call(fn, calls):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - start) / calls * 1e6
    torch.cuda.synchronize()
    return host


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3000)
    a = ap.parse_args(argv)
    import cupy

    d_model, d_ff, n_masks = 4096, 256, 4
    x = torch.randn(1, d_model, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(d_ff, d_model, device="cuda", dtype=torch.bfloat16) / d_model**0.5
    packed = mglu.pack_masks(torch.randn(n_masks, d_ff, d_model, device="cuda") > 0)
    out = torch.empty(1, d_ff, device="cuda", dtype=torch.bfloat16)
    dev = x.device
    ref = cuda_backend.forward(x, w, packed, "silu")
    plan = launcher.rowdot_plan(x.dtype, n_masks, launcher.MODE_FWD, 1, d_ff, d_model)
    p = launcher.pointer

    def args():
        return (p(x), p(w), p(packed), p(None), p(out), p(None), np.int32(1), np.int32(d_model), np.int32(d_ff),
                np.int32(launcher.activation_id("silu")), np.int32(2), *[np.int32(v) for v in plan.tail])

    cap = launcher._capability(dev.index)
    fn = launcher._function(plan.name, cap)
    fixed = args()
    stream = torch.cuda.current_stream(dev)

    def with_blocks():
        with cupy.cuda.Device(dev.index), cupy.cuda.Stream.from_external(torch.cuda.current_stream(dev)):
            pass

    ext = cupy.cuda.Stream.from_external(stream)
    fmt = "QQQQQQiiiiii"  # the decode kernel's 6 pointers and 6 ints
    buf, params_ptr, _ = launcher._param_block(fmt)

    handle = launcher._kernel(plan.name, dev.index)

    def driver_launch():
        struct.pack_into(fmt, buf, 0, x.data_ptr(), w.data_ptr(), packed.data_ptr(), 0, out.data_ptr(), 0, 1,
                         d_model, d_ff, launcher.activation_id("silu"), 2, *plan.tail)
        cupy.cuda.driver.launchKernel(handle, *plan.grid, *plan.block, 0, torch._C._cuda_getCurrentRawStream(dev.index),
                                      params_ptr, 0)

    def cupy_launch():
        with cupy.cuda.Device(dev.index), cupy.cuda.Stream.from_external(torch.cuda.current_stream(dev)):
            fn(plan.grid, plan.block, fixed, shared_mem=0)

    rows = {
        "backend forward (plan, args, launch, torch.empty)": lambda: cuda_backend.forward(x, w, packed, "silu"),
        "rowdot_plan": lambda: launcher.rowdot_plan(x.dtype, n_masks, launcher.MODE_FWD, 1, d_ff, d_model),
        "argument tuple (np.uint64 / np.int32)": args,
        "launcher.launch (prebuilt args)": lambda: launcher.launch(plan, fixed, dev, str),
        "CuPy path: with-blocks and RawKernel call (prebuilt args)": cupy_launch,
        "with Device, Stream.from_external (empty)": with_blocks,
        "torch.cuda.current_stream": lambda: torch.cuda.current_stream(dev),
        "torch.empty output": lambda: torch.empty(1, d_ff, device=dev, dtype=torch.bfloat16),
    }
    with cupy.cuda.Device(dev.index), ext:
        rows["CuPy Function call inside the blocks"] = lambda: fn(plan.grid, plan.block, fixed)
        results = {k: per_call(v, a.calls) for k, v in rows.items()}
    results["driver.launchKernel, struct-packed args"] = per_call(driver_launch, a.calls)
    for k, v in results.items():
        print(f"  {k}: {v:.2f} us per call")
    out.zero_()
    driver_launch()
    torch.cuda.synchronize()
    print(f"  driver.launchKernel output equals forward's: {torch.equal(out, ref)}")
    out.zero_()
    cupy_launch()
    torch.cuda.synchronize()
    print(f"  CuPy path output equals forward's: {torch.equal(out, ref)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
