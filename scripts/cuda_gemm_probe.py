"""Time each kernel of the cuda backend's staged GEMM path on its own (H100 diagnostics).

For a (d_model, d_ff, tokens, n_masks) point, bf16: ``mglu_expand`` (WM_i = M_i W) and
``mglu_gemm`` in its four modes (forward, backward kernel A = D/S, dx, dW/dM), each timed
with CUDA events (median of ``--reps`` calls after 3 warm-ups), reported as ms and TFLOP/s
counting ``2 T d_ff d_model (n_masks + 1)`` per GEMM, beside one cuBLAS product of the same
``(T, d_model) x (d_model, d_ff)`` (torch.matmul). Before timing, each point's forward and
backward outputs are compared with the torch backend run in fp32 (relative Frobenius error).
Then, with ``--steps``, the forward and dx GEMMs are rebuilt with other (K step, stages)
(mglu_gemm.cu's GBK / GSTAGES, patched into the source text here only), checked bitwise
against the built-in kernel (the same mma sequence per thread) and timed.

    python scripts/cuda_gemm_probe.py --points 4096x14336x8192x1 4096x14336x8192x4 4096x11008x2048x4
"""

import argparse
import statistics

import torch

from mglu.backends import cuda_backend, torch_backend
from mglu.backends.cuda_backend import launcher
from mglu.masks import pack_masks


def timed(fn, reps: int) -> float:
    """Median ms of ``reps`` calls of ``fn`` (CUDA events), after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def rel(y, ref) -> float:
    return ((y.double() - ref.double()).norm() / ref.double().norm()).item()


def rebuild(bk: int, stages: int) -> None:
    """Compile mglu_gemm with GBK = bk, GSTAGES = stages from now on (this process only)."""
    text = SOURCE.replace(f"GBK = {BUILT[0]}, GSTAGES = {BUILT[1]}", f"GBK = {bk}, GSTAGES = {stages}")
    assert text != SOURCE or (bk, stages) == BUILT
    launcher.source = lambda: text
    launcher.GEMM_BK, launcher.GEMM_STAGES = bk, stages
    launcher._function.cache_clear()
    launcher._kernel.cache_clear()
    launcher._smem_allowed.clear()


SOURCE, BUILT = launcher.source(), (launcher.GEMM_BK, launcher.GEMM_STAGES)


def probe(d_model: int, d_ff: int, tokens: int, n_masks: int, reps: int, steps: list[str]) -> None:
    dev, dt = torch.device("cuda"), torch.bfloat16
    x = torch.randn(tokens, d_model, device=dev).to(dt)
    w = (torch.randn(d_ff, d_model, device=dev) / d_model ** 0.5).to(dt)
    packed = pack_masks(torch.randn(n_masks, d_ff, d_model, device=dev) > 0)
    dout = torch.randn(tokens, d_ff, device=dev).to(dt)
    print(f"point {d_model}x{d_ff} T={tokens} n_masks={n_masks} bf16")

    out = cuda_backend.forward(x, w, packed, "silu")
    dx, dw, dm = cuda_backend.backward(dout, x, w, packed, "silu", dt)
    ref_out = torch_backend.forward(x.float(), w.float(), packed, "silu")
    ref = torch_backend.backward(dout.float(), x.float(), w.float(), packed, "silu", torch.float32)
    errs = [rel(out, ref_out)] + [rel(a, b) for a, b in zip((dx, dw, dm), ref)]
    print("  rel err vs torch fp32: out %.2e dx %.2e dW %.2e dM %.2e" % tuple(errs))
    del ref_out, ref

    what = lambda: "probe"  # noqa: E731
    wm = cuda_backend._expand(w, packed, what)
    ds = torch.empty((n_masks + 1, tokens, d_ff), dtype=dt, device=dev)
    P, act = n_masks + 1, launcher.activation_id("silu")
    runs = {
        "expand": lambda: cuda_backend._expand(w, packed, what),
        "gemm fwd": lambda: cuda_backend._gemm(launcher.GEMM_FWD, what, x, w, wm, P, tokens, d_ff, d_model, act=act,
                                               out=out),
        "gemm ds": lambda: cuda_backend._gemm(launcher.GEMM_DS, what, x, w, wm, P, tokens, d_ff, d_model, act=act,
                                              dout=dout, out=ds[0], dbuf=ds[1]),
        "gemm dx": lambda: cuda_backend._gemm(launcher.GEMM_DX, what, ds, w, wm, P, tokens, d_model, d_ff, out=dx),
        "gemm dw+dm": lambda: cuda_backend._gemm(launcher.GEMM_DW, what, ds, x, None, P, d_ff, d_model, tokens,
                                                 masks=packed, w=w, out=dw, dm=dm),
        "cublas 1 product": lambda: torch.matmul(x, w.T),
    }
    flop = 2.0 * tokens * d_ff * d_model
    for name, fn in runs.items():
        ms = timed(fn, reps)
        products = 1 if name.startswith("cublas") else 0 if name == "expand" else P
        rate = f"{products * flop / ms / 1e9:8.1f} TFLOP/s" if products else ""
        print(f"  {name:18s} {ms:8.3f} ms {rate}")
    runs["gemm dx"]()
    ref_out, ref_dx = out.clone(), dx.clone()
    for step in steps:
        bk, stages = (int(v) for v in step.split("x"))
        rebuild(bk, stages)
        for name, ref, res in (("gemm fwd", ref_out, out), ("gemm dx", ref_dx, dx)):
            res.fill_(float("nan"))
            ms = timed(runs[name], reps)
            same = torch.equal(res, ref)
            print(f"  {name} K step {bk}, {stages} stages {ms:8.3f} ms {P * flop / ms / 1e9:8.1f} TFLOP/s "
                  f"bitwise equal to the built-in: {same}")
        rebuild(*BUILT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", nargs="+", default=["4096x14336x8192x1", "4096x14336x8192x4", "4096x11008x2048x4"],
                        help="d_model x d_ff x tokens x n_masks")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--steps", nargs="*", default=[], help="K step x stages to rebuild and time, e.g. 64x3")
    args = parser.parse_args()
    for point in args.points:
        probe(*(int(v) for v in point.split("x")), args.reps, args.steps)


if __name__ == "__main__":
    main()
