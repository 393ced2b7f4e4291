"""Independent SwiGLU decode timing, outside mglu.bench, to cross-check its SwiGLU row.

out = silu(x @ Wg.T) * (x @ Wu.T), x (1, 4096), Wg/Wu (11008, 4096), bf16, on CUDA.
Times with triton.testing.do_bench (CUDA events, median); the two weights (180 MB) are
several times the H100's 50 MB L2, so every call reads them from HBM.
"""

import torch
import torch.nn.functional as F
from triton.testing import do_bench

d_model, d_ff = 4096, 11008
gen = torch.Generator(device="cuda").manual_seed(0)
x = torch.randn(1, d_model, device="cuda", dtype=torch.bfloat16, generator=gen)
wg = torch.randn(d_ff, d_model, device="cuda", dtype=torch.bfloat16, generator=gen)
wu = torch.randn(d_ff, d_model, device="cuda", dtype=torch.bfloat16, generator=gen)
ms = do_bench(lambda: F.silu(x @ wg.T) * (x @ wu.T), warmup=100, rep=1000, return_mode="median")
gbytes = (2 * d_ff * d_model + d_model + d_ff) * 2 / 1e9
print(f"independent SwiGLU (4096, 11008) bf16 1 token: {ms * 1e3:.1f} us median, {gbytes / ms * 1e3:.0f} GB/s")
