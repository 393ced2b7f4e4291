import os

import torch
from hypothesis import settings

# Without a GPU the kernel backends run on CPU: Triton's interpreter and Numba's CUDA
# simulator. Both read their switch when triton / numba is first imported, so set them
# here, before any test module imports mglu's backends (SPEC; NOTES.md).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

# Kernel compiles trip hypothesis' 200 ms default deadline; with CI set, hypothesis
# derandomises on its own (NOTES.md).
settings.register_profile("mglu", deadline=None, max_examples=50)
settings.load_profile("mglu")
os.environ.pop("MGLU_BACKEND", None)
