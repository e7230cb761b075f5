"""The wait a user feels on the CPU: a cold ``explain FILE`` from process start to exit, each further file end to end
with ``--dicom``, the engine's part of it, and what lies around the engine (process start, imports, model loading,
reading, writing each output), in seconds and in units of one ResNet-18 forward and backward pass at 224 px
measured in the same run, so that the targets hold on any machine (issue 22).

    .venv/bin/python Testing/benchmarks/wait.py [--repeats 3] [--files 6]

It needs only the files committed in the repository (the bundled sample and the test DICOM files): the sample is
an 8-bit CR radiograph in JPEG baseline, the 15-bit CR in JPEG 2000 lossless is the reading case. Run it on a quiet
machine: other processes on the same cores change every figure (the table records the load average at the start).
Writes ``results/wait.json`` and ``results/wait.md`` (the table it prints) beside this file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAMPLE = ROOT / "ChestXrayCounterfactual" / "Resources" / "SampleData" / "nih_chest_pa_cardiomegaly.dcm"
SAMPLES = (
    SAMPLE,
    ROOT / "ChestXrayCounterfactual" / "Resources" / "SampleData" / "chest_pa_cr_jpeg_baseline.dcm",
    ROOT / "Testing" / "data" / "chest_pa_cr_monochrome1_15bit_j2k_lossless.dcm",
)
#: Targets in units (issue 22): a cold explain, each further file with --dicom (median), the engine's part.
TARGET_UNITS = {"cold_explain": 55, "further_file_dicom": 20, "engine": 11}
#: What the engine imports for a cold ``explain`` (the CLI, the pipeline, the writers).
IMPORTS = (
    "import ChestXrayCounterfactualLib.runs.cli, ChestXrayCounterfactualLib.explain.pipeline, "
    "ChestXrayCounterfactualLib.outputs.folder"
)


def unit_seconds(repeats: int = 20) -> float:
    """The median time of one ResNet-18 forward and backward pass at 224 px, batch 1, on this process's threads."""
    import torch
    import torchvision

    model, x = torchvision.models.resnet18(), torch.randn(1, 3, 224, 224)
    times = []
    for _ in range(repeats + 3):
        started = time.perf_counter()
        model(x).sum().backward()
        times.append(time.perf_counter() - started)
    return statistics.median(times[3:])


def wall(command: list[str]) -> float:
    """Seconds ``command`` takes from start to exit (it must succeed)."""
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - started


def cold(repeats: int, out: Path) -> dict[str, float]:
    """Median wall seconds of a fresh process: doing nothing, importing the engine, and ``explain SAMPLE``."""
    python = sys.executable
    runs = {
        "process_start": [python, "-c", "pass"],
        "imports": [python, "-c", IMPORTS],
        "cold_explain": [python, "-m", "ChestXrayCounterfactualLib", "explain", str(SAMPLE), "--out", str(out),
                         "--overwrite"],
    }
    return {name: statistics.median(wall(command) for _ in range(repeats)) for name, command in runs.items()}


def warm(files: int, out: Path) -> dict:
    """In one process: loading the model set, reading each sample, then the sample explained ``files`` + 1 times
    one after another with ``--dicom`` as the CLI does (``explain_files``, each into its own folder), each timed end
    to end from the previous file's result to its own (the first apart: it carries first-call costs); the engine's
    stages and the writing of each output timed apart. The other samples have no finding above its threshold.
    """
    from ChestXrayCounterfactualLib.explain.pipeline import Explainer
    from ChestXrayCounterfactualLib.explain.stages import STAGES
    from ChestXrayCounterfactualLib.inputs.reader import read_radiograph
    from ChestXrayCounterfactualLib.modelset import load_model_set
    from ChestXrayCounterfactualLib.options import ExplainOptions
    from ChestXrayCounterfactualLib.outputs import folder
    from ChestXrayCounterfactualLib.runs.files import explain_files

    started = time.perf_counter()
    explainer = Explainer(load_model_set())
    load = time.perf_counter() - started
    reading = {}
    for path in SAMPLES:
        times = []
        for _ in range(3):
            began = time.perf_counter()
            read_radiograph(path)
            times.append(time.perf_counter() - began)
        reading[path.name] = statistics.median(times)
    stamps = [time.perf_counter()]
    results = explain_files(
        [SAMPLE] * (files + 1), out, explainer, ExplainOptions(dicom=True, overwrite=True),
        on_result=lambda _: stamps.append(time.perf_counter()),
    )
    per_file = [b - a for a, b in itertools.pairwise(stamps)]
    records = [r.record for r in results[1:] if r.record]
    stages = {key: statistics.median(r["seconds"][key] for r in records) for key in records[0]["seconds"]}
    explanation = explainer.explain(read_radiograph(SAMPLE), ExplainOptions())
    radiograph, scratch = explanation.radiograph, out / "writers"
    scratch.mkdir(parents=True, exist_ok=True)
    writers = {
        "nrrd_volumes": lambda: [
            folder.write_volume(scratch / f"{name}.nrrd", getattr(explanation, name), radiograph, None)
            for name in ("counterfactual", "saliency", "difference")
        ],
        "overview_png": lambda: folder.write_overview(scratch / "overview.png", explanation),
        "frames_gif": lambda: folder.write_gif(scratch / "frames.gif", explanation),
        "dicom": lambda: folder.write_dicom_outputs(scratch / f"dicom{time.perf_counter_ns()}", explanation, False),
    }
    writing = {}
    for name, write in writers.items():
        times = []
        for _ in range(3):
            began = time.perf_counter()
            write()
            times.append(time.perf_counter() - began)
        writing[name] = statistics.median(times)
    return {
        "load_model_set": load,
        "read": reading,
        "first_file": per_file[0],
        "further_files": per_file[1:],
        "further_file_dicom": statistics.median(per_file[1:]),
        "engine": sum(stages[stage] for stage in STAGES),
        "engine_stages": {stage: stages[stage] for stage in STAGES},
        "write": writing,
        "statuses": [r.status for r in results],
    }


def markdown(report: dict) -> str:
    """The tables of a report: the targets in units, then what lies around the engine."""
    unit, figures = report["unit_seconds"], report["figures"]
    lines = [
        (
            f"Date {report['date']}, commit {report['commit']}, {report['cpus']} CPUs (load average "
            f"{report['load_average']} at the start), torch threads {report['torch_threads']}; one unit (ResNet-18 "
            f"forward and backward at 224 px, batch 1) = {unit * 1000:.0f} ms here."
        ),
        "",
        "| figure | seconds | units | target units | met |",
        "|---|---|---|---|---|",
    ]
    for name, target in TARGET_UNITS.items():
        units = figures[name] / unit
        lines.append(f"| {name.replace('_', ' ')} | {figures[name]:.2f} | {units:.1f} | ≤ {target} | "
                     f"{'yes' if units <= target else 'no'} |")
    lines += ["", "| part | seconds | units |", "|---|---|---|"]
    parts = {
        "process start (python -c pass)": figures["process_start"],
        "imports (fresh process, minus its start)": figures["imports"] - figures["process_start"],
        "loading the model set": figures["load_model_set"],
        **{f"reading {name}": seconds for name, seconds in figures["read"].items()},
        **{f"engine: {stage}": seconds for stage, seconds in figures["engine_stages"].items()},
        **{f"writing {name.replace('_', ' ')}": seconds for name, seconds in figures["write"].items()},
    }
    lines += [f"| {name} | {seconds:.3f} | {seconds / unit:.1f} |" for name, seconds in parts.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per cold figure (median)")
    parser.add_argument("--files", type=int, default=6, help="further files explained after the first")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    import torch

    load_average = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    scratch = Path(tempfile.mkdtemp(prefix="wait-"))
    try:
        unit = unit_seconds()
        figures = {**cold(args.repeats, scratch / "cold"), **warm(args.files, scratch / "warm")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, cwd=ROOT,
    ).stdout.strip()
    report = {
        "date": date.today().isoformat(),
        "commit": commit,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": load_average,
        "torch_threads": torch.get_num_threads(),
        "unit_seconds": unit,
        "figures": figures,
        "units": {name: figures[name] / unit for name in TARGET_UNITS},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wait.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown(report)
    (args.out / "wait.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
