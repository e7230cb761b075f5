"""The device benchmark (``Testing/benchmarks/throughput.py --device``) runs its code path on whatever device torch
has (``auto``: the CPU here): explain_batch in a fresh process, explanations a second, the device's memory peak where
it is a CUDA card, and each method's best batch size against the issue's GPU goal.
"""

from __future__ import annotations

import json
import subprocess
import sys

from ChestXrayCounterfactualLib.modelset import resolve_device
from conftest import ROOT, shared


def test_the_device_benchmark_runs_on_the_device_torch_has(tmp_path):
    data = shared("nih", "images").parents[1]
    command = [
        sys.executable, str(ROOT / "Testing" / "benchmarks" / "throughput.py"), "--data", str(data),
        "--device", "auto", "--images", "2", "--batch-sizes", "2", "--methods", "latent-shift", "--out", str(tmp_path),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    report = json.loads((tmp_path / "throughput_device.json").read_text(encoding="utf-8"))
    device = resolve_device("auto").device
    (row,) = report["results"]
    assert (row["method"], row["batch_size"], row["explained"], row["device"]) == ("latent-shift", 2, 2, str(device))
    assert row["wall_seconds"] > 0 and row["flipped"] == 2
    assert (row["device_peak_memory_mb"] is None) == (device.type != "cuda")
    table = (tmp_path / "throughput_device.md").read_text(encoding="utf-8")
    assert "| latent-shift | 2 |" in table and "latent-shift: best" in table and "goal ≥ 500/s" in table
