"""Compile every Triton kernel of the backend for sm_90 without a GPU; print shared memory.

Usage: python scripts/triton_compile_check.py [--dtypes fp16,bf16,fp32,fp64] [--masks 1,4,8,16]

fwd_wgmma (Gluon) is compiled where the launcher would take it (fp16/bf16, tiles.wgmma_serves); its
convert_layout ops (one a mask) are asserted trivial at compile time: no data moves.

``triton.compile`` with ``GPUTarget("cuda", 90, 32)`` runs the whole pipeline (TTIR,
TTGIR, LLVM, PTX, ptxas) on the CPU, so a lowering failure on Hopper (such as Triton
3.6's fp64 dot on a register operand) shows up before any device
time is spent; each line also counts the TTGIR's ``convert_layout`` ops (registers and spills are reported on the GPU by scripts/triton_tune.py). Exit 1 if any kernel fails to compile.
"""

import argparse
import sys
from types import SimpleNamespace

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.experimental.gluon._runtime import GluonASTSource

from mglu.backends.triton_backend import kernels, launch, tiles, wgmma

TARGET = GPUTarget("cuda", 90, 32)
TL = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32", "fp64": "fp64"}


def _compile(fn, sig: dict, consts: dict, c) -> str:
    sig = dict(sig, **{k: "constexpr" for k in consts})
    # as launched on sizes divisible by 16 (Triton specialises such arguments): vector loads
    names = list(fn.arg_names)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a, t in sig.items() if t != "constexpr" and a != "T"}
    try:
        options = {"num_warps": c.num_warps, "num_stages": getattr(c, "num_stages", 3)}
        if getattr(c, "maxnreg", None):
            options["maxnreg"] = c.maxnreg  # as launched (the GEMV's register cap)
        source = GluonASTSource if fn is wgmma.fwd_wgmma else ASTSource
        k = triton.compile(source(fn, sig, consts, attrs), target=TARGET, options=options)
    except Exception as exc:
        lines = [ln for ln in str(exc).splitlines() if "rror" in ln or "ssert" in ln]
        return "FAIL " + (lines[0] if lines else type(exc).__name__)[:200]
    meta = k.metadata
    # layout conversions in the TTGIR: each one between registers is a trip through shared
    # memory (DESIGN.md, "What Triton's lowering costs the masked tensor-core tile")
    return f"ok shared={meta.shared} B convert_layout={k.asm['ttgir'].count('ttg.convert_layout')}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", default="fp16,bf16,fp32,fp64")
    ap.add_argument("--masks", default="1,4,8,16")
    ap.add_argument("--tokens", default="1,16,64,2048")
    args = ap.parse_args(argv)
    print(f"triton {triton.__version__}, target {TARGET}")
    failed = 0
    for dt in args.dtypes.split(","):
        acc = tl.float64 if dt == "fp64" else tl.float32
        p = f"*{TL[dt]}"
        for n in (int(v) for v in args.masks.split(",")):
            for T in (int(v) for v in args.tokens.split(",")):
                jobs = []
                c = tiles.FP64_TILES if dt == "fp64" else tiles.mma_fwd_tiles(T, n, 4 if dt == "fp32" else 2)
                g = tiles.gate_group(n, c.gates)
                base = {"x_ptr": p, "w_ptr": p, "p_ptr": "*u8", "wm_ptr": p, "out_ptr": p, "aux_ptr": p,
                        "T": "i32", "N": "i32", "K": "i32", "KB": "i32"}
                for mode in (0, 1, 2):
                    sig = base  # MODE 2's aux (the gradient factors) is in the input dtype too
                    jobs.append((f"fwd_mma mode={mode}", kernels.fwd_mma, sig, dict(
                        N_MASKS=n, G=g, ACT=0, MODE=mode, BN=c.BN, BT=c.BT, BK=c.BK, GROUP=tiles.GROUP,
                        STAGED=c.staged, PREC="ieee", UPCAST=False, ACC=acc,
                        PAIRS=c.pairs and not c.staged and dt in ("fp16", "bf16")), c))  # as launch._pairs
                jobs.append(("ds_from_factors", kernels.ds_from_factors, {
                    "f_ptr": p, "dout_ptr": p, "ds_ptr": p, "TN": "i32"},
                    dict(N_MASKS=n, BLOCK=tiles.DS_BLOCK, ACC=acc), SimpleNamespace(num_warps=tiles.DS_WARPS)))
                if c.staged:
                    ce = tiles.EXPAND_TILES
                    jobs.append(("expand_masks", kernels.expand_masks, {
                        "w_ptr": p, "p_ptr": "*u8", "wm_ptr": p, "N": "i32", "K": "i32", "KB": "i32"},
                        dict(N_MASKS=n, BN=ce.BN, BK=ce.BK), ce))
                if T == 1:
                    cg = tiles.gemv_tiles(n)
                    sig = {k: v for k, v in base.items() if k not in ("aux_ptr", "T", "wm_ptr")}
                    jobs.append(("fwd_gemv", kernels.fwd_gemv, sig, dict(
                        N_MASKS=n, G=tiles.gate_group(n, tiles.MAX_GEMV_ACCS), ACT=0, BN=cg.BN, BG=cg.BG, UNROLL=cg.UNROLL,
                        ASM=dt != "fp64", ACC=acc), cg))
                if dt in ("fp16", "bf16") and tiles.wgmma_serves(T, n):
                    cv = tiles.wgmma_tiles(n, T)
                    jobs.append(("fwd_wgmma", wgmma.fwd_wgmma, {
                        "x_ptr": p, "w_ptr": p, "p_ptr": "*i32", "out_ptr": p, "T": "i32", "N": "i32", "K": "i32",
                        "KW": "i32"}, launch.wgmma_constexprs(n, 0, cv), SimpleNamespace(num_warps=4)))
                cx = tiles.FP64_TILES if dt == "fp64" else tiles.mma_dx_tiles(T, c.staged)
                jobs.append(("bwd_dx", kernels.bwd_dx, {"ds_ptr": p, "w_ptr": p, "p_ptr": "*u8", "wm_ptr": p,
                                                        "dx_ptr": p, "T": "i32", "N": "i32", "K": "i32", "KB": "i32"},
                             dict(N_MASKS=n, BT=cx.BT, BN=cx.BN, BK=cx.BK, GROUP=tiles.GROUP, STAGED=cx.staged,
                                  PREC="ieee", UPCAST=False, ACC=acc), cx))
                cw = tiles.FP64_TILES if dt == "fp64" else tiles.mma_dw_tiles()
                jobs.append(("bwd_dw", kernels.bwd_dw, {"ds_ptr": p, "x_ptr": p, "w_ptr": p, "p_ptr": "*u8",
                                                        "dw_ptr": p, "dm_ptr": p, "T": "i32", "N": "i32",
                                                        "K": "i32", "KB": "i32"},
                             dict(N_MASKS=n, HAS_DM=True, BN=cw.BN, BK=cw.BK, BT=cw.BT, GROUP=tiles.GROUP,
                                  PREC="ieee", UPCAST=False, ACC=acc), cw))
                for name, fn, sig, consts, cfg in jobs:
                    res = _compile(fn, sig, consts, cfg)
                    failed += res.startswith("FAIL")
                    print(f"{dt:5s} n={n:2d} T={T:5d} {name:16s} {cfg} {res}", flush=True)
    print(f"{failed} kernel(s) failed to compile")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
