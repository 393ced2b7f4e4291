"""Where the ring kernel's blocks land, and what a cap on blocks an SM does (a GPU machine).

Usage: PYTHONPATH=$PWD python scripts/cuda_ring_probe.py [--json PATH]

1. Placement: a kernel of the ring's launch shape (RING_THREADS threads, its grid at d_ff
   14336 and 11008, the dynamic shared memory of ring3 at 1 and 4 masks) writes each block's
   %smid; printed: SMs used, most and fewest blocks an SM. If the block scheduler fills an
   SM to its limit before the next one, a grid smaller than the machine leaves SMs idle.
2. The cap: mglu_rowdot_ring (ring3, 16 tokens, 4096x14336 and 4096x11008, fp16, n_masks 1
   and 4) launched with its own dynamic shared memory and with more (the kernel uses only
   its own), so that at most 5, 4 or 3 blocks fit an SM; each output checked against the
   default launch bitwise, timed with the bench's timer (mglu.bench.harness.time_bounds,
   inputs rotated through enough copies that every call reads HBM) on random inputs.
"""

import argparse
import dataclasses
import json
import sys

import numpy as np
import torch

from mglu.backends import cuda_backend
from mglu.backends.cuda_backend import launcher
from mglu.bench.harness import Bound, copy_GBps, l2_bytes, rotation_copies, time_bounds

DEV = torch.device("cuda", 0)
#: bytes of shared memory an SM (H100/H200: 228 KB) and reserved a block (1 KB): hardware facts
SM_SMEM, BLOCK_RESERVED = 228 * 1024, 1024

SMID = r"""
extern "C" __global__ void smid(int* out) {
    if (threadIdx.x == 0) { int s; asm("mov.u32 %0, %%smid;" : "=r"(s)); out[blockIdx.x] = s; }
}
"""


def placement(blocks: int, smem: int) -> dict:
    import cupy

    kernel = cupy.RawKernel(SMID, "smid")
    kernel.max_dynamic_shared_size_bytes = smem
    out = cupy.zeros(blocks, dtype=cupy.int32)
    kernel((blocks,), (launcher.RING_THREADS,), (out,), shared_mem=smem)
    counts = torch.bincount(torch.as_tensor(out.get()).long(), minlength=torch.cuda.get_device_properties(0).multi_processor_count)
    return dict(blocks=blocks, smem=smem, sms_used=int((counts > 0).sum()), most=int(counts.max()),
                fewest=int(counts.min()))


def smem_for(cap: int) -> int:
    """Dynamic shared memory a block so that at most ``cap`` blocks fit an SM."""
    return SM_SMEM // cap - BLOCK_RESERVED + 1 if cap < 5 else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    report = {"placement": [], "cap": []}
    for d_ff in (14336, 11008):
        for n_masks in (1, 4):
            plan = launcher.rowdot_plan(torch.float16, n_masks, launcher.MODE_FWD, 16, d_ff, 4096, "ring3")
            row = placement(plan.grid[0], plan.smem)
            report["placement"].append(dict(d_ff=d_ff, n_masks=n_masks, **row))
            print("placement", report["placement"][-1], flush=True)
    copy = copy_GBps(DEV, 1 << 30, 20, 3)
    l2, _ = l2_bytes(DEV)
    print(f"copy {copy:.0f} GB/s", flush=True)
    for d_model, d_ff in ((4096, 14336), (4096, 11008)):
        for n_masks in (1, 4):
            nbytes = d_ff * d_model * (2 + n_masks / 8)
            copies, l2_cold = rotation_copies(int(nbytes), l2)
            gen = torch.Generator(device=DEV).manual_seed(n_masks)
            sets = [(torch.randn(16, d_model, device=DEV, generator=gen).half(),
                     (torch.randn(d_ff, d_model, device=DEV, generator=gen) / 64).half(),
                     torch.randint(0, 256, (n_masks, d_ff, d_model // 8), device=DEV, dtype=torch.uint8, generator=gen))
                    for _ in range(copies)]
            plan = launcher.rowdot_plan(torch.float16, n_masks, launcher.MODE_FWD, 16, d_ff, d_model, "ring3")
            ref = cuda_backend.forward(*sets[0], "silu", variant="ring3")
            for cap in (5, 4, 3):
                capped = dataclasses.replace(plan, smem=max(plan.smem, smem_for(cap)))

                def run(s, p=capped):  # the arguments of cuda_backend._rowdot for the ring kernel
                    x, w, m = s
                    out = torch.empty(16, d_ff, device=DEV, dtype=torch.float16)
                    args = (*(launcher.pointer(t) for t in (x, w, m, None, out, None)),
                            *(np.int32(v) for v in (16, d_model, d_ff, launcher.activation_id("silu"), *p.tail)))
                    launcher.launch(p, args, DEV, lambda: "probe")
                    return out

                same = torch.equal(run(sets[0]), ref)
                t = time_bounds([Bound(step=(lambda s=s: run(s)), read_bytes=int(nbytes)) for s in sets], DEV,
                                rep_s=0.1, l2_cold=l2_cold, l2=l2)
                place = placement(plan.grid[0], capped.smem)
                row = dict(d_ff=d_ff, n_masks=n_masks, cap=cap, smem=capped.smem, us=t.median_us,
                           pct_copy=100 * nbytes / t.median_us / 1e3 / copy, bitwise_equal=same, **{
                               k: place[k] for k in ("sms_used", "most", "fewest")})
                report["cap"].append(row)
                print("cap", row, flush=True)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(report, f, indent=1)
    return 0 if all(r["bitwise_equal"] for r in report["cap"]) else 1


if __name__ == "__main__":
    sys.exit(main())
