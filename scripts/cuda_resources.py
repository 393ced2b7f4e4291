"""Register / spill / stack report of the CUDA backend's kernels, and a SASS check of decode.

Runs on a CPU machine with nvcc (no GPU): compiles a representative set of instantiations
for sm_90 at full optimisation with ``-Xptxas -v``, prints one line per kernel, then
disassembles the cubin (cuobjdump -sass) and checks that the decode kernels of the target
regime (fp16/bf16, 1 token, every variant) load W with 16-byte loads (LDG.E.128), that
the fp16/bf16 tensor-core kernels (the ring kernel among them) issue HMMA.16816, and that the kernels the launcher
takes by default touch no local memory (LDL/STL); a non-default variant that does is
reported. Exit status 1 when a check fails.

    python scripts/cuda_resources.py            # from the repo root
"""

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from mglu.backends.cuda_backend import build, launcher

FWD, BWD = launcher.MODE_FWD, launcher.MODE_BWD
DTYPES = list(launcher.CTYPE)
#: the decode kernels (every variant, fp16/bf16, 1 token) that must stream W with LDG.E.128
DECODE_TARGETS = [launcher.rowdot_name(dt, nm, FWD, 1, var) for dt in (torch.float16, torch.bfloat16)
                  for nm in (1, 2, 4, 8) for var in sorted({v[0] for v in launcher.GEMV_VARIANTS.values()})]
#: the kernels the launcher takes by default at these points: no local memory allowed
#: (other variants may spill: reported, not failed; MEASUREMENTS.md lists the known ones)
DEFAULTS = {launcher.rowdot_plan(dt, nm, FWD, tokens, 64, 4096).name for dt in (torch.float16, torch.bfloat16)
            for nm in (1, 2, 4, 8) for tokens in (1, 16)}


def kernels() -> list[str]:
    """The decode targets, then per dtype the plans of 1, 4 and 16 tokens at n_masks 1, 4, 16
    (default variants), the tensor-core variants of the fp16/bf16 forward, the ring kernel at
    RING_MAX_MASKS and its mask-line form at 1, 4 and RING_MAX_MASKS, dx and dW, and the
    staged GEMM path's kernels (fp16/bf16: mglu_gemm in its four modes, mglu_expand)."""
    names = list(DECODE_TARGETS)
    for dt in DTYPES:
        for nm in (1, 4, 16):
            plans = [launcher.rowdot_plan(dt, nm, mode, tokens, 64, 4096).name for mode in (FWD, BWD) for tokens in (1, 4, 16)]
            DEFAULTS.update(plans)
            names += plans
            if dt in launcher.TUNED_DTYPES:
                names += [launcher.rowdot_plan(dt, nm, FWD, 16, 64, 4096, v).name for v in launcher.MMA_VARIANTS]
        if dt in launcher.TUNED_DTYPES:  # the ring kernel at its largest n_masks (a default there)
            names.append(launcher.rowdot_plan(dt, launcher.RING_MAX_MASKS, FWD, 16, 64, 4096).name)
            DEFAULTS.add(names[-1])
            # its mask-line variants (not defaults: reported)
            names += [launcher.ring_name(dt, nm, True) for nm in (1, 4, launcher.RING_MAX_MASKS)]
        names += [launcher.dx_name(dt), launcher.dw_name(dt, dt)]
        DEFAULTS.update(names[-2:])
        if dt in launcher.MMA_DTYPES:  # the GEMM path: every kernel of it is a default
            names += [launcher.gemm_name(dt, mode, torch.float32) for mode in range(4)]
            names.append(launcher.expand_plan(dt, 8, 8).name)
            DEFAULTS.update(names[-5:])
    return list(dict.fromkeys(names))


def find_cuobjdump() -> str | None:
    """cuobjdump on PATH, in /usr/local/cuda/bin, or the copy triton ships with its NVIDIA backend."""
    candidates = [Path("/usr/local/cuda/bin/cuobjdump")]
    try:
        import triton

        candidates.append(Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump")
    except ImportError:
        pass
    return shutil.which("cuobjdump") or next((str(p) for p in candidates if p.exists()), None)


def main() -> int:
    names = kernels()
    with tempfile.TemporaryDirectory() as tmp:
        run = build.nvcc(names, Path(tmp), "resources", ("-Xptxas", "-v"))
        if run.returncode:
            print(run.stderr)
            return 1
        report = parse_ptxas(run.stderr)
        cuobjdump = find_cuobjdump()
        sass = subprocess.run([cuobjdump, "-sass", str(Path(tmp) / "resources.cubin")],
                              capture_output=True, text=True, check=True).stdout if cuobjdump else ""
    mangled = mangle_map(names, sass or run.stderr)
    print(f"{'kernel':<46} {'regs':>5} {'stack':>6} {'spill st':>9} {'spill ld':>9} {'smem':>6}")
    for name in names:
        r = report.get(mangled.get(name, ""), {})
        print(f"{name:<46} {r.get('regs', '?'):>5} {r.get('stack', '?'):>6} {r.get('spill_st', '?'):>9} "
              f"{r.get('spill_ld', '?'):>9} {r.get('smem', 0):>6}")
    if not sass:
        print("cuobjdump not found: SASS checks skipped")
        return 0
    failed = 0
    functions = split_sass(sass)
    for name in names:
        body = functions.get(mangled.get(name, ""), "")
        ldg128, local = len(re.findall(r"\bLDG\.E\.128", body)), len(re.findall(r"\b(LDL|STL)\b", body))
        hmma = len(re.findall(r"\bHMMA\.16816", body))
        target, mma = name in DECODE_TARGETS, name.startswith(("mglu_rowdot_mma", "mglu_bwd_dw_mma", "mglu_bwd_dx_mma",
                                                                   "mglu_gemm", "mglu_rowdot_ring"))
        strict = name in DEFAULTS and (target or mma)
        ok = bool(body) and (not target or ldg128 > 0) and (not mma or hmma > 0) and not (strict and local)
        failed += not ok
        if target or mma or local:
            note = " (local memory in a non-default variant)" if local and not strict and (target or mma) else ""
            print(f"SASS {name}: LDG.E.128 x{ldg128}, HMMA.16816 x{hmma}, LDL/STL x{local} {'ok' if ok else 'FAIL'}{note}")
    return 1 if failed else 0


def parse_ptxas(text: str) -> dict[str, dict]:
    """ptxas -v lines -> {mangled name: regs, stack, spill_st, spill_ld, smem}."""
    out, current = {}, None
    for line in text.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)'", line):
            current = out.setdefault(m.group(1), {})
        elif current is not None and (m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            current.update(stack=int(m.group(1)), spill_st=int(m.group(2)), spill_ld=int(m.group(3)))
        elif current is not None and (m := re.search(r"Used (\d+) registers", line)):
            current["regs"] = int(m.group(1))
            if s := re.search(r"(\d+) bytes smem", line):
                current["smem"] = int(s.group(1))
    return out


def mangle_map(names: list[str], text: str) -> dict[str, str]:
    """Our instantiation names -> mangled symbols, through c++filt on every symbol seen."""
    symbols = sorted(set(re.findall(r"_Z\d+mglu_\w+", text)))
    filt = shutil.which("c++filt") or shutil.which("cu++filt")
    demangled = subprocess.run([filt], input="\n".join(symbols), capture_output=True, text=True).stdout.split("\n")
    ours = {normal(d): s for s, d in zip(symbols, demangled)}
    return {name: ours.get(normal(name), "") for name in names}


def normal(signature: str) -> str:
    """'void mglu_bwd_dx<float>(float const*, ...)' and 'mglu_bwd_dx<float>' -> 'mglu_bwd_dx<float>'."""
    core = re.sub(r"^void ", "", signature).split("(")[0]
    return re.sub(r"\s+", "", core)


def split_sass(sass: str) -> dict[str, str]:
    """cuobjdump -sass text -> {mangled function: its instructions}."""
    parts = re.split(r"\n\s*Function : (\S+)\n", sass)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


if __name__ == "__main__":
    sys.exit(main())
