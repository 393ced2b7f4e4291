"""scripts/ncu_decode.py --summarize: Nsight Compute's CSV (details page) into one table,
a column per profiled launch, kernels by short name, ncu's own log lines skipped."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ncu_decode.py"
HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size",'
          '"Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"')


def row(launch, kernel, metric, unit, value):
    return f'"{launch}","1","p","h","{kernel}","1","7","(128,1,1)","(2752,1,1)","0","9.0","SOL","{metric}","{unit}","{value}"'


def test_summary_has_a_column_per_launch_and_a_line_per_metric(tmp_path):
    csv = tmp_path / "ncu.csv"
    csv.write_text("\n".join([
        "==PROF== Connected to process 1",
        "numba: rel err 2.05e-04 (bound 2.0e-03) ok",
        HEADER,
        row(0, "cudapy::mglu::decode_wide$241(Array<int, 1>)", "Duration", "us", "45.8"),
        row(0, "cudapy::mglu::decode_wide$241(Array<int, 1>)", "DRAM Throughput", "%", "52.3"),
        row(1, "void mglu_rowdot_gemv<mglu_f16, 4, 0, 1, 2>(const T*)", "Duration", "us", "41.3"),
        row(2, "fwd_gemv", "DRAM Throughput", "%", "64.1"),
    ]) + "\n")
    out = subprocess.run([sys.executable, str(SCRIPT), "--summarize", str(csv)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "launch: 0=decode_wide; 1=mglu_rowdot_gemv<mglu_f16, 4, 0, 1, 2>; 2=fwd_gemv"
    duration = next(line for line in out if line.startswith("Duration")).split()
    assert duration[-3:] == ["45.8", "41.3", "-"]  # launch 2 has no Duration: a dash, not a shifted column
    dram = next(line for line in out if line.startswith("DRAM Throughput")).split()
    assert dram[-3:] == ["52.3", "-", "64.1"]
