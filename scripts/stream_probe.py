"""What the decode GEMV's bytes alone cost: a read-only Triton kernel streams W and the
packed bit-planes in the GEMV's pattern and does no arithmetic beyond an XOR a word.

Usage: python scripts/stream_probe.py [--json PATH]

``W (N, K)`` 16-bit, read as int32 words; planes ``(n, N, K/8)`` uint8, read as int32
words. A program takes ``BN = 4`` rows (the GEMV's ``tiles.gemv_tiles``) and steps over K
``STEP = 1024`` columns at a time (the GEMV's 4 unrolled steps of 256): per step the
``(4, 512)`` words of W and the ``(4, 32)`` words of each plane, XORed into one word a
thread; one int32 a row is written. ``flat`` reads one buffer of the same SPEC §7 bytes
(``N K (2 + n/8)``) as W alone. ``gemv`` is the triton backend's forward at 1 token on
bf16 data of the same shape (its output checked against the float64 torch forward first).
Each row is timed twice: by ``triton.testing.do_bench`` (median; it flushes the L2 between
calls) and by the bench's timer (``harness.time_bounds``: CUDA events after a GPU sleep,
inputs rotated so every call reads HBM, as ``python -m mglu bench`` times); GB/s of the SPEC
§7 bytes and % of the copy bandwidth measured in the same run (``harness.copy_GBps``).
"""

import argparse
import json
import sys

import numpy as np

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from mglu.backends import REGISTRY
from mglu.bench.harness import Bound, copy_GBps, l2_bytes, rotation_copies, time_bounds
from mglu.conformance.tolerances import bound, rel_error

BN = 4
STEP = 1024


@triton.jit
def stream(w_ptr, p_ptr, out_ptr, N, KW, KP, NM: tl.constexpr, BN: tl.constexpr, STEP: tl.constexpr):
    """``out[r] = xor of W's words and every plane's words of row r``; ``KW = K / 2``,
    ``KP = K / 32`` words a row, K a multiple of STEP."""
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    r = tl.minimum(rows, N - 1)[:, None]
    acc = tl.zeros((BN, STEP // 2), tl.int32)
    pacc = tl.zeros((BN, STEP // 32), tl.int32)
    for k in range(0, KW // (STEP // 2)):
        acc ^= tl.load(w_ptr + r * KW + k * (STEP // 2) + tl.arange(0, STEP // 2)[None, :])
        for m in tl.static_range(NM):
            pacc ^= tl.load(p_ptr + m * N * KP + r * KP + k * (STEP // 32) + tl.arange(0, STEP // 32)[None, :])
    res = tl.xor_sum(acc, axis=1) ^ tl.xor_sum(pacc, axis=1)
    tl.store(out_ptr + rows, res, mask=rows < N)


def stream_run(N, K, n, dev, flat):
    """A call reading W (N, K) and n planes, or (flat) one buffer of the same bytes, checked
    once against numpy's XOR (the kernel read what it was given)."""
    if flat:
        N, n = int(N * (1 + n / 16)), 0
    w = torch.randint(-2**31, 2**31 - 1, (N, K // 2), device=dev, dtype=torch.int32)
    p = torch.randint(-2**31, 2**31 - 1, (max(n, 1), N, K // 32), device=dev, dtype=torch.int32)
    out = torch.empty(N, device=dev, dtype=torch.int32)

    def run():
        stream[(triton.cdiv(N, BN),)](w, p, out, N, K // 2, K // 32, NM=n, BN=BN, STEP=STEP, num_warps=4)

    run()
    words = [w[:8].cpu().numpy()] + [p[m, :8].cpu().numpy() for m in range(n)]
    want = np.bitwise_xor.reduce(np.concatenate(words, axis=1), axis=1)
    if not np.array_equal(out[:8].cpu().numpy(), want):
        raise AssertionError(f"stream {K}x{N} n={n}: the kernel's XOR differs from numpy's")
    return run


def gemv_run(N, K, n, dev):
    """The triton backend's 1-token forward, bf16, output checked against the float64 torch
    forward (SPEC §4 bound)."""
    x = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
    w = (torch.randn(N, K, device=dev) / K**0.5).to(torch.bfloat16)
    p = torch.randint(0, 256, (n, N, K // 8), device=dev, dtype=torch.uint8)
    tri, ref_be = REGISTRY["triton"], REGISTRY["torch"]
    ref = ref_be.forward(x.double(), w.double(), p, "silu").cpu().numpy()
    err = rel_error(tri.forward(x, w, p, "silu"), ref)
    limit = bound(torch.bfloat16, rel_error(ref_be.forward(x, w, p, "silu"), ref))
    if not err <= limit:
        raise AssertionError(f"gemv {K}x{N} n={n}: rel err {err:.2e} > {limit:.1e}")
    return lambda: tri.forward(x, w, p, "silu")


def times(runs, nbytes, dev, l2):
    """(do_bench median, bench-timer median) in µs; ``runs`` builds one call per copy."""
    copies, l2_cold = rotation_copies(int(nbytes), l2)
    calls = [runs() for _ in range(copies)]
    bench = time_bounds([Bound(step=c, read_bytes=int(nbytes)) for c in calls], dev, l2_cold=l2_cold, l2=l2)
    return do_bench(calls[0], return_mode="median") * 1e3, bench.median_us


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    dev = torch.device("cuda")
    copy = copy_GBps(dev, 1 << 30, 20, 3)
    l2, _ = l2_bytes(dev)
    print(f"{torch.cuda.get_device_name()}: copy {copy:.0f} GB/s, L2 {l2} B", flush=True)
    rows = []
    for K, N in ((4096, 14336), (4096, 11008), (8192, 28672)):
        for n in (0, 1, 2, 4, 8):
            kinds = ("planes", "flat", "gemv") if n else ("planes",)
            for kind in kinds:
                nbytes = N * K * (2 + n / 8)
                runs = (lambda: gemv_run(N, K, n, dev)) if kind == "gemv" else (
                    lambda: stream_run(N, K, n, dev, kind == "flat"))
                us, us_bench = times(runs, nbytes, dev, l2)
                row = dict(K=K, N=N, n=n, kind=kind, us=us, us_bench=us_bench)
                row["pct_copy"] = 100 * nbytes / us / 1e3 / copy
                row["pct_copy_bench"] = 100 * nbytes / us_bench / 1e3 / copy
                rows.append(row)
                print(f"stream {K}x{N} n={n} {kind:6s} do_bench {us:8.1f} us ({row['pct_copy']:5.1f}%)  "
                      f"bench timer {us_bench:8.1f} us ({row['pct_copy_bench']:5.1f}% of copy)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"copy": copy, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
