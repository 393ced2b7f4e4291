"""Register / spill report and SASS check of the numba backend's wide decode kernels.

Runs on a CPU machine (no GPU): builds ``decode_wide`` (FORWARD, silu) of the named
variants (default: every variant of ``constants.DECODE_VARIANTS`` with a wide shape) for
the named ``n_masks`` in fp16 and bf16 to sm_90 PTX with ``cuda.compile_ptx``, assembles it
with ``ptxas -arch=sm_90 -v`` and disassembles the cubin (cuobjdump, or the copy triton
ships); prints per kernel the registers, the spill bytes, the 16-byte loads of W
(LDG.E.128...), the mask loads and local-memory accesses (LDL/STL). The registers set the
resident warps an SM (65536 registers, 64 warps at most: hardware facts of sm_90), printed
beside them. Exit status 1 when a default variant (``constants.default_variant``) touches
local memory or has no 16-byte load.

    python scripts/numba_resources.py [--variants v4s4wl8,v4s4u2wl8] [--n-masks 1,4,8]
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numba.cuda.dispatcher as dispatcher


class _SM90:
    """compile_ptx builds device functions for the current device; there is none here."""

    compute_capability = (9, 0)


dispatcher.get_current_device = lambda: _SM90()

from numba import cuda  # noqa: E402

from mglu.backends.numba_backend import kernels as K  # noqa: E402
from mglu.backends.numba_backend.constants import DECODE_VARIANTS, default_variant  # noqa: E402
from mglu.backends.numba_backend.numerics import ACT_CODE  # noqa: E402

MASK_WORD = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}
#: registers of an sm_90 SM and its most resident warps (hardware facts)
SM_REGISTERS, SM_WARPS = 65536, 64


def ptx(variant: str, n_masks: int, bf16: bool) -> str:
    """sm_90 PTX of ``variant``'s FORWARD decode_wide kernel (silu)."""
    shape = DECODE_VARIANTS[variant]
    kernel = K.decode_wide_kernel(n_masks, ACT_CODE["silu"], K.FORWARD, bf16, *shape)
    a = "int16[::1]" if bf16 else "float16[::1]"
    words = "uint8" if shape.interleave else MASK_WORD[shape.span]
    sig = f"void(int32[::1],int32[::1],{words}[::1],{a},{a},{a},int64,int64,int64,int64)"
    text, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
    # NVVM may stamp a PTX ISA newer than this ptxas names; 9.0 is what sm_90 code needs
    return re.sub(r"^\.version \S+", ".version 9.0", text, count=1, flags=re.M)


def find_cuobjdump() -> str | None:
    """cuobjdump on PATH, or the copy triton ships with its NVIDIA backend."""
    try:
        import triton

        bundled = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
    except ImportError:
        bundled = None
    return shutil.which("cuobjdump") or (str(bundled) if bundled and bundled.exists() else None)


def report(text: str, cuobjdump: str | None) -> dict:
    """Assemble ``text``; registers, spill bytes and SASS opcode counts."""
    with tempfile.TemporaryDirectory() as tmp:
        src, cubin = Path(tmp) / "k.ptx", Path(tmp) / "k.cubin"
        src.write_text(text)
        run = subprocess.run(["ptxas", "-arch=sm_90", "-v", str(src), "-o", str(cubin)],
                             capture_output=True, text=True, check=True)
        sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True,
                              check=True).stdout if cuobjdump else ""
    regs = int(re.search(r"Used (\d+) registers", run.stderr).group(1))
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", run.stderr)
    return {
        "regs": regs,
        "spill": int(spill.group(1)) + int(spill.group(2)),
        "ldg128": len(re.findall(r"\bLDG\S*\.128\b", sass)),
        "ldg_narrow": len(re.findall(r"\bLDG\S*", sass)) - len(re.findall(r"\bLDG\S*\.128\b", sass)),
        "local": len(re.findall(r"\b(?:LDL|STL)\b", sass)),
        "sass": bool(sass),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    wide = [v for v, s in DECODE_VARIANTS.items() if s]
    ap.add_argument("--variants", default=",".join(wide))
    ap.add_argument("--n-masks", default="1,2,4,8")
    args = ap.parse_args()
    cuobjdump = find_cuobjdump()
    failed = 0
    print(f"{'variant':<12} {'n':>2} {'dtype':<5} {'regs':>4} {'warps/SM':>8} {'spill':>5} "
          f"{'LDG.128':>7} {'LDG<128':>7} {'LDL/STL':>7}")
    for variant in args.variants.split(","):
        for n_masks in map(int, args.n_masks.split(",")):
            for bf16 in (False, True):
                r = report(ptx(variant, n_masks, bf16), cuobjdump)
                block = DECODE_VARIANTS[variant].block
                per_thread = -(-r["regs"] // 8) * 8  # allocated in units of 8 a thread (256 a warp)
                warps = min(SM_WARPS, SM_REGISTERS // (per_thread * block) * block // 32)
                default = variant == default_variant(n_masks)
                bad = default and (r["local"] or r["spill"] or (r["sass"] and not r["ldg128"]))
                failed += bool(bad)
                print(f"{variant + ('*' if default else ''):<12} {n_masks:>2} {'bf16' if bf16 else 'fp16':<5} "
                      f"{r['regs']:>4} {warps:>8} {r['spill']:>5} {r['ldg128']:>7} {r['ldg_narrow']:>7} "
                      f"{r['local']:>7}{'  FAIL' if bad else ''}")
    if not cuobjdump:
        print("cuobjdump not found: SASS columns are 0")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
