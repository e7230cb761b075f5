"""The wait a user feels on the CPU: a cold ``explain FILE`` from process start to exit, each further file end to end
with ``--dicom``, the engine's part of it, and what lies around the engine (process start, imports, model loading,
reading, writing each output), in seconds and in units of one ResNet-18 forward and backward pass at 224 px
measured in the same run (before and after the rest, the mean of the two), so that the targets hold on any machine
(issue 22).

    .venv/bin/python Testing/benchmarks/wait.py [--repeats 3] [--files 6]

It needs only the files committed in the repository (the bundled sample and the test DICOM files): the sample is
an 8-bit CR radiograph in JPEG baseline, the 15-bit CR in JPEG 2000 lossless is the reading case. Run it on a quiet
machine: other processes on the same cores change every figure (the table records the load average at the start).
Writes ``results/wait.json`` and ``results/wait.md`` (the table it prints) beside this file.
"""

from __future__ import annotations

import argparse
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


#: Every unit this process measured, for the report's range.
UNITS_SEEN: list[float] = []


def unit_seconds(repeats: int = 8) -> float:
    """The median time of one ResNet-18 forward and backward pass at 224 px, batch 1, on this process's threads
    (kept in ``UNITS_SEEN``).
    """
    import torch
    import torchvision

    model, x = torchvision.models.resnet18(), torch.randn(1, 3, 224, 224)
    times = []
    for _ in range(repeats + 2):
        started = time.perf_counter()
        model(x).sum().backward()
        times.append(time.perf_counter() - started)
    UNITS_SEEN.append(statistics.median(times[2:]))
    return UNITS_SEEN[-1]


def in_units(pairs: list[tuple[float, float]]) -> dict[str, float]:
    """Median seconds and median units of (seconds, the unit measured just before) pairs: each figure is divided by
    the unit of its own moment, since a shared machine's speed drifts between measurements.
    """
    return {
        "seconds": statistics.median(seconds for seconds, _ in pairs),
        "units": statistics.median(seconds / unit for seconds, unit in pairs),
    }


def wall(command: list[str]) -> float:
    """Seconds ``command`` takes from start to exit (it must succeed)."""
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - started


def cold(repeats: int, out: Path) -> dict[str, dict[str, float]]:
    """A fresh process doing nothing, importing the engine, and running ``explain SAMPLE``: each timed ``repeats``
    times from start to exit, right after a unit.
    """
    python = sys.executable
    runs = {
        "process_start": [python, "-c", "pass"],
        "imports": [python, "-c", IMPORTS],
        "cold_explain": [python, "-m", "ChestXrayCounterfactualLib", "explain", str(SAMPLE), "--out", str(out),
                         "--overwrite"],
    }
    pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, command in runs.items():
            unit = unit_seconds()
            pairs[name].append((wall(command), unit))
    return {name: in_units(measured) for name, measured in pairs.items()}


def timed(function) -> tuple[float, float]:
    """(seconds ``function()`` takes, the unit measured just before)."""
    unit = unit_seconds()
    started = time.perf_counter()
    function()
    return time.perf_counter() - started, unit


def warm(files: int, out: Path) -> dict:
    """In one process: loading the model set, reading each sample, then the sample explained ``files`` + 1 times
    one after another with ``--dicom`` as the CLI does (``explain_files``, each into its own folder), each timed end
    to end (the first apart: it carries first-call costs), with the engine's part of it; then the writing of each
    output. Every figure comes with the unit measured just before it. The other samples have no finding above its
    threshold, so they are only read.
    """
    from ChestXrayCounterfactualLib.explain.pipeline import Explainer
    from ChestXrayCounterfactualLib.explain.stages import STAGES
    from ChestXrayCounterfactualLib.inputs.reader import read_radiograph
    from ChestXrayCounterfactualLib.modelset import load_model_set
    from ChestXrayCounterfactualLib.options import ExplainOptions
    from ChestXrayCounterfactualLib.outputs import folder
    from ChestXrayCounterfactualLib.runs.files import explain_files

    loaded: list = []
    load = timed(lambda: loaded.append(Explainer(load_model_set())))
    explainer = loaded[0]
    reading = {path.name: in_units([timed(lambda p=path: read_radiograph(p)) for _ in range(3)]) for path in SAMPLES}
    options = ExplainOptions(dicom=True, overwrite=True)
    results: list = []
    per_file = [timed(lambda k=k: results.extend(explain_files([SAMPLE], out / str(k), explainer, options)))
                for k in range(files + 1)]
    engine = [
        (sum(r.record["seconds"][stage] for stage in STAGES), unit)
        for r, (_, unit) in zip(results[1:], per_file[1:], strict=True)
    ]
    stages = {stage: statistics.median(r.record["seconds"][stage] for r in results[1:]) for stage in STAGES}
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
    return {
        "load_model_set": in_units([load]),
        "read": reading,
        "first_file": in_units(per_file[:1]),
        "further_files_seconds": [seconds for seconds, _ in per_file[1:]],
        "further_file_dicom": in_units(per_file[1:]),
        "engine": in_units(engine),
        "engine_stages": stages,
        "write": {name: in_units([timed(write) for _ in range(3)]) for name, write in writers.items()},
        "statuses": [r.status for r in results],
    }


def markdown(report: dict) -> str:
    """The tables of a report: the targets in units, then what lies around the engine."""
    figures = report["figures"]
    lines = [
        (
            f"Date {report['date']}, commit {report['commit']}, {report['cpus']} CPUs (load average "
            f"{report['load_average']} at the start), torch threads {report['torch_threads']}; one unit (ResNet-18 "
            f"forward and backward at 224 px, batch 1, median of 8) was measured before every figure: "
            f"{min(report['units_seen']) * 1000:.0f} to {max(report['units_seen']) * 1000:.0f} ms in this run."
        ),
        "",
        "| figure | median s | median units | target units | met |",
        "|---|---|---|---|---|",
    ]
    for name, target in TARGET_UNITS.items():
        figure = figures[name]
        lines.append(f"| {name.replace('_', ' ')} | {figure['seconds']:.2f} | {figure['units']:.1f} | ≤ {target} | "
                     f"{'yes' if figure['units'] <= target else 'no'} |")
    lines += ["", "| part | median s | median units |", "|---|---|---|"]
    parts = {
        "process start (python -c pass)": figures["process_start"],
        "imports (a fresh process that only imports the engine)": figures["imports"],
        "loading the model set": figures["load_model_set"],
        **{f"reading {name}": figure for name, figure in figures["read"].items()},
        **{f"writing {name.replace('_', ' ')}": figure for name, figure in figures["write"].items()},
    }
    lines += [f"| {name} | {f['seconds']:.3f} | {f['units']:.1f} |" for name, f in parts.items()]
    lines += ["", "| engine stage (further files) | median s |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.3f} |" for stage, seconds in figures["engine_stages"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per cold figure (median)")
    parser.add_argument("--files", type=int, default=6, help="further files explained after the first")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    import torch
    from provenance import commit_label

    load_average = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    scratch = Path(tempfile.mkdtemp(prefix="wait-"))
    try:
        figures = {**cold(args.repeats, scratch / "cold"), **warm(args.files, scratch / "warm")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {
        "date": date.today().isoformat(),
        "commit": commit_label(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": load_average,
        "torch_threads": torch.get_num_threads(),
        "units_seen": UNITS_SEEN,
        "figures": figures,
        "units": {name: figures[name]["units"] for name in TARGET_UNITS},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wait.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown(report)
    (args.out / "wait.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
