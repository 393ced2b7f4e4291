"""Host path of the public op on a GPU: eager loop vs device time, CUDA-graph replay.

Usage: python scripts/host_loop.py [--backends triton,cuda,numba] [--shape 4096x14336]
       [--n-masks 4] [--calls 200]

For each backend, ``mglu.mglu(x, W, packed, backend=B)`` at 1 token, bf16:

- device time: one call captured in a ``torch.cuda.CUDAGraph``, the replays timed with
  CUDA events (median of ``--calls``); replay has no host work per kernel;
- eager: ``--calls`` public calls back to back (validation, dispatch, launch), CUDA events
  around the whole loop, per call; the ratio eager / device is the host overhead left
  visible (1.0: the GPU never waits for the host);
- eager, GPU pre-loaded: the same loop issued behind a 50 ms ``torch.cuda._sleep``, so
  the host has queued every call before the GPU starts them: the GPU's own time per eager
  call (eager loop above it: the host is the limit; equal to it: the GPU is);
- the graph's output against the eager output, bitwise;
- ``torch.compile(mode="reduce-overhead")`` of a function calling the op, bitwise;
- ``--profile``: the host time per call by function (cProfile over the eager loop, host
  clock, GPU left to run), to see where the host cost goes, after the wall host time per
  call of the public op, of the backend's forward alone and, for triton, of that forward
  with every launch through Triton's own ``JITFunction.run`` (an empty launch hook set).
"""

import argparse
import cProfile
import pstats
import statistics
import sys
import time

import torch

import mglu
from mglu.backends import REGISTRY


#: torch.cuda._sleep spins this many GPU cycles: ~50 ms at the H200's ~1.98 GHz, longer than
#: the host takes to issue 200 calls at the ~100 us per call of the slowest backend (numba
#: excepted: its calls are queued partly while the GPU already runs)
SLEEP_CYCLES = 100_000_000


def _events(n):
    return [torch.cuda.Event(enable_timing=True) for _ in range(n)]


def _eager_loop(x, w, packed, backend: str, calls: int) -> float:
    """Microseconds per call of ``calls`` public calls, CUDA events around the loop."""
    start, end = _events(2)
    start.record()
    for _ in range(calls):
        mglu.mglu(x, w, packed, backend=backend)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / calls


def run(backend: str, d_model: int, d_ff: int, n_masks: int, calls: int) -> dict:
    x = torch.randn(1, d_model, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(d_ff, d_model, device="cuda", dtype=torch.bfloat16) / d_model**0.5
    packed = mglu.pack_masks(torch.randn(n_masks, d_ff, d_model, device="cuda") > 0)
    eager = mglu.mglu(x, w, packed, backend=backend)  # compiles
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = mglu.mglu(x, w, packed, backend=backend)
    graph.replay()
    torch.cuda.synchronize()
    same_graph = torch.equal(captured, eager)
    starts, ends = _events(calls), _events(calls)
    for s, e in zip(starts, ends):
        s.record()
        graph.replay()
        e.record()
    torch.cuda.synchronize()
    device_us = statistics.median(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends))
    eager_us = _eager_loop(x, w, packed, backend, calls)
    torch.cuda._sleep(SLEEP_CYCLES)
    preloaded_us = _eager_loop(x, w, packed, backend, calls)
    compiled = torch.compile(lambda a: mglu.mglu(a, w, packed, backend=backend), mode="reduce-overhead")
    for _ in range(3):
        out_c = compiled(x)
    torch.cuda.synchronize()
    return {"backend": backend, "device_us": device_us, "eager_us": eager_us, "ratio": eager_us / device_us,
            "preloaded_us": preloaded_us,
            "graph_bitwise": same_graph, "compiled_bitwise": torch.equal(out_c, eager)}


def profile(backend: str, d_model: int, d_ff: int, n_masks: int, calls: int) -> None:
    """Host microseconds per eager call (wall, then cProfile's top functions by own time)."""
    x = torch.randn(1, d_model, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(d_ff, d_model, device="cuda", dtype=torch.bfloat16) / d_model**0.5
    packed = mglu.pack_masks(torch.randn(n_masks, d_ff, d_model, device="cuda") > 0)
    for _ in range(3):
        mglu.mglu(x, w, packed, backend=backend)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        mglu.mglu(x, w, packed, backend=backend)
    host_us = (time.perf_counter() - start) / calls * 1e6
    torch.cuda.synchronize()
    layers = {"backend.forward": lambda: REGISTRY[backend].forward(x, w, packed, "silu")}
    if backend == "triton":
        import triton

        def hooked():  # a launch hook sends every launch through JITFunction.run (launch.py)
            unset, triton.knobs.runtime.launch_enter_hook = triton.knobs.runtime.launch_enter_hook, lambda *a: None
            try:
                return REGISTRY[backend].forward(x, w, packed, "silu")
            finally:
                triton.knobs.runtime.launch_enter_hook = unset

        layers["backend.forward, Triton's own launch path (+ an empty hook)"] = hooked
    for name, fn in layers.items():
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        print(f"  {backend}: {name}: host {(time.perf_counter() - start) / calls * 1e6:.1f} us per call")
        torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        mglu.mglu(x, w, packed, backend=backend)
    prof.disable()
    torch.cuda.synchronize()
    print(f"  {backend}: host {host_us:.1f} us per call (wall, no profiler); cProfile, {calls} calls:")
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="triton,cuda,numba")
    ap.add_argument("--shape", default="4096x14336")
    ap.add_argument("--n-masks", dest="n_masks", type=int, default=4)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--profile", action="store_true", help="profile the host path instead")
    args = ap.parse_args(argv)
    d_model, d_ff = (int(v) for v in args.shape.split("x"))
    print(f"{torch.cuda.get_device_name()}: 1 token, {d_model}x{d_ff}, n_masks {args.n_masks}, bf16, "
          f"{args.calls} calls")
    if args.profile:
        for b in args.backends.split(","):
            profile(b, d_model, d_ff, args.n_masks, args.calls)
        return 0
    status = 0
    for b in args.backends.split(","):
        try:
            r = run(b, d_model, d_ff, args.n_masks, args.calls)
        except Exception as exc:  # report every backend, fail at the end
            print(f"  {b:7s} FAILED: {type(exc).__name__}: {exc}")
            status = 1
            continue
        ok = r["graph_bitwise"] and r["compiled_bitwise"]
        status |= not ok
        print(f"  {b:7s} graph replay {r['device_us']:7.1f} us  eager loop {r['eager_us']:7.1f} us/call  "
              f"eager/device {r['ratio']:.3f}  pre-loaded {r['preloaded_us']:7.1f} us/call  graph==eager {r['graph_bitwise']}  "
              f"reduce-overhead==eager {r['compiled_bitwise']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
