"""The Triton GEMV's inline PTX compiles for sm_90 and becomes what DESIGN.md says: an
``R2P`` for every mask byte of every step, no local memory, in the 16-bit dtypes (fp32
W needs two 16-byte loads a thread and a layout conversion, and ptxas forms no ``R2P``
there: fp32 decode is correct, not tuned) (ptxas of the installed triton,
on the CPU; a subprocess, since the tests import triton under its interpreter)."""

import subprocess
import sys

import pytest

pytest.importorskip("triton")

#: what both scripts start with: triton without its interpreter, and ``sass_ops(kernel)``,
#: the (predicate, opcode) of every SASS instruction of a compiled kernel
PRELUDE = r"""
import os, re, subprocess, sys, tempfile
os.environ.pop("TRITON_INTERPRET", None)
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mglu.backends.triton_backend import kernels, tiles


def sass_ops(k):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    return re.findall(r"/\*[0-9a-f]{4}\*/\s+(@!?P\d\s+)?([A-Z0-9]+)", sass)
"""

SCRIPT = PRELUDE + r"""
n, dtype = int(sys.argv[1]), sys.argv[2]
c = tiles.gemv_tiles(n)
consts = dict(N_MASKS=n, G=tiles.gate_group(n, tiles.MAX_GEMV_ACCS), ACT=0, BN=c.BN, BG=c.BG, UNROLL=c.UNROLL,
              ASM=True, ACC=tl.float32)
sig = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "p_ptr": "*u8", "out_ptr": f"*{dtype}", "N": "i32", "K": "i32",
       "KB": "i32"}
sig.update({k: "constexpr" for k in consts})
names = list(kernels.fwd_gemv.arg_names)
attrs = {(names.index(a),): [["tt.divisibility", 16]] for a, t in sig.items() if t != "constexpr"}
opts = {"num_warps": c.num_warps, "num_stages": 1}
if c.maxnreg:
    opts["maxnreg"] = c.maxnreg
k = triton.compile(ASTSource(kernels.fwd_gemv, sig, consts, attrs), target=GPUTarget("cuda", 90, 32), options=opts)
ops = sass_ops(k)
print("STEPS", c.UNROLL + 2)  # the unrolled loop's steps, the single-step loop, the tail
print("R2P", sum(op == "R2P" for _, op in ops))
print("LOCAL", sum(op in ("LDL", "STL") for _, op in ops))
"""


@pytest.mark.parametrize("n_masks,dtype", [(1, "bf16"), (4, "bf16"), (4, "fp16")])
def test_gemv_inline_ptx_is_predicated_adds(n_masks, dtype):
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(n_masks), dtype], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    counts = dict(line.split() for line in run.stdout.splitlines())
    # an R2P for every mask byte of every step in the code (tl.where's path: 2 in all)
    assert int(counts["R2P"]) >= int(counts["STEPS"]) * n_masks
    assert int(counts["LOCAL"]) == 0


MMA_SCRIPT = PRELUDE + r"""
n, tokens = int(sys.argv[1]), int(sys.argv[2])
c = tiles.mma_fwd_tiles(tokens, n)
sig = {"x_ptr": "*bf16", "w_ptr": "*bf16", "p_ptr": "*u8", "wm_ptr": "*bf16", "out_ptr": "*bf16", "aux_ptr": "*bf16",
       "T": "i32", "N": "i32", "K": "i32", "KB": "i32"}
names = list(kernels.fwd_mma.arg_names)
attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in sig if a != "T"}
for pairs in (False, True):
    consts = dict(N_MASKS=n, G=tiles.gate_group(n, c.gates), ACT=0, MODE=0, BN=c.BN, BT=c.BT, BK=c.BK,
                  GROUP=tiles.GROUP, STAGED=False, PREC="ieee", UPCAST=False, ACC=tl.float32, PAIRS=pairs)
    s = dict(sig, **{k: "constexpr" for k in consts})
    k = triton.compile(ASTSource(kernels.fwd_mma, s, consts, attrs), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": c.num_warps, "num_stages": c.num_stages})
    ops = sass_ops(k)
    print(f"INSTR_{pairs}", len(ops))
    print(f"PRMT_{pairs}", sum(op == "PRMT" for _, op in ops))
print("PAIRS_PER_STEP", c.BN * c.BK // (32 * c.num_warps) // 2)
print("DEFAULT_PAIRS", int(c.pairs))
"""


def test_mma_masked_tiles_in_inline_ptx_take_a_prmt_a_pair():
    """16 tokens, n=4, bf16, the default tile, 16-divisible sizes (8 columns a thread):
    with ``pairs`` every register pair of every mask is one ``prmt`` and the kernel is at
    least a fifth shorter than with ``tl.where`` (MEASUREMENTS_H200.md: 2600 -> 2032 instructions,
    triton 3.6); the default tile takes it."""
    n = 4
    run = subprocess.run([sys.executable, "-c", MMA_SCRIPT, str(n), "16"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    counts = {k: int(v) for k, v in (line.split() for line in run.stdout.splitlines())}
    assert counts["DEFAULT_PAIRS"] == 1
    assert counts["PRMT_True"] == n * counts["PAIRS_PER_STEP"]
    assert counts["INSTR_True"] <= 0.8 * counts["INSTR_False"], counts
