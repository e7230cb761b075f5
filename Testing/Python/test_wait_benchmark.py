"""The wait benchmark (``Testing/benchmarks/wait.py``) runs on the files committed in the repository: one cold
``explain`` and one further file, the figures in seconds and in units, every part around the engine measured.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_the_wait_benchmark_measures_every_part_in_units(tmp_path):
    command = [
        sys.executable, str(ROOT / "Testing" / "benchmarks" / "wait.py"), "--repeats", "1", "--files", "1",
        "--out", str(tmp_path),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    report = json.loads((tmp_path / "wait.json").read_text(encoding="utf-8"))
    figures = report["figures"]
    assert report["units_seen"] and all(unit > 0 for unit in report["units_seen"])
    assert figures["statuses"] == ["done", "done"]
    assert set(report["units"]) == {"cold_explain", "further_file_dicom", "engine"}
    seconds = {name: figures[name]["seconds"] for name in ("process_start", "imports", "cold_explain", "engine")}
    assert seconds["process_start"] < seconds["imports"] < seconds["cold_explain"]
    assert 0 < seconds["engine"] < figures["further_file_dicom"]["seconds"]
    assert set(figures["write"]) == {"nrrd_volumes", "overview_png", "frames_gif", "dicom"}
    assert len(figures["read"]) == 3 and all(f["seconds"] > 0 and f["units"] > 0 for f in figures["read"].values())
    table = (tmp_path / "wait.md").read_text(encoding="utf-8")
    assert "| cold explain |" in table and "| further file dicom |" in table and "| engine |" in table
