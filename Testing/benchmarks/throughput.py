"""Throughput of the default explanation (method, saliency and strength of ``methods.py``) on held-out NIH
test images: how many explanations a minute one process and Ray give on the CPU, how many a second a device gives
in batches, and the memory each process needs.

    .venv/bin/python Testing/benchmarks/throughput.py [--images 32] [--batch-sizes 1 8 32]
    .venv/bin/python Testing/benchmarks/throughput.py --quick [--ray]      # a smoke run of a minute or two
    .venv/bin/python Testing/benchmarks/throughput.py --device cuda [--precision bf16]   # the device benchmark
    .venv/bin/python Testing/benchmarks/throughput.py --device cpu --images 2 --batch-sizes 1 2   # its CPU smoke run

Every configuration runs in a fresh process (so each peak memory figure is that configuration's own) and
after a warm-up explanation there (first-call costs excluded):

- single: ``Explainer.explain`` one image at a time, each timed; median and p95 seconds, per-stage medians;
- batch B: ``Explainer.explain_batch`` on the images in batches of B (one process, shared passes);
- archive: ``run_archive`` end to end (reading, explaining, writing every output), in this process and on a
  local Ray instance of ``--workers`` worker processes, timed from the call to its return after a warm-up run;
- peak memory: the process's peak RSS (``getrusage``); for Ray, each worker process's peak (VmHWM), read from
  /proc as results land, the last reading after its final batch.

With ``--device`` it measures only ``explain_batch`` there, per method (``--methods``; default the default method and
Latent Shift, the two the issue sets goals for) and batch size (default 1 8 32 64, on 128 images), each in a fresh
process after one untimed batch of that size: explanations a second, and on a CUDA card the peak memory torch
allocated on it (``torch.cuda.max_memory_allocated``, reset after the warm-up). The same code runs on every device,
the CPU included.

Writes ``results/throughput.json`` and ``results/throughput.md`` (the table it prints) beside this file.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Python"))  # the test suite's process_tree

from ChestXrayCounterfactualLib import Explainer, methods, read_radiograph
from ChestXrayCounterfactualLib.runs.archive import ArchiveProgress, run_archive
from ChestXrayCounterfactualLib.options import ExplainOptions
from ChestXrayCounterfactualLib.explain.stages import STAGES
from ChestXrayCounterfactualLib.modelset import default_weights_dir
from process_tree import titled
from provenance import commit_label

HERE = Path(__file__).resolve().parent
#: The goals: median seconds of one explanation on the 2-core CPU (issue 12), and explanations per second at the best
#: batch size on one data-centre GPU, per method (issue 22).
GOAL_SINGLE_SECONDS = 1.2
GOALS_GPU_PER_SECOND = {"latent-shift": 500, methods.DEFAULT_COUNTERFACTUAL: 100}


@dataclass(frozen=True)
class Settings:
    """What every measuring process is told: the images, what to explain, and how to run the archive."""

    images: list[str]
    finding: str
    archive_batch_size: int
    workers: int
    device: str | None = None  # None: the Explainer's default (the CPU)
    method: str = methods.DEFAULT_COUNTERFACTUAL
    precision: str = methods.DEFAULT_PRECISION

    @property
    def options(self) -> ExplainOptions:
        return ExplainOptions(finding=self.finding, method=self.method, precision=self.precision)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ``ru_maxrss`` in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_medians(seconds: list[dict[str, float]]) -> dict[str, float]:
    """The median seconds of each engine stage over explanations (their ``Explanation.seconds``)."""
    return {stage: float(np.median([s.get(stage, 0.0) for s in seconds])) for stage in (*STAGES, "total")}


def loaded(settings: Settings, warm: int = 1) -> tuple[Explainer, list]:
    """The bundled model set on the settings' device, the images read, and one untimed batch of the first ``warm``
    images (lazy imports, first allocations, the kernels for that batch size).
    """
    explainer = Explainer(device=settings.device)
    radiographs = [read_radiograph(path) for path in settings.images]
    explainer.explain_batch(radiographs[:warm], settings.options)
    return explainer, radiographs


def device_peak_mb(device: torch.device) -> float | None:
    """The peak memory torch allocated on a CUDA ``device`` since the last reset, in MB; None on another device."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def measure_single(settings: Settings) -> dict:
    """``explain`` one image at a time: the single-explanation figure (reading the file not included)."""
    explainer, radiographs = loaded(settings)
    walls, stages, flipped = [], [], 0
    for radiograph in radiographs:
        start = time.perf_counter()
        explanation = explainer.explain(radiograph, settings.options)
        walls.append(time.perf_counter() - start)
        stages.append(explanation.seconds)
        flipped += explanation.flipped
    return {
        "configuration": "single: explain, one image at a time",
        "explained": len(walls),
        "flipped": flipped,
        "wall_seconds": sum(walls),
        "per_explanation_seconds": walls,
        "stage_medians": stage_medians(stages),
        "torch_threads": torch.get_num_threads(),
        "peak_memory_mb": peak_rss_mb(),
    }


def measure_batch(settings: Settings, size: int) -> dict:
    """``explain_batch`` on the images in batches of ``size``; each batch's seconds shared by its images. With a
    device, the warm-up is a whole batch and a CUDA card's memory peak is that of the timed batches.
    """
    explainer, radiographs = loaded(settings, size if settings.device else 1)
    if explainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(explainer.device)
    walls, per_explanation, stages, flipped = [], [], [], 0
    for start in range(0, len(radiographs), size):
        batch = radiographs[start : start + size]
        began = time.perf_counter()
        outcomes = explainer.explain_batch(batch, settings.options)
        walls.append(time.perf_counter() - began)
        per_explanation += [walls[-1] / len(batch)] * len(batch)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome  # --finding names the finding, so every image of the test split is explained
            stages.append(outcome.seconds)
            flipped += outcome.flipped
    return {
        "configuration": f"batch {size}: explain_batch, one process",
        "method": settings.method,
        "batch_size": size,
        "device": str(explainer.device),
        "device_warning": explainer.device_warning,
        "explained": len(per_explanation),
        "flipped": flipped,
        "wall_seconds": sum(walls),
        "per_explanation_seconds": per_explanation,
        "stage_medians": stage_medians(stages),
        "torch_threads": torch.get_num_threads(),
        "peak_memory_mb": peak_rss_mb(),
        "device_peak_memory_mb": device_peak_mb(explainer.device),
    }


def worker_peaks(peaks: dict[int, float]) -> None:
    """Update ``peaks`` (pid -> MB) with the VmHWM of every Ray archive worker below this process; Ray titles
    them ``ray::ArchiveWorker`` (``.explain`` while busy). VmHWM only grows, so the last reading is the peak.
    """
    for pid in titled(b"ray::ArchiveWorker"):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # ended while we looked: its last reading stands
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[pid] = max(peaks.get(pid, 0.0), int(line.split()[1]) / 1024)


def manifest(folder: Path, images: list[str]) -> Path:
    """A CSV manifest (the ``path`` column ``run_archive`` reads) of ``images`` in ``folder``."""
    path = folder / "manifest.csv"
    path.write_text("path\n" + "".join(f"{image}\n" for image in images), encoding="utf-8")
    return path


def flips(out: Path) -> int:
    """How many inputs of an archive run's index crossed the threshold."""
    with (out / "index.csv").open(newline="", encoding="utf-8") as file:
        return sum(row["status"] == "done" and row["flipped"] == "True" for row in csv.DictReader(file))


def measure_archive(settings: Settings, ray: bool) -> dict:
    """``run_archive`` end to end into a temporary folder, after a warm-up run of one image; with ``ray``, on a
    local Ray instance started first (its start is timed apart, not in the rate) with ``settings.workers``
    workers, each worker's peak memory read from /proc at every result (the last after its final batch).
    """
    address = f"local:{settings.workers}" if ray else None
    workers = settings.workers if ray else None
    peaks: dict[int, float] = {}
    ray_start = None
    if ray:
        import ray as ray_module

        from ChestXrayCounterfactualLib.runs.ray_actors import init_arguments

        began = time.perf_counter()
        ray_module.init(**init_arguments(address))  # run_archive then uses this instance and leaves it running
        ray_start = time.perf_counter() - began
    try:
        with tempfile.TemporaryDirectory(prefix="throughput-") as temporary:
            folder = Path(temporary)
            (folder / "warm").mkdir()
            run_archive(
                manifest(folder / "warm", settings.images[:1]), folder / "warm" / "out", settings.options,
                ray_address=address, workers=workers, batch_size=settings.archive_batch_size,
            )

            def sample(progress: ArchiveProgress) -> None:
                worker_peaks(peaks)

            warm: dict[int, float] = {}
            worker_peaks(warm)  # the warm-up run's workers, if any is still exiting: not this run's
            began = time.perf_counter()
            tally = run_archive(
                manifest(folder, settings.images), folder / "out", settings.options, ray_address=address,
                workers=workers, batch_size=settings.archive_batch_size, progress=sample if ray else None,
            )
            wall = time.perf_counter() - began
            flipped = flips(folder / "out")
            peaks = {pid: mb for pid, mb in peaks.items() if pid not in warm}
    finally:
        if ray:
            ray_module.shutdown()
    where = f"Ray local, {settings.workers} workers" if ray else "in this process"
    return {
        "configuration": f"archive, {where}: run_archive, batch {settings.archive_batch_size}, outputs written",
        "explained": tally.explained,
        "failed": tally.failed,
        "flipped": flipped,
        "wall_seconds": wall,
        "per_explanation_seconds": [wall / max(tally.explained, 1)],
        "torch_threads": None if ray else torch.get_num_threads(),
        "peak_memory_mb": max(peaks.values()) if ray else peak_rss_mb(),
        "driver_peak_memory_mb": peak_rss_mb() if ray else None,
        "worker_peak_memory_mb": sorted(peaks.values()) if ray else None,
        "workers_lost": tally.workers_lost,
        "ray_start_seconds": ray_start,
    }


def _child(send: Connection, function: Callable[..., dict], arguments: tuple) -> None:
    try:
        send.send(function(*arguments))
    except Exception:  # the parent raises it, with this traceback
        send.send(traceback.format_exc())
    finally:
        send.close()


def in_fresh_process(function: Callable[..., dict], *arguments: object) -> dict:
    """``function(*arguments)`` in a new (spawned) Python process, so its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, function, arguments))
    process.start()
    send.close()
    try:
        outcome = receive.recv()
    except EOFError:
        outcome = None
    process.join()
    if not isinstance(outcome, dict):
        raise RuntimeError(f"{function.__name__} failed in its process (exit code {process.exitcode}):\n{outcome}")
    return outcome


def gpu_line() -> str:
    """Where the GPU figures are: not in the CPU table; measured with ``--device cuda`` if torch sees a card."""
    if not torch.cuda.is_available():
        return "GPU: none visible to torch on this machine; not measured."
    return f"GPU: {torch.cuda.get_device_name(0)} present; measure it with --device cuda."


def cpu_name() -> str:
    """The processor's model name from /proc/cpuinfo (``platform.processor()`` is empty on most Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text(encoding="utf-8").splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def test_images(data: Path, splits: Path, count: int) -> list[str]:
    """The first ``count`` test-split NIH images present under ``data``, by file name (absolute paths)."""
    with splits.open(newline="", encoding="utf-8") as file:
        test = sorted(row["file"] for row in csv.DictReader(file) if row["split"] == "test")
    images = data / "nih" / "images"
    return [str(images / name) for name in test if (images / name).exists()][:count]


def summary_row(result: dict) -> dict:
    """One table row of a measurement: explanations/min from its wall time, median and p95 s per explanation."""
    seconds = result["per_explanation_seconds"]
    return {
        "per_minute": 60 * result["explained"] / result["wall_seconds"],
        "median_seconds": float(np.median(seconds)),
        "p95_seconds": float(np.percentile(seconds, 95)) if len(seconds) > 1 else None,
    }


def markdown(report: dict) -> str:
    """The table of a report, with the machine and the engine's per-stage medians."""
    m = report["machine"]
    lines = [
        (
            f"Date {report['date']}, commit {report['commit']}, {m['cpu']}, {m['cpus']} CPUs (load average "
            f"{m['load_average']} at the start), torch {m['torch']}, torch threads per process: {m['torch_threads']}, "
            f"Python {m['python']}; {report['images']} test images, {report['finding']}, "
            f"{report['method']} / {report['saliency']} / {report['strength']}."
        ),
        "",
        "| configuration | explanations/min | median s/explanation | p95 s | peak memory MB | flipped | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in report["results"]:
        row = summary_row(result)
        p95 = f"{row['p95_seconds']:.2f}" if row["p95_seconds"] is not None else "\N{EN DASH}"
        notes = []
        if result.get("worker_peak_memory_mb"):
            workers = ", ".join(f"{mb:.0f}" for mb in result["worker_peak_memory_mb"])
            notes.append(f"per worker {workers} MB, driver {result['driver_peak_memory_mb']:.0f} MB")
        if result.get("ray_start_seconds") is not None:
            notes.append(f"Ray start {result['ray_start_seconds']:.1f} s, not in the rate")
        if result.get("failed") or result.get("workers_lost"):
            notes.append(f"{result['failed']} failed, {result['workers_lost']} workers lost")
        if result["configuration"].startswith("archive"):
            notes.append("median = wall ÷ images")
        lines.append(
            f"| {result['configuration']} | {row['per_minute']:.1f} | {row['median_seconds']:.2f} | {p95} | "
            f"{result['peak_memory_mb']:.0f} | {result['flipped']}/{result['explained']} | {'; '.join(notes)} |",
        )
    engine = [r for r in report["results"] if "stage_medians" in r]
    lines += [
        "",
        "| stage, median s per explanation | " + " | ".join(r["configuration"].split(":")[0] for r in engine) + " |",
        "|---|" + "---|" * len(engine),
    ]
    for stage in (*STAGES, "total"):
        lines.append(f"| {stage} | " + " | ".join(f"{r['stage_medians'][stage]:.3f}" for r in engine) + " |")
    single = next((r for r in report["results"] if r["configuration"].startswith("single")), None)
    lines += [""]
    if single:
        median = summary_row(single)["median_seconds"]
        verdict = "met" if median <= GOAL_SINGLE_SECONDS else "not met"
        caveat = "" if m["cpus"] == 2 else f"; measured on {m['cpus']} CPUs, not 2"
        lines.append(
            f"Goal, single explanation ≤ {GOAL_SINGLE_SECONDS} s median on the 2-core CPU: {median:.2f} s "
            f"({verdict}{caveat}).",
        )
    lines.append(f"{report['gpu']} ({goals()})")
    return "\n".join(lines) + "\n"


def goals() -> str:
    """The GPU goals, as a sentence."""
    each = " and ".join(f"≥ {goal} {method}" for method, goal in GOALS_GPU_PER_SECOND.items())
    return f"Goals on one data-centre GPU: {each} explanations/s at the best batch size."


def device_markdown(report: dict) -> str:
    """The device benchmark's table: explanations a second per method and batch size, memory, and each method's
    best batch size against its goal.
    """
    m = report["machine"]
    lines = [
        (
            f"Date {report['date']}, commit {report['commit']}, device {report['device']} ({m['device_name']}), "
            f"{m['cpus']} CPUs (load average {m['load_average']} at the start), torch {m['torch']}, Python "
            f"{m['python']}; {report['images']} test images, {report['finding']}, saliency {report['saliency']}, "
            f"strength {report['strength']}, precision {report['precision']}."
        ),
        "",
        "| method | batch | explanations/s | s per explanation (median) | device memory MB | peak RSS MB | flipped |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in report["results"]:
        row = summary_row(result)
        device_mb = result["device_peak_memory_mb"]
        device = "\N{EN DASH}" if device_mb is None else f"{device_mb:.0f}"
        lines.append(
            f"| {result['method']} | {result['batch_size']} | {row['per_minute'] / 60:.2f} | "
            f"{row['median_seconds']:.3f} | {device} | "
            f"{result['peak_memory_mb']:.0f} | {result['flipped']}/{result['explained']} |",
        )
    lines.append("")
    for method in dict.fromkeys(result["method"] for result in report["results"]):
        rates = {r["batch_size"]: summary_row(r)["per_minute"] / 60 for r in report["results"] if r["method"] == method}
        best = max(rates, key=lambda size: rates[size])
        goal = GOALS_GPU_PER_SECOND.get(method)
        if goal is None:
            verdict = "no goal set"
        elif report["device"].startswith("cuda"):
            verdict = f"goal ≥ {goal}/s: {'met' if rates[best] >= goal else 'not met'}"
        else:
            verdict = f"goal ≥ {goal}/s on one data-centre GPU; not judged on {report['device']}"
        lines.append(f"{method}: best {rates[best]:.2f} explanations/s at batch {best} ({verdict}).")
    warnings = {r["device_warning"] for r in report["results"] if r["device_warning"]}
    lines += [f"Device: {warning}." for warning in sorted(warnings)]
    return "\n".join(lines) + "\n"


def arguments() -> argparse.Namespace:
    """The command line: the CPU table's options, and ``--device`` for the device benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    parser.add_argument("--splits", type=Path, default=default_weights_dir() / "splits.csv")
    parser.add_argument("--images", type=int, help="test images to explain (default 32; --quick: 4; --device: 128)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+",
        help="explain_batch sizes (default 1 8 32; --quick: 1 2; --device: 1 8 32 64)",
    )
    parser.add_argument("--finding", default="Cardiomegaly", help="explained on every image, present or not")
    parser.add_argument("--archive-batch-size", type=int, default=8, help="run_archive's batch size (the CLI's)")
    parser.add_argument("--workers", type=int, default=2, help="Ray worker processes (local:N)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 images, batch sizes 1 2, no Ray")
    parser.add_argument("--ray", action="store_true", help="with --quick: measure Ray too")
    parser.add_argument(
        "--device", type=methods.check_device,
        help=f"measure only explain_batch, on this device: {methods.DEVICE_HELP}",
    )
    parser.add_argument(
        "--methods", nargs="+", choices=list(methods.COUNTERFACTUAL_METHODS),
        help=f"with --device: the methods measured (default {methods.DEFAULT_COUNTERFACTUAL} latent-shift)",
    )
    parser.add_argument("--precision", choices=list(methods.PRECISIONS), default=methods.DEFAULT_PRECISION)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    return parser.parse_args()


def plan(args: argparse.Namespace, settings: Settings) -> list[tuple[Callable[..., dict], tuple]]:
    """The configurations to measure, each a function and its arguments: with ``--device``, ``explain_batch`` per
    method and batch size; else one image at a time, the batch sizes, the archive and (unless quick) Ray.
    """
    if args.device:
        sizes = args.batch_sizes or [1, 8, 32, 64]
        chosen = args.methods or [methods.DEFAULT_COUNTERFACTUAL, "latent-shift"]
        return [(measure_batch, (replace(settings, method=method), size)) for method in chosen for size in sizes]
    sizes = args.batch_sizes or ([1, 2] if args.quick else [1, 8, 32])
    parts: list[tuple[Callable[..., dict], tuple]] = [(measure_single, (settings,))]
    parts += [(measure_batch, (settings, size)) for size in sizes]
    parts += [(measure_archive, (settings, False))]
    if not args.quick or args.ray:
        parts += [(measure_archive, (settings, True))]
    return parts


def device_name(device: str | None) -> str:
    """The card's name for a CUDA device torch sees, else the processor's."""
    if device and device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def main() -> None:
    args = arguments()
    if not (args.data / "nih" / "images").is_dir():
        print(f"throughput: skipped, no NIH images at {args.data / 'nih' / 'images'} (give --data DIR)")
        return
    count = args.images or (128 if args.device else 4 if args.quick else 32)
    images = test_images(args.data, args.splits, count)
    if len(images) < count:
        raise SystemExit(f"only {len(images)} test-split images under {args.data}, {count} asked for")
    settings = Settings(
        images, args.finding, args.archive_batch_size, args.workers, args.device, precision=args.precision,
    )
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    results = []
    for function, arguments_ in plan(args, settings):
        began = time.perf_counter()
        results.append(in_fresh_process(function, *arguments_))
        row = summary_row(results[-1])
        print(
            f"{results[-1].get('method', methods.DEFAULT_COUNTERFACTUAL)} {results[-1]['configuration']}: "
            f"{row['per_minute']:.1f} explanations/min ({row['per_minute'] / 60:.2f}/s), median "
            f"{row['median_seconds']:.2f} s, peak {results[-1]['peak_memory_mb']:.0f} MB "
            f"({time.perf_counter() - began:.0f} s with loading and warm-up)",
            flush=True,
        )
    report = {
        "date": date.today().isoformat(),
        "commit": commit_label(),
        "machine": {
            "cpu": cpu_name(),
            "device_name": device_name(results[0].get("device")),
            "cpus": len(os.sched_getaffinity(0)),
            "load_average": load,
            "torch": torch.__version__,
            "torch_threads": results[0]["torch_threads"],
            "python": platform.python_version(),
        },
        "device": results[0].get("device", "cpu") if args.device else "cpu",
        "images": len(images),
        "finding": args.finding,
        "method": methods.DEFAULT_COUNTERFACTUAL,
        "saliency": methods.DEFAULT_SALIENCY,
        "strength": methods.DEFAULT_STRENGTH,
        "precision": args.precision,
        "gpu": gpu_line(),
        "results": results,
    }
    table = device_markdown(report) if args.device else markdown(report)
    name = "throughput_device" if args.device else "throughput"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{name}.md").write_text(table, encoding="utf-8")
    print()
    print(table, end="")


if __name__ == "__main__":
    main()
