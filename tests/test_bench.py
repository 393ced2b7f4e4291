"""The benchmark's logic on CPU: formulas, statistics, correct-before-timed, outputs, presets.

Speed is never asserted; every run here uses tiny shapes, eager baselines and short rep
budgets, so the file takes seconds.
"""

import argparse
import json
import re
import subprocess

import numpy as np
import pytest
import torch

from mglu.backends import REGISTRY, Backend, new_output
from mglu.bench import cases, cli, harness, report, sweep
from mglu.bench.cases import Case, bytes_moved, flops

TINY = ["--device", "cpu", "--shapes", "24x40", "--tokens", "2", "--n-masks", "2", "--dtype", "float32",
        "--rep-ms", "2"]


def parse(argv):
    p = argparse.ArgumentParser(prog="mglu bench")
    cli.add_arguments(p)
    return p.parse_args(argv)


def run_cli(argv):
    return cli.run(parse(argv))


# -- formulas (SPEC §7), hand-computed -------------------------------------------------

def test_decode_bytes_match_spec_formula():
    # (d_model, d_ff) = (4096, 11008), bf16, 1 token, 4 masks:
    # 11008*4096*(2 + 4/8) + (4096 + 11008)*2
    assert bytes_moved("mglu", "fwd", 1, 4096, 11008, 4, 2) == 112_752_128
    # SwiGLU: 2*11008*4096*2 + (4096 + 11008)*2
    assert bytes_moved("glu", "fwd", 1, 4096, 11008, 4, 2) == 180_385_280
    # the paper's small shape, one mask: 8192*2048*(2 + 1/8) + (2048 + 8192)*2
    assert bytes_moved("mglu", "fwd", 1, 2048, 8192, 1, 2) == 35_672_064


def test_training_bytes_are_compulsory_traffic():
    # d_model=8, d_ff=4, n=2, e=2, T=3 (W has 32 elements)
    # bwd: W + dW (2e) + packed (n/8) + dS (n*e) per element; x, dx, dout
    assert bytes_moved("mglu", "bwd", 3, 8, 4, 2, 2) == 32 * (4 + 0.25 + 4) + 3 * (16 + 4) * 2
    # fwdbwd: W, dW, logits, dS per element; x, dx, dout, out
    assert bytes_moved("mglu", "fwdbwd", 3, 8, 4, 2, 2) == 32 * (4 + 8) + 3 * (16 + 8) * 2
    assert bytes_moved("glu", "bwd", 3, 8, 4, 2, 2) == 4 * 32 * 2 + 3 * (16 + 4) * 2


def test_flops_match_spec_formula():
    assert flops("mglu", "fwd", 1, 4096, 11008, 4) == 450_887_680  # 2*1*11008*4096*5
    assert flops("glu", "fwd", 1, 4096, 11008, 4) == 180_355_072  # 4*1*11008*4096
    assert flops("mglu", "fwd", 2048, 4096, 11008, 4) == 923_417_968_640
    # SPEC §3: backward is n+1 products for dx and n+1 for dW
    assert flops("mglu", "bwd", 5, 8, 4, 3) == 2 * flops("mglu", "fwd", 5, 8, 4, 3)
    assert flops("mglu", "fwdbwd", 5, 8, 4, 3) == 3 * flops("mglu", "fwd", 5, 8, 4, 3)
    assert flops("glu", "fwdbwd", 5, 8, 4, 3) == 3 * 4 * 5 * 4 * 8


def test_param_bytes():
    b = cases.param_bytes(4096, 11008, 4, 2)
    assert b["swiglu"] == 2 * 11008 * 4096 * 2
    assert b["mglu_packed"] == 11008 * 4096 * 2 + 4 * 11008 * 512
    assert b["mglu_training"] == 11008 * 4096 * 2 * 5
    # d_model not a multiple of 8 pads each mask row to whole bytes
    assert cases.param_bytes(9, 1, 1, 2)["mglu_packed"] == 18 + 2


# -- statistics and cache control -----------------------------------------------------

def test_percentile_hand_values():
    s = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert harness.percentile(s, 50) == 3.0
    assert harness.percentile(s, 20) == pytest.approx(1.8)
    assert harness.percentile(s, 80) == pytest.approx(4.2)
    assert harness.percentile([7.0], 80) == 7.0
    assert harness.percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(ValueError):
        harness.percentile([], 50)


def test_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 101):
        s = rng.exponential(size=n).tolist()
        for q in (0, 20, 50, 80, 100):
            assert harness.percentile(s, q) == pytest.approx(np.percentile(s, q))


def test_timing_properties():
    t = harness.Timing([10.0, 30.0, 20.0, 40.0, 50.0], copies=1, l2_cold=None)
    assert (t.median_us, t.p20_us, t.p80_us) == (30.0, pytest.approx(18.0), pytest.approx(42.0))


def test_rotation_copies():
    l2 = 50 * 2**20
    assert harness.rotation_copies(113 * 2**20, l2) == (2, True)
    assert harness.rotation_copies(4 * l2, l2) == (1, True)
    assert harness.rotation_copies(1, l2) == (harness.MAX_COPIES, False)
    assert harness.rotation_copies(10**9, 0) == (1, None)


def test_sample_indices_cover_edges():
    from mglu.bench.checks import sample

    idx = sample(1000, 64)
    assert idx[0] == 0 and idx[-1] == 999 and len(idx) <= 64
    assert torch.equal(idx, torch.unique(idx))
    assert torch.equal(sample(10, 64), torch.arange(10))


# -- correct before timed ---------------------------------------------------------------

def _fake(monkeypatch, forward):
    calls = {"n": 0}

    def counted(*a):
        calls["n"] += 1
        return forward(*a)

    monkeypatch.setitem(REGISTRY, "triton", Backend(name="triton", reasons=lambda p: [], forward=counted))
    return calls


def _rows(path):
    return json.loads(path.read_text())["rows"]


def test_wrong_backend_is_failed_not_timed(monkeypatch, tmp_path):
    torch_fwd = REGISTRY["torch"].forward
    calls = _fake(monkeypatch, lambda x, w, p, a: torch_fwd(x, w, p, a) * 1.01)
    out = tmp_path / "r.json"
    assert run_cli(TINY + ["--backends", "triton", "--baselines", "none", "--json", str(out)]) == 1
    (row,) = _rows(out)
    assert row["runner"] == "triton" and row["status"] == "failed"
    assert "out rel err" in row["reason"] and row["median_us"] is None
    assert calls["n"] == 1


def test_backend_skipping_elements_is_failed(monkeypatch, tmp_path):
    torch_fwd = REGISTRY["torch"].forward

    def half_written(x, w, p, a):
        full = torch_fwd(x, w, p, a)
        out = new_output(full.shape, full.dtype, full.device)
        out[:, : full.shape[1] // 2] = full[:, : full.shape[1] // 2]
        return out

    calls = _fake(monkeypatch, half_written)
    out = tmp_path / "r.json"
    assert run_cli(TINY + ["--backends", "triton", "--baselines", "none", "--json", str(out)]) == 1
    (row,) = _rows(out)
    assert row["status"] == "failed" and "NaN" in row["reason"] and calls["n"] == 1
    assert row["check"]["out"]["rel_error"] == "inf"  # strict JSON: no bare Infinity
    json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_correct_backend_is_timed(monkeypatch, tmp_path):
    calls = _fake(monkeypatch, REGISTRY["torch"].forward)
    out = tmp_path / "r.json"
    assert run_cli(TINY + ["--backends", "triton", "--baselines", "none", "--json", str(out)]) == 0
    (row,) = _rows(out)
    assert row["status"] == "ok" and row["median_us"] > 0 and calls["n"] > row["reps"]


def test_raising_backend_is_a_failed_row(monkeypatch, tmp_path):
    def boom(*a):
        raise RuntimeError("kernel exploded")

    _fake(monkeypatch, boom)
    out = tmp_path / "r.json"
    assert run_cli(TINY + ["--backends", "triton", "--baselines", "none", "--json", str(out)]) == 1
    (row,) = _rows(out)
    assert row["status"] == "failed" and "kernel exploded" in row["reason"]


def test_unavailable_backend_only_when_asked(tmp_path):
    device = torch.device("cpu")
    case = Case(24, 40, 2, 2, "float32", "silu", "fwd")
    cfg = cli.resolve(parse(TINY))
    assert "cuda" not in [t.runner.name for t in sweep.plan([case], [], cfg["backends"], False, device, {})]
    out = tmp_path / "r.json"
    assert run_cli(TINY + ["--backends", "torch,cuda", "--baselines", "none", "--json", str(out)]) == 0
    rows = {r["runner"]: r for r in _rows(out)}
    assert rows["torch"]["status"] == "ok"
    assert rows["cuda"]["status"] == "unavailable" and "needs a CUDA tensor" in rows["cuda"]["reason"]


@pytest.mark.parametrize("mode", ["bwd", "fwdbwd"])
def test_training_modes_check_every_gradient(tmp_path, mode):
    out = tmp_path / "r.json"
    # torch alone: the kernel backends' interpreted/simulated rows cost CI ~10 s each here
    assert run_cli(TINY + ["--mode", mode, "--baselines", "naive,swiglu", "--backends", "torch",
                           "--json", str(out)]) == 0
    rows = {r["runner"]: r for r in _rows(out)}
    want = {"dx", "dW", "dS"} | ({"out"} if mode == "fwdbwd" else set())
    assert set(rows["torch"]["check"]) == want and set(rows["naive"]["check"]) == want
    assert {"dx", "dWg", "dWu"} <= set(rows["swiglu"]["check"])


# -- outputs --------------------------------------------------------------------------

def test_json_has_documented_fields(tmp_path):
    out = tmp_path / "sub" / "r.json"
    assert run_cli(TINY + ["--n-masks", "1,2", "--baselines", "naive,swiglu", "--backends", "torch",
                            "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    for key in ("schema", "date", "git_commit", "git_dirty", "command", "versions", "device", "limits", "args",
                "memory", "rows"):
        assert key in doc, key
    assert doc["date"].endswith("+00:00") and doc["versions"]["torch"] == torch.__version__
    assert doc["limits"]["copy_GBps"] > 0 and doc["limits"]["matmul_TFLOPs"]["float32"] > 0
    assert doc["device"]["name"] and doc["args"]["preset"] == "quick"
    assert {m["n_masks"] for m in doc["memory"]} == {1, 2}
    rows = doc["rows"]
    # two n_masks blocks of swiglu + naive + torch; swiglu measured once and repeated
    assert [(r["n_masks"], r["runner"]) for r in rows] == [
        (1, "swiglu"), (1, "naive"), (1, "torch"), (2, "swiglu"), (2, "naive"), (2, "torch")]
    assert rows[0]["median_us"] == rows[3]["median_us"]
    for r in rows:
        assert r["status"] == "ok" and r["p20_us"] <= r["median_us"] <= r["p80_us"]
        t = r["median_us"] * 1e-6
        assert r["GBps"] == pytest.approx(r["bytes"] / t / 1e9)
        assert r["pct_copy_bw"] == pytest.approx(100 * r["GBps"] / doc["limits"]["copy_GBps"])
        assert r["TFLOPs"] == pytest.approx(r["flops"] / t / 1e12)
        assert r["pct_matmul"] == pytest.approx(100 * r["TFLOPs"] / doc["limits"]["matmul_TFLOPs"]["float32"])
        assert r["peak_mem_bytes"] is None  # CPU: n/a
    by = {(r["n_masks"], r["runner"]): r for r in rows}
    for n in (1, 2):
        torch_row = by[(n, "torch")]
        assert torch_row["speedup_vs_swiglu"] == pytest.approx(by[(n, "swiglu")]["median_us"] / torch_row["median_us"])
        assert torch_row["speedup_vs_naive"] == pytest.approx(by[(n, "naive")]["median_us"] / torch_row["median_us"])


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.png"
    assert run_cli(TINY + ["--tokens", "1,3", "--baselines", "swiglu", "--backends", "torch", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_prints_rows_and_memory(capsys):
    assert run_cli(TINY + ["--baselines", "naive", "--backends", "torch"]) == 0
    text = capsys.readouterr().out
    assert "d_model=24 d_ff=40 tokens=2 n_masks=2 float32 fwd silu" in text
    assert "naive" in text and "torch" in text and "Memory per layer" in text and "%BW" in text


def test_finish_speedups_and_paper_ratio():
    case = Case(2048, 8192, 1, 4, "float16", "silu", "fwd")
    mk = lambda name, kind, fam, t: sweep.Row(  # noqa: E731
        2048, 8192, 1, 4, "float16", "silu", "fwd", name, kind, fam, "decode", "ok", median_us=t)
    raw = [mk("swiglu", "baseline", "glu", 50.0), mk("naive", "baseline", "mglu", 400.0),
           mk("torch", "backend", "mglu", 100.0)]
    rows = sweep.finish(raw, [case], paper=True)
    by = {r.runner: r for r in rows}
    assert by["torch"].speedup_vs_swiglu == 0.5 and by["torch"].speedup_vs_naive == 4.0
    paper = cases.PAPER_H100_MS[(2048, 8192)][4]
    assert by["torch"].paper_ms == paper["flash"] and by["naive"].paper_ms == paper["naive"]
    assert by["swiglu"].paper_ratio == pytest.approx(0.05 / paper["glu"])
    text = report.format_paper(rows, "NVIDIA H100 80GB HBM3")
    assert "device time on NVIDIA H100 80GB HBM3" in text
    assert re.search(r"2048x8192\s+4\s+torch\s+0\.0428\s+0\.1000\s+2\.34\s+0\.0485\s+0\.0500\s+1\.03", text)


def test_no_paper_comparison_off_cuda():
    case = Case(2048, 8192, 1, 4, "float16", "silu", "fwd")
    row = sweep.Row(2048, 8192, 1, 4, "float16", "silu", "fwd", "naive", "baseline", "mglu", "decode", "ok",
                    median_us=400.0)
    rows = sweep.finish([row], [case], paper=False)
    assert rows[0].paper_ms is None and rows[0].paper_ratio is None
    assert report.format_paper(rows, "cpu") == ""


# -- presets and help -------------------------------------------------------------------

SPEC_SHAPES = {(2048, 8192), (4096, 14336), (4096, 11008), (8192, 28672)}


def test_presets_are_the_spec_sweeps():
    p = cases.PRESETS
    assert set(p) == {"paper", "decode", "prefill", "quick"}
    assert set(p["paper"].shapes) == {(2048, 8192), (4096, 14336)}
    assert p["paper"].tokens == (1,) and p["paper"].n_masks == (1, 2, 4, 8) and p["paper"].dtypes == ("float16",)
    assert set(p["decode"].shapes) == SPEC_SHAPES and p["decode"].tokens == (1, 4, 16, 64)
    assert set(p["prefill"].shapes) == SPEC_SHAPES and p["prefill"].tokens == (2048, 8192)


def test_paper_table_covers_its_cases():
    for shape in ((2048, 8192), (4096, 14336)):
        table = cases.PAPER_H100_MS[shape]
        assert set(table) == {1, 2, 4, 8}
        naive = [table[n]["naive"] for n in (1, 2, 4, 8)]
        assert naive == sorted(naive) and all(table[n]["flash"] <= table[n]["glu"] for n in table)
    c = Case(4096, 14336, 1, 8, "float16", "silu", "fwd")
    assert c.paper_ms("mglu", "backend") == cases.PAPER_H100_MS[(4096, 14336)][8]["flash"]
    assert Case(4096, 14336, 1, 8, "bfloat16", "silu", "fwd").paper_ms("glu", "baseline") is None
    assert Case(4096, 14336, 4, 8, "float16", "silu", "fwd").paper_ms("glu", "baseline") is None


def test_help_lists_every_option_and_preset():
    p = argparse.ArgumentParser(prog="mglu bench")
    cli.add_arguments(p)
    text = p.format_help()
    for opt in ("--preset", "--quick", "--shapes", "--tokens", "--n-masks", "--dtype", "--backends", "--baselines",
                "--eager",
                "--activation", "--mode", "--device", "--rep-ms", "--json", "--plot"):
        assert opt in text, opt
    for word in ("paper", "decode", "prefill", "quick", "fwd", "bwd", "fwdbwd"):
        assert word in text, word


def test_default_preset_without_cuda_is_quick(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = cli.resolve(parse([]))
    assert cfg["preset"] == "quick" and cfg["device"].type == "cpu"
    assert {(c.d_model, c.d_ff) for c in cfg["cases"]} == set(cases.PRESETS["quick"].shapes)
    assert cli.resolve(parse(["--preset", "paper", "--n-masks", "3"]))["cases"][0].n_masks == 3


@pytest.mark.parametrize("argv, message", [
    (["--backends", "nope"], "--backends: unknown nope"), (["--baselines", "slow"], "--baselines: unknown slow"),
    (["--shapes", "12by3"], "--shapes: expected D_MODELxD_FF"), (["--n-masks", "17"], "--n-masks: n_masks must be in 1..16"),
    (["--tokens", "0"], "--tokens: expected positive integers"), (["--quick", "--preset", "paper"], "--quick conflicts"),
    (["--dtype", "int8"], "--dtype: unknown 'int8'"), (["--rep-ms", "0"], "--rep-ms: expected a positive number")])
def test_bad_arguments_exit_2(argv, message, capsys):
    assert run_cli(["--device", "cpu"] + argv) == 2
    assert f"mglu bench: {message}" in capsys.readouterr().err


def test_cuda_device_without_cuda_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_cli(["--device", "cuda"]) == 2
    assert "mglu bench: --device cuda: CUDA is not available on this machine" in capsys.readouterr().err


def test_progress_bar_on_tty_only():
    class Stream:
        def __init__(self, tty):
            self.tty, self.text = tty, ""

        def isatty(self):
            return self.tty

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    tty, pipe = Stream(True), Stream(False)
    for s in (tty, pipe):
        bar = report.Progress(3, stream=s)
        for _ in range(3):
            bar.update("x")
        bar.close()
    assert tty.text.count("\r") == 3 and "3/3 rows" in tty.text
    assert pipe.text == ""  # short sweep, not a terminal: silent


def test_eager_rows_time_the_public_op_forward_only(tmp_path):
    out = tmp_path / "b.json"
    args = TINY + ["--backends", "torch", "--baselines", "none", "--eager", "--json", str(out)]
    assert run_cli(args) == 0
    rows = {r["runner"]: r for r in _rows(out)}
    assert rows["torch eager"]["kind"] == "eager" and rows["torch eager"]["status"] == "ok"
    assert rows["torch"]["kind"] == "backend"
    assert run_cli(args + ["--mode", "fwdbwd"]) == 0
    rows = {r["runner"]: r for r in _rows(out)}
    assert rows["torch eager"]["status"] == "unavailable" and "forward" in rows["torch eager"]["reason"]


def test_git_state_names_the_commit_from_the_environment_when_set(monkeypatch):
    from mglu.bench.report import git_state

    monkeypatch.delenv("MGLU_GIT_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_state()[0] == (head or "unknown")
    monkeypatch.setenv("MGLU_GIT_COMMIT", "c0ffee")
    assert git_state() == ("c0ffee", None)
