"""Sweep the Triton backend's tiles on a GPU; the source of the constants in tiles.py.

Usage: python scripts/triton_tune.py [staged] [gates] [decode] [shapes] [batched] [prefill] [bwd] [wgmma] [wgmma64] [wgmmawait]
       [--json PATH]

For each part it times the kernels with explicit tiles (``launch.launch_*``) by
``triton.testing.do_bench`` (median of 100 ms after 25 ms warm-up) on random inputs whose
weight is larger than twice the L2 (no rotation needed), and prints time, GB/s and % of
the copy bandwidth (decode) or TFLOP/s and % of the bf16 matmul rate (prefill), measured
in the same run, with each compiled kernel's registers, spills and SASS instruction counts
(16-byte global loads, tensor-core instructions).
"""

import argparse
import dataclasses
import json
import sys

import torch
import triton
import triton.language as tl
from triton.testing import do_bench, do_bench_cudagraph

from mglu.backends import REGISTRY
from mglu.backends.base import Problem
from mglu.conformance.tolerances import bound, rel_error
from mglu.backends.triton_backend import kernels, launch, tiles
from mglu.bench.harness import copy_GBps, matmul_TFLOPs

DEV = torch.device("cuda")
ROWS = []


def inputs(T, K, N, n, dtype=torch.bfloat16):
    x = torch.randn(T, K, device=DEV, dtype=dtype)
    w = torch.randn(N, K, device=DEV, dtype=dtype) / K**0.5
    p = torch.randint(0, 256, (n, N, (K + 7) // 8), device=DEV, dtype=torch.uint8)
    return x, w, p


def sass_counts(kernel) -> dict:
    try:
        sass = kernel.asm["sass"]
    except Exception as exc:  # nvdisasm missing: report, do not fail the sweep
        return {"sass": f"unavailable ({type(exc).__name__})"}
    keys = ("LDG.E.128", "LDG.E.64", "LDG.E.U8", "LDG.E ", "HGMMA", "HMMA", "LDL", "STL", "LDGSTS", "UTMALDG")
    return {k.strip(): sass.count(k) for k in keys}


def record(part, label, ms, kernel, bytes_=None, flops=None, limits=None):
    row = {"part": part, "label": label, "us": ms * 1e3,
           "regs": getattr(kernel, "n_regs", None), "spills": getattr(kernel, "n_spills", None)}
    if bytes_:
        row["GBps"] = bytes_ / (ms * 1e-3) / 1e9
        row["pct_copy"] = 100 * row["GBps"] / limits["copy"]
    if flops:
        row["TFLOPs"] = flops / (ms * 1e-3) / 1e12
        row["pct_mm"] = 100 * row["TFLOPs"] / limits["mm"]
    row.update(sass_counts(kernel))
    ROWS.append(row)
    extra = f"{row.get('GBps', 0):7.0f} GB/s {row.get('pct_copy', 0):5.1f}%" if bytes_ else \
        f"{row.get('TFLOPs', 0):6.1f} TF/s {row.get('pct_mm', 0):5.1f}%"
    print(f"{part:8s} {label:58s} {row['us']:9.1f} us {extra}  regs={row['regs']} spills={row['spills']} "
          f"{ {k: v for k, v in row.items() if k in ('LDG.E.128', 'LDG.E.U8', 'HGMMA', 'HMMA', 'LDL', 'LDGSTS')} }",
          flush=True)


def timed(part, label, run, limits, bytes_=None, flops=None, graph=False):
    """Compile (first call), time ``run`` by do_bench's median (``graph``: replayed from a
    CUDA graph, do_bench_cudagraph, so that no host time shows) and record it; a config that
    fails (out of shared memory, say) is reported and the sweep goes on."""
    try:
        kern = run()
        ms = do_bench_cudagraph(run, return_mode="median") if graph else do_bench(run, return_mode="median")
    except Exception as exc:
        print(f"{part:8s} {label:58s} FAILED {type(exc).__name__}: {str(exc)[:160]}", flush=True)
        ROWS.append({"part": part, "label": label, "error": f"{type(exc).__name__}: {exc}"[:300]})
        return
    record(part, label, ms, kern, bytes_, flops, limits)


def decode_bytes(T, K, N, n, e=2):
    return N * K * (e + n / 8) + T * (K + N) * e


def time_gemv(part, T, K, N, n, c, limits, dtype=torch.bfloat16):
    x, w, p = inputs(T, K, N, n, dtype)
    out = torch.empty(T, N, device=DEV, dtype=dtype)
    timed(part, f"gemv {K}x{N} T={T} n={n} {dtype} {c}", lambda: launch.launch_gemv(x, w, p, out, 0, c), limits,
          decode_bytes(T, K, N, n))


def time_mma(part, T, K, N, n, c, limits, dtype=torch.bfloat16):
    x, w, p = inputs(T, K, N, n, dtype)
    out = torch.empty(T, N, device=DEV, dtype=dtype)
    label = f"mma {K}x{N} T={T} n={n} {dtype} {c}"

    def run():
        return launch.launch_gates(x, w, p, out, None, 0, 0, c)

    if T <= 64:
        timed(part, label, run, limits, decode_bytes(T, K, N, n))
    else:
        timed(part, label, run, limits, flops=2 * T * N * K * (n + 1))


def part_decode(limits):
    """The GEMV's unroll and register cap at 1 token (n=1: against the tensor-core tile that
    serves it), then the default against the best of them per n_masks on the three decode
    shapes of issue #6 in fp16 and bf16. Outputs checked first (SPEC bound)."""
    best = {}
    for n in (1, 2, 4, 8):
        configs = [tiles.gemv_tiles(n)] + [tiles.Gemv(4, 32, 4, u, reg) for u, reg in (
            (4, None), (4, 128), (4, 96), (4, 80), (4, 64), (2, None), (2, 80), (2, 64))]
        times = checked_gemv("decode", 1, 4096, 14336, n, configs, limits)
        if times:
            best[n] = min(times, key=times.get)
        print(f"decode   best at n={n}: {best.get(n)} ({times.get(best.get(n))} us)", flush=True)
    time_mma("decode", 1, 4096, 14336, 1, tiles.mma_fwd_tiles(1, 1, 2), limits)
    for dt in (torch.float16, torch.bfloat16):
        for shape in ((4096, 14336), (4096, 11008), (8192, 28672)):
            for n in (1, 2, 4, 8):
                checked_gemv("decode", 1, *shape, n, [tiles.gemv_tiles(n), best.get(n, tiles.gemv_tiles(n))], limits,
                             dt)
            time_mma("decode", 1, *shape, 1, tiles.mma_fwd_tiles(1, 1, 2), limits, dt)


def right(part, label, run, out, ref, limit) -> bool:
    """Run ``run`` (which writes ``out``) once; whether ``out`` is within ``limit`` of the
    float64 ``ref`` (a failure or a wrong output is reported and recorded)."""
    try:
        run()
        err = rel_error(out, ref)
    except Exception as exc:
        print(f"{part:8s} {label} FAILED {type(exc).__name__}: {str(exc)[:160]}", flush=True)
        return False
    if not err <= limit:
        print(f"{part:8s} {label} WRONG rel err {err:.2e} > {limit:.1e}", flush=True)
        ROWS.append({"part": part, "label": label, "error": f"rel err {err}"})
        return False
    return True


def checked_gemv(part, T, K, N, n, configs, limits, dtype=torch.bfloat16):
    """Time each GEMV config in ``configs`` whose output is within the SPEC bound of the
    float64 torch forward; returns {config: us}."""
    x, w, p = inputs(T, K, N, n, dtype)
    torch_be = REGISTRY["torch"]
    ref = torch_be.forward(x.double(), w.double(), p, "silu").cpu().numpy()
    limit = bound(dtype, rel_error(torch_be.forward(x, w, p, "silu"), ref))
    times = {}
    for c in dict.fromkeys(configs):
        out = torch.full((T, N), float("nan"), device=DEV, dtype=dtype)
        label = f"gemv {K}x{N} T={T} n={n} {dtype} {c}"
        if not right(part, label, lambda: launch.launch_gemv(x, w, p, out, 0, c), out, ref, limit):
            continue
        timed(part, label, lambda: launch.launch_gemv(x, w, p, out, 0, c), limits, decode_bytes(T, K, N, n))
        if "us" in ROWS[-1]:
            times[c] = ROWS[-1]["us"]
    return times


def part_gemv_shapes(limits):
    """The GEMV's tile shape (rows BN x byte groups BG, warps: BN BG = 32 num_warps, one
    16-byte load a thread) at n_masks 1, 4, 8 with each n's unroll and cap from
    tiles.gemv_tiles, 4096x14336 fp16 (the paper preset's dtype), 1 token: run 10 hinted at BN=8 with 8
    warps for n=1 and BN=4 BG=16 2 warps for n=8 (uncapped, before the caps)."""
    for n in (1, 4, 8):
        base = tiles.gemv_tiles(n)
        for bn, bg, nw in ((4, 32, 4), (8, 16, 4), (2, 64, 4), (8, 32, 8), (16, 16, 8), (4, 64, 8), (4, 16, 2)):
            time_gemv("shapes", 1, 4096, 14336, n, tiles.Gemv(bn, bg, nw, base.UNROLL, base.maxnreg), limits,
                      torch.float16)


def part_batched(limits):
    """Batched decode (16 and 64 tokens, n_masks 1 and 4, 4096x14336 bf16): the default
    tile (tiles.mma_fwd_tiles) against itself with the other way of building the masked
    tiles (Mma.pairs: inline PTX or tl.where) and other tiles with the inline PTX: 64 rows deep 64 / 128 of 4 / 8 warps, 32 and 16
    rows on 2 and 1 warps (mma.sync, more programs), 128 rows of 8 warps. Each output is checked
    against the torch backend's float64 forward (SPEC §4 bound) before it is timed."""
    for T in (16, 64):
        for n in (1, 4):
            x, w, p = inputs(T, 4096, 14336, n)
            torch_be = REGISTRY["torch"]
            ref = torch_be.forward(x.double(), w.double(), p, "silu").cpu().numpy()
            limit = bound(torch.bfloat16, rel_error(torch_be.forward(x, w, p, "silu"), ref))
            M = tiles.Mma
            base = tiles.mma_fwd_tiles(T, n)
            candidates = (base, dataclasses.replace(base, pairs=not base.pairs), M(64, T, 64, 4, 4, pairs=True),
                          M(64, T, 128, 8, 4, pairs=True), M(32, T, 128, 2, 4, pairs=True),
                          M(16, T, 128, 1, 4, pairs=True), M(128, T, 64, 8, 3, pairs=True),
                          M(32, T, 64, 2, 4, pairs=True))
            for c in dict.fromkeys(candidates):  # the default once
                out = torch.full((T, 14336), float("nan"), device=DEV, dtype=torch.bfloat16)
                if not right("batched", f"T={T} n={n} {c}", lambda: launch.launch_gates(x, w, p, out, None, 0, 0, c),
                             out, ref, limit):
                    continue
                time_mma("batched", T, 4096, 14336, n, c, limits)


def part_prefill(limits):
    for n in (1, 4):
        for c in (tiles.Mma(128, 128, 64, 8, 3), tiles.Mma(128, 64, 64, 8, 3), tiles.Mma(64, 128, 64, 4, 3),
                  tiles.Mma(128, 64, 64, 4, 3)):
            time_mma("prefill", 8192, 4096, 14336, n, c, limits)


def time_staged(part, T, K, N, n, c, limits):
    """``expand_masks`` + ``fwd_mma`` reading the staged planes (``c.staged``), or
    ``fwd_mma`` on the bits; flops count the ``n + 1`` products, time includes the expansion."""
    x, w, p = inputs(T, K, N, n)
    out = torch.empty(T, N, device=DEV, dtype=torch.bfloat16)

    def run():
        return launch.launch_gates(x, w, p, out, None, 0, 0, c, launch.expand(w, p) if c.staged else None)

    timed(part, f"fwd{' staged' if c.staged else ''} {K}x{N} T={T} n={n} {c}", run, limits,
          flops=2 * T * N * K * (n + 1))


def part_staged(limits):
    """Masked weights staged in HBM vs built from the bits: prefill, and the token switch."""
    w, p = inputs(1, 4096, 14336, 4)[1:]
    timed("staged", "expand_masks 4096x14336 n=4", lambda: launch.expand(w, p), limits,
          bytes_=w.numel() * (2 + 4 / 8 + 8))
    S = tiles.Mma
    for n, cands in ((1, (S(64, 128, 64, 4, 3), S(128, 64, 64, 8, 4, gates=1, staged=True),
                          S(128, 128, 64, 8, 3, gates=1, staged=True), S(64, 128, 64, 4, 4, gates=1, staged=True))),
                     (4, (S(128, 64, 64, 8, 3, gates=2), S(128, 64, 64, 8, 3, gates=2, staged=True),
                          S(128, 64, 64, 8, 4, gates=1, staged=True), S(128, 64, 32, 8, 3, gates=4, staged=True),
                          S(128, 128, 64, 8, 3, gates=1, staged=True)))):
        for c in cands:
            time_staged("staged", 8192, 4096, 14336, n, c, limits)
    for T in (128, 256, 512, 1024, 2048):
        for staged in (False, True):
            time_staged("staged", T, 4096, 14336, 4, S(128, 64, 64, 8, 3, gates=2, staged=staged), limits)
            time_staged("staged", T, 4096, 14336, 1, S(128, 128, 64, 8, 3, gates=1, staged=True) if staged
                        else S(64, 128, 64, 4, 3), limits)


def part_bwd(limits):
    K, N, n = 4096, 11008, 4
    S = tiles.Mma
    for T in (2048, 8192):
        x, w, p = inputs(T, K, N, n)
        wm = launch.expand(w, p)
        ds = torch.randn(n + 1, T, N, device=DEV, dtype=torch.bfloat16)
        dout = torch.randn(T, N, device=DEV, dtype=torch.bfloat16)
        flops = 2 * T * N * K * (n + 1)
        factors = torch.randn(n + 1, T, N, device=DEV, dtype=torch.bfloat16)
        b = tiles.DS_BLOCK
        timed("bwd", f"ds_from_factors T={T} BLOCK={b}", lambda: kernels.ds_from_factors[(triton.cdiv(T * N, b),)](
            factors, dout, ds, T * N, N_MASKS=n, BLOCK=b, ACC=tl.float32, num_warps=4), limits,
            bytes_=(2 * (n + 1) + 1) * 2 * T * N)
        for c in (S(128, 64, 64, 8, 3, gates=2, staged=True),):
            src = wm if c.staged else None
            timed("bwd", f"ds-pass T={T} {c}", lambda: launch.launch_gates(x, w, p, ds, dout, 0, 1, c, src),
                  limits, flops=flops)
        dx = torch.empty(T, K, device=DEV, dtype=torch.bfloat16)
        for c in (S(64, 128, 256, 8, 3, staged=True), S(64, 128, 256, 8, 4, staged=True),
                  S(32, 128, 256, 8, 4, staged=True),
                  S(32, 128, 256, 8, 3, staged=True), S(64, 256, 128, 16, 3, staged=True)):
            src = wm if c.staged else None
            timed("bwd", f"dx T={T} {c}", lambda: launch.launch_dx(ds, w, p, dx, c, src), limits, flops=flops)
        dw = torch.empty(N, K, device=DEV, dtype=torch.bfloat16)
        dm = torch.empty(n, N, K, device=DEV, dtype=torch.bfloat16)
        for c in (S(128, 64, 128, 8, 3), S(128, 64, 128, 8, 4), S(128, 128, 128, 8, 3), S(128, 64, 128, 16, 3),
                  S(128, 128, 128, 16, 3)):
            timed("bwd", f"dw+dM T={T} {c}", lambda: launch.launch_dw(ds, x, w, p, dw, dm, c), limits, flops=flops)


def part_gates(limits):
    """Gate accumulators per pass (Mma.gates) at n=4: decode 16 tokens, prefill 8192."""
    for g in (4, 2, 1):
        time_mma("gates", 16, 4096, 14336, 4, tiles.Mma(64, 16, 128, 4, 4, gates=g), limits)
    for c in (tiles.Mma(128, 64, 64, 8, 3, gates=4), tiles.Mma(128, 64, 64, 8, 3, gates=2),
              tiles.Mma(128, 128, 64, 8, 3, gates=2), tiles.Mma(64, 128, 64, 4, 3, gates=2),
              tiles.Mma(64, 128, 64, 4, 3, gates=1)):
        time_mma("gates", 8192, 4096, 14336, 4, c, limits)


def part_wgmma(limits, rows="all"):
    """The Gluon wgmma forward (wgmma.fwd_wgmma), every row replayed from a CUDA graph
    (do_bench_cudagraph: do_bench's L2 flush leaves dirty lines whose write-back lands in a
    kernel this short, MEASUREMENTS_H200.md run 75), each output checked against the torch
    backend's float64 forward (SPEC §4 bound) before it is timed. 16 tokens, bf16, on
    4096x14336 and 4096x11008 (n 1, 4, 8) and 8192x28672 (n 4): the default tiles
    (tiles.wgmma_tiles) against the other ways of waiting for the wgmmas (WGMMA_WAITS) at
    n <= 4 and 64 deep at n 1 and 4, beside the cuda backend. 17-64 tokens (24, 32, 48, 64)
    at n 1 and 4: the default 64-token tile against the other waits and the other stage
    count, beside fwd_mma's default tile and the cuda backend. Tail shapes (1001 rows, K of
    33 stages, 3 and 40 tokens; K of one stage) are checked, not timed. ``rows``: "all";
    "wide" (part ``wgmma64``) the 17-64-token rows alone; "wait" (part ``wgmmawait``) the
    three waits at 16 (n 2, 4) and 64 tokens (n 1-4) on both shapes, tails checked.
    """
    cuda_why = REGISTRY["cuda"].reasons(Problem(16, 4096, 14336, 4, torch.bfloat16, DEV, "silu"))
    cuda = None if cuda_why else REGISTRY["cuda"]
    print(f"wgmma    cuda backend rows: {'; '.join(cuda_why) or 'yes'}", flush=True)

    def one(T, K, N, n, dtype, configs, timed_rows, mma=False):
        x, w, p = inputs(T, K, N, n, dtype)
        torch_be = REGISTRY["torch"]
        ref = torch_be.forward(x.double(), w.double(), p, "silu").cpu().numpy()
        limit = bound(dtype, rel_error(torch_be.forward(x, w, p, "silu"), ref))
        for c in configs:
            out = torch.full((T, N), float("nan"), device=DEV, dtype=dtype)
            run = lambda: launch.launch_wgmma(x, w, p, out, 0, c)  # noqa: E731
            label = f"wgmma {K}x{N} T={T} n={n} {dtype} {c}"
            if right("wgmma", label, run, out, ref, limit) and timed_rows:
                timed("wgmma", label, run, limits, decode_bytes(T, K, N, n), graph=True)
        if timed_rows and mma:
            out = torch.empty(T, N, device=DEV, dtype=dtype)
            c = tiles.mma_fwd_tiles(T, n, 2)
            timed("wgmma", f"mma {K}x{N} T={T} n={n} {dtype} {c}",
                  lambda: launch.launch_gates(x, w, p, out, None, 0, 0, c), limits, decode_bytes(T, K, N, n),
                  graph=True)
        if timed_rows and cuda is not None:
            # the cuda backend's host path (CuPy) is slower than these kernels: graph replay too
            timed("wgmma", f"cuda {K}x{N} T={T} n={n} {dtype}", lambda: cuda.forward(x, w, p, "silu"),
                  limits, decode_bytes(T, K, N, n), graph=True)

    def waits(base):
        return [dataclasses.replace(base, wait=w) for w in tiles.WGMMA_WAITS if w != base.wait]

    def narrow(n):
        base = tiles.wgmma_tiles(n, 16)
        out = [base]
        if n <= tiles.MAX_GATE_ACCS:
            out += waits(base) + [dataclasses.replace(base, BK=64)]
        return out

    def wide(n):
        base = tiles.wgmma_tiles(n, 64)
        return [base, *waits(base), dataclasses.replace(base, stages=7 - base.stages)]

    if rows == "wait":
        # every way of waiting for the wgmmas at 16 and 64 tokens, both shapes, n 1-4 (the
        # 64-token rows beside fwd_mma), tails checked with each
        for shape in ((4096, 14336), (4096, 11008)):
            for n in (2, 4):
                one(16, *shape, n, torch.bfloat16, narrow(n)[:3], True)
            for n in (1, 2, 3, 4):
                one(64, *shape, n, torch.bfloat16, wide(n)[:3], True, mma=n in (1, 4))
        for n in (1, 2, 3, 4):
            one(40, 4224, 1001, n, torch.bfloat16, wide(n)[:3], False)
            one(3, 4224, 1001, n, torch.bfloat16, narrow(n)[:3], False)
        return
    for shape in () if rows == "wide" else ((4096, 14336), (4096, 11008)):
        for n in (1, 4, 8):
            one(16, *shape, n, torch.bfloat16, narrow(n), True)
    if rows == "all":
        one(16, 8192, 28672, 4, torch.bfloat16, narrow(4)[:1], True)
    for T in (24, 32, 48, 64):
        for n in (1, 4):
            one(T, 4096, 14336, n, torch.bfloat16, wide(n), True, mma=True)
    for n in () if rows == "wide" else (1, 4, 5, 16):
        one(3, 4224, 1001, n, torch.bfloat16, narrow(n), False)
        one(16, 128, 200, n, torch.float16, narrow(n)[:1], False)
    for n in (1, 4):
        one(40, 4224, 1001, n, torch.bfloat16, wide(n), False)


PARTS = {"staged": part_staged, "gates": part_gates, "decode": part_decode, "shapes": part_gemv_shapes,
         "batched": part_batched, "prefill": part_prefill, "bwd": part_bwd, "wgmma": part_wgmma,
         "wgmma64": lambda limits: part_wgmma(limits, rows="wide"),
         "wgmmawait": lambda limits: part_wgmma(limits, rows="wait")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", help=f"any of {', '.join(PARTS)} (default: all)")
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args(argv)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; valid: {', '.join(PARTS)}")
    limits = {"copy": copy_GBps(DEV, 1 << 30, 20, 3), "mm": matmul_TFLOPs(DEV, torch.bfloat16, 8192, 20, 3)}
    print(f"{torch.cuda.get_device_name()}: copy {limits['copy']:.0f} GB/s, bf16 matmul {limits['mm']:.1f} TFLOP/s",
          flush=True)
    for part in args.parts or PARTS:
        PARTS[part](limits)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"limits": limits, "rows": ROWS}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
