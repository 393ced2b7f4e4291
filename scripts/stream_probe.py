"""What the decode GEMV's bytes alone cost: a read-only Triton kernel streams W and the
packed bit-planes in the GEMV's pattern and does no arithmetic beyond an XOR a word.

Usage: python scripts/stream_probe.py [--json PATH]

``W (N, K)`` 16-bit, read as int32 words; planes ``(n, N, K/8)`` uint8, read as int32
words. A program takes ``BN = 4`` rows (the GEMV's ``tiles.gemv_tiles``) and steps over K
``STEP = 1024`` columns at a time (the GEMV's 4 unrolled steps of 256): per step the
``(4, 512)`` words of W and the ``(4, 32)`` words of each plane, XORed into one word a
thread; one int32 a row is written. ``flat`` reads one buffer of the same SPEC §7 bytes
(``N K (2 + n/8)``) as W alone. Timed by ``triton.testing.do_bench`` (median), GB/s of
those bytes and % of the copy bandwidth measured in the same run (``harness.copy_GBps``).
"""

import argparse
import json
import sys

import numpy as np

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from mglu.bench.harness import copy_GBps

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


def time_stream(N, K, n, dev, flat=False):
    """µs of one read of W (N, K) and n planes, or (flat) of one buffer of the same bytes."""
    if flat:
        N, n = int(N * (1 + n / 16)), 0
    w = torch.randint(-2**31, 2**31 - 1, (N, K // 2), device=dev, dtype=torch.int32)
    p = torch.randint(-2**31, 2**31 - 1, (max(n, 1), N, K // 32), device=dev, dtype=torch.int32)
    out = torch.empty(N, device=dev, dtype=torch.int32)

    def run():
        stream[(triton.cdiv(N, BN),)](w, p, out, N, K // 2, K // 32, NM=n, BN=BN, STEP=STEP, num_warps=4)

    run()
    # the first rows against numpy's XOR (the kernel read what it was given)
    words = [w[:8].cpu().numpy()] + [p[m, :8].cpu().numpy() for m in range(n)]
    want = np.bitwise_xor.reduce(np.concatenate(words, axis=1), axis=1)
    if not np.array_equal(out[:8].cpu().numpy(), want):
        raise AssertionError(f"stream {K}x{N} n={n}: the kernel's XOR differs from numpy's")
    return do_bench(run, return_mode="median") * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    dev = torch.device("cuda")
    copy = copy_GBps(dev, 1 << 30, 20, 3)
    print(f"{torch.cuda.get_device_name()}: copy {copy:.0f} GB/s", flush=True)
    rows = []
    for K, N in ((4096, 14336), (4096, 11008), (8192, 28672)):
        for n in (0, 1, 2, 4, 8):
            for flat in (False, True) if n else (False,):
                us = time_stream(N, K, n, dev, flat)
                nbytes = N * K * (2 + n / 8)
                row = dict(K=K, N=N, n=n, flat=flat, us=us, GBps=nbytes / us / 1e3)
                row["pct_copy"] = 100 * row["GBps"] / copy
                rows.append(row)
                print(f"stream {K}x{N} n={n} {'flat  ' if flat else 'planes'} {us:8.1f} us {row['GBps']:6.0f} GB/s "
                      f"{row['pct_copy']:5.1f}% of copy", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"copy": copy, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
