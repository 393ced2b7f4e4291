"""Where a training step's GPU time goes: ``torch.profiler`` over one backend's fwd+bwd.

Usage: python scripts/profile_step.py [--backend triton] [--shape 4096x11008] [--tokens 2048]
       [--n-masks 4] [--steps 5]

Runs ``mglu.mglu(x, W, logits, backend=B)`` and ``out.backward(dout)`` in bf16 (as
``python -m mglu bench --mode fwdbwd``), warm, then profiles ``--steps`` steps and prints
the CUDA kernels by total device time (``torch.profiler`` table), so a step slower than
its kernels' sum (scripts/triton_tune.py) shows which launches make up the rest.
"""

import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import mglu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="triton")
    ap.add_argument("--shape", default="4096x11008")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--n-masks", dest="n_masks", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    d_model, d_ff = (int(v) for v in args.shape.split("x"))
    bf16 = dict(device="cuda", dtype=torch.bfloat16)
    x = torch.randn(args.tokens, d_model, **bf16, requires_grad=True)
    w = (torch.randn(d_ff, d_model, **bf16) / d_model**0.5).requires_grad_()
    logits = torch.randn(args.n_masks, d_ff, d_model, **bf16, requires_grad=True)
    dout = torch.randn(args.tokens, d_ff, **bf16)

    def step():
        x.grad = w.grad = logits.grad = None
        mglu.mglu(x, w, logits, backend=args.backend).backward(dout)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    print(f"{args.backend}: {args.shape}, {args.tokens} tokens, n_masks {args.n_masks}, bf16, {args.steps} steps")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=16, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
