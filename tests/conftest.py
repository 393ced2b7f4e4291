import os

from hypothesis import settings

# Kernel compiles trip hypothesis' 200 ms default deadline; with CI set, hypothesis
# derandomises on its own (NOTES.md).
settings.register_profile("mglu", deadline=None, max_examples=50)
settings.load_profile("mglu")
os.environ.pop("MGLU_BACKEND", None)
