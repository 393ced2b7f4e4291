import re
import subprocess
import sys

import pytest
import torch

from mglu.cli import main
from mglu.conformance.cases import catalogue


def test_info_lists_every_backend_with_reasons(capsys):
    assert main(["info", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "torch   available" in out
    # tests run the kernel backends under Triton's interpreter and Numba's simulator (conftest)
    assert "triton  available" in out
    # numba runs CPU tensors only simulated, and the info problem (4096 x 11008) is past the
    # simulator's limit: refused with that sentence (on a GPU machine: CPU tensors refused)
    why = "too big for Numba's CUDA simulator" if not torch.cuda.is_available() else "runs on CUDA tensors"
    assert f"numba   unavailable: {why}" in out
    assert f"cuda    unavailable: needs a CUDA tensor (got cpu)" in out
    assert "MGLU_BACKEND" in out and "auto priority (forward): torch" in out


def test_conformance_quick_passes_and_summarises(capsys):
    assert main(["conformance", "--quick", "--dtype", "float32", "--device", "cpu", "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    quick = [c for c in catalogue(quick=True) if c.dtype == torch.float32]
    assert f"torch: {len(quick)} passed, 0 failed, 0 skipped" in out


def test_conformance_fails_on_a_broken_backend(monkeypatch, capsys):
    from mglu.backends import REGISTRY, Backend, torch_backend

    broken = Backend("numba", lambda p: [], lambda *a: torch_backend.forward(*a) * 2, torch_backend.backward)
    monkeypatch.setitem(REGISTRY, "numba", broken)
    assert main(["conformance", "--quick", "--dtype", "float32", "--device", "cpu", "--backend", "numba"]) == 1
    captured = capsys.readouterr()
    out = captured.out
    assert re.search(r"numba one_token-float32-packed seed=\d+: FAIL \| out err=", captured.err)
    # out = 0 cases (zero tokens, all-zero/all-one masks under silu) still pass when doubled
    assert re.search(r"numba: \d+ passed, [1-9]\d* failed", out) and "FAIL" in out


def test_conformance_named_unavailable_backend_exits_2(capsys):
    assert main(["conformance", "--quick", "--device", "cpu", "--backend", "cuda"]) == 2
    assert "cuda: unavailable on cpu: needs a CUDA tensor (got cpu)" in capsys.readouterr().out


def test_help_names_the_subcommands():
    out = subprocess.run([sys.executable, "-m", "mglu", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("info", "conformance", "bench"):
        assert cmd in out


def test_unknown_subcommand_exits_nonzero():
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_conformance_shards_cover_the_catalogue_once(capsys):
    quick = [c for c in catalogue(quick=True) if c.dtype == torch.float32]
    counts = []
    for part in (1, 2, 3):
        args = ["conformance", "--quick", "--dtype", "float32", "--device", "cpu", "--backend", "torch"]
        assert main(args + ["--shard", f"{part}/3", "-v"]) == 0
        out = capsys.readouterr().out
        counts.append(int(re.search(r"torch: (\d+) passed, 0 failed", out).group(1)))
    assert counts == [len(quick[k::3]) for k in range(3)] and sum(counts) == len(quick)
    with pytest.raises(SystemExit):
        main(["conformance", "--shard", "4/3"])


@pytest.mark.parametrize("command", ["info", "conformance"])
def test_unknown_device_is_a_usage_error(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--device", "tpu"])
    assert info.value.code == 2 and "invalid choice: 'tpu'" in capsys.readouterr().err
