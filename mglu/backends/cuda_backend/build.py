"""Build checks without a GPU: the kernels through nvcc (every instantiation) and NVRTC.

``translation_unit(names)`` is :func:`launcher.source` plus a table of the addresses of the
kernels ``names`` (template instantiations as the launcher names them), which makes nvcc
instantiate and compile each one. ``nvcc(...)`` builds it for sm_90 (a cubin: ptxas runs, so
inline-PTX errors surface too). ``nvrtc(...)`` compiles through NVRTC with the options CuPy
uses (ours, then ``-arch``, ``--device-as-default-execution-space``), as the launcher does
on the device. Used by tests/test_cuda_build.py and scripts/cuda_resources.py.
"""

import shutil
import subprocess
from pathlib import Path

from .launcher import nvrtc_options, source

#: the H100's architecture
ARCH = (9, 0)


def find_nvcc() -> str | None:
    return shutil.which("nvcc") or next(
        (str(p) for p in (Path("/usr/local/cuda/bin/nvcc"),) if p.exists()), None)


def translation_unit(names: list[str], table: str = "mglu_kernels") -> str:
    rows = ",\n".join(f"    (void*)&{name}" for name in names)
    return f"{source()}\nvoid* {table}[] = {{\n{rows}\n}};\n"


def nvcc(names: list[str], workdir: Path, stem: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Compile ``names`` to ``workdir/stem.cubin`` for sm_90; returns the finished process."""
    cu = workdir / f"{stem}.cu"
    cu.write_text(translation_unit(names))
    cmd = [find_nvcc() or "nvcc", "-std=c++17", f"-arch=sm_{ARCH[0]}{ARCH[1]}", "-cubin",
           "-o", str(workdir / f"{stem}.cubin"), *extra, str(cu)]
    return subprocess.run(cmd, capture_output=True, text=True)


def nvrtc(names: list[str]) -> tuple[bool, str]:
    """Compile ``names`` with NVRTC (cuda-bindings) for sm_90 as CuPy would; (ok, log)."""
    from cuda.bindings import nvrtc as rt

    arch = f"{ARCH[0]}{ARCH[1]}"
    options = [*nvrtc_options(ARCH), f"-arch=sm_{arch}", "--device-as-default-execution-space"]
    err, prog = rt.nvrtcCreateProgram(source().encode(), b"mglu.cu", 0, [], [])
    for name in names:
        rt.nvrtcAddNameExpression(prog, name.encode())
    (result,) = rt.nvrtcCompileProgram(prog, len(options), [o.encode() for o in options])
    _, size = rt.nvrtcGetProgramLogSize(prog)
    log = b" " * size
    rt.nvrtcGetProgramLog(prog, log)
    ok = result == rt.nvrtcResult.NVRTC_SUCCESS
    if ok:
        for name in names:
            err, lowered = rt.nvrtcGetLoweredName(prog, name.encode())
            ok = ok and err == rt.nvrtcResult.NVRTC_SUCCESS and bool(lowered)
    rt.nvrtcDestroyProgram(prog)
    return ok, log.decode(errors="replace").rstrip("\x00 ")
