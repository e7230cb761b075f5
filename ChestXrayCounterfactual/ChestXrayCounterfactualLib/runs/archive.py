"""Explain a whole archive (a folder of radiographs or a CSV manifest) into one output folder, resumably, in
this process or on a Ray cluster: the engine behind ``python -m ChestXrayCounterfactualLib batch``.

Each input gets the folder and files :func:`.files.explain_files` would give it, written the same way (by
:func:`.files.explain_work`, atomically), plus a row in ``OUT/index.csv`` (see :mod:`.index`). Folder
names are fixed before any work starts, from the whole input list in order (and from the index of an earlier
run, whose inputs keep their folders), so they never depend on which worker finishes first. A rerun skips
every input whose folder is complete and retries those that failed; the index ends with one row per input.
Beside it the run writes ``OUT/site_summary.json`` (see :mod:`.site_summary`): how often each finding was called
positive here against the model set's expected rate, and the inputs' out-of-distribution scores.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .index import NAME, IndexAppender, Row, make_row, probabilities_text, read_index, rewrite_index
from ..methods import check_device
from ..options import ExplainOptions
from .files import FileResult, explain_work, folder_name, is_input_file
from .site_summary import NAME as SUMMARY_NAME, load_reference, summarise, write_summary
from ..errors import ArchiveError

#: The manifest column that lists the inputs (relative paths are relative to the manifest's folder).
PATH_COLUMN = "path"
RECORD = "explanation.json"  # written last, inside the folder that is renamed into place: present = complete


@dataclass(frozen=True)
class ArchiveInput:
    """One input of a run: ``key`` is how it is listed (its path relative to the archive folder, or as the
    manifest writes it) and names it in the index; ``path`` is where it is read; ``folder`` its output folder.
    """

    key: str
    path: Path
    folder: Path


@dataclass
class ArchiveProgress:
    """Where a run stands, given to the ``progress`` callback after each row and each lost worker.

    ``done`` counts inputs with a complete result (this run's and earlier ones'; ``negative`` of them had no finding
    to explain), ``explained`` only this run's explanations.
    A call is about either ``last``, the row that just landed, or ``message``, a sentence on a lost worker or on the
    device the models could not run on. ``site_warnings`` are the sentences of the run's site summary (see
    :mod:`.site_summary`), set when the run ends.
    """

    total: int
    done: int = 0
    negative: int = 0
    failed: int = 0
    explained: int = 0
    workers_lost: int = 0
    last: Row | None = None
    message: str | None = None
    site_warnings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def count(self, row: Row) -> None:
        self.last, self.message = row, None
        if row["status"] == "failed":
            self.failed += 1
        else:
            self.done += 1
            self.negative += row["status"] == "negative"

    def rate(self) -> float:
        """Explanations made by this run per minute since it started."""
        return self.explained / max(time.monotonic() - self.started, 1e-9) * 60

    def line(self) -> str:
        """One line such as "12/100 done (3 negative), 1 failed, 3.2 explanations/min" (and lost workers, if any)."""
        lost = f", {self.workers_lost} workers lost (their inputs resent)" if self.workers_lost else ""
        negative = f" ({self.negative} negative)" if self.negative else ""
        rate = f"{self.rate():.1f} explanations/min"
        return f"{self.done}/{self.total} done{negative}, {self.failed} failed, {rate}{lost}"


def list_inputs(source: Path, out: Path) -> list[tuple[str, Path]]:
    """(key, path) of every input ``source`` names, in order, each once: a folder's image files (by suffix, or
    DICOM files by their preamble; recursively, sorted by relative path; hidden entries and ``out`` left out), or
    a manifest's ``path`` column.
    """
    if source.is_dir():
        return _folder_inputs(source, out)
    if source.is_file() and source.suffix.lower() == ".csv":
        return _manifest_inputs(source)
    raise ArchiveError(f"{source}: neither a folder nor a .csv manifest")


def _folder_inputs(folder: Path, out: Path) -> list[tuple[str, Path]]:
    top = folder.resolve()
    if out.resolve() == top:
        raise ArchiveError(f"{out}: the output folder cannot be the archive folder itself (use a subfolder)")
    skip = PurePosixPath(out.resolve().relative_to(top).as_posix()) if out.resolve().is_relative_to(top) else None
    keys = []
    for directory, subdirectories, files in os.walk(top):
        relative = PurePosixPath(Path(directory).relative_to(top).as_posix())
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".") and relative / d != skip]
        keys += [
            str(relative / name)
            for name in files
            if not name.startswith(".") and is_input_file(Path(directory) / name)
        ]
    return [(key, folder / key) for key in sorted(keys)]


def _manifest_inputs(manifest: Path) -> list[tuple[str, Path]]:
    with manifest.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        if PATH_COLUMN not in (reader.fieldnames or []):
            raise ArchiveError(f"{manifest}: no '{PATH_COLUMN}' column (it has: {', '.join(reader.fieldnames or [])})")
        keys = [row[PATH_COLUMN].strip() for row in reader if (row[PATH_COLUMN] or "").strip()]
    return [(key, manifest.parent / key) for key in dict.fromkeys(keys)]


def plan(inputs: list[tuple[str, Path]], out: Path, previous: Mapping[str, Row]) -> list[ArchiveInput]:
    """Every input with its output folder: the one an earlier run's index gave it, else its stem made unique
    in input order (as :func:`.files.explain_files` names them), never a name already taken.
    """
    kept: dict[str, str] = {}
    used: set[str] = set()
    for key, _ in inputs:
        name = previous[key]["folder"] if key in previous else ""
        if name and Path(name).name == name and not name.startswith(".") and name not in used:
            kept[key] = name
            used.add(name)
    return [ArchiveInput(key, path, out / (kept.get(key) or folder_name(path, used))) for key, path in inputs]


def _record_row(item: ArchiveInput, status: str, record: Mapping) -> Row:
    ood = record.get("out_of_distribution")
    return make_row(
        input=item.key,
        status=status,
        finding=record["finding"],
        p_original=record["p_original"],
        p_counterfactual=record["p_counterfactual"],
        flipped=record["flipped"],
        seconds=record["seconds"]["total"],
        folder=item.folder.name,
        probabilities=probabilities_text(record.get("probabilities_original", {})),
        ood_score=ood["score"] if ood else "",
    )


def _folder_row(item: ArchiveInput, status: str) -> Row:
    """The row of an input whose folder is already there, from its record."""
    try:
        record = json.loads((item.folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        error = f"{item.folder} exists but holds no readable {RECORD}; move it away or rerun with --overwrite"
        return make_row(input=item.key, status="failed", error=error, folder=item.folder.name)
    return _record_row(item, status, record)


def _result_row(item: ArchiveInput, result: FileResult) -> Row:
    if result.status == "failed":
        return make_row(input=item.key, status="failed", error=result.error, folder=item.folder.name)
    if result.status == "negative":
        probabilities = probabilities_text(result.probabilities)
        return make_row(input=item.key, status="negative", error=result.error, probabilities=probabilities)
    if result.status == "skipped":  # completed by a worker that died before it could report it
        return _folder_row(item, "done")
    assert result.record is not None  # a "done" result always carries its record
    return _record_row(item, "done", result.record)


def _finished(row: Row | None, item: ArchiveInput) -> bool:
    """Whether an earlier run's ``row`` says ``item`` was finished into its folder."""
    return row is not None and row["status"] in ("done", "skipped") and row["folder"] == item.folder.name


def _still_negative(row: Row | None, options: ExplainOptions) -> bool:
    """Whether an earlier run's ``row`` found the input negative and these options would find it so again (no
    finding named, nothing to add, not told to redo everything).
    """
    undirected = options.finding is None and options.direction != "add"
    return row is not None and row["status"] == "negative" and undirected and not options.overwrite


def _explain_here(
    work: list[tuple[Path, Path]],
    options: ExplainOptions,
    models: str | Path | None,
    device: str | None,
    batch_size: int,
    warn: Callable[[str], None],
) -> Generator[tuple[int, FileResult], None, None]:
    """The in-process executor: the model set loaded once on ``device`` (only if there is work; ``warn`` is told
    why it is on the CPU if it could not go there), batches one after another.
    """
    from ..explain.pipeline import Explainer
    from ..modelset import load_model_set

    explainer = Explainer(load_model_set(models, device)) if work else None
    if explainer is not None and explainer.device_warning:
        warn(explainer.device_warning)
    for start in range(0, len(work), batch_size):
        for offset, result in enumerate(explain_work(work[start : start + batch_size], explainer, options)):
            yield start + offset, result


def _remove_leftovers(out: Path, planned: list[ArchiveInput]) -> None:
    """Delete the hidden partial folders (``.NAME.partial-PID``, see :func:`..outputs.folder.write_explanation`) that
    killed workers left for this run's inputs; called when no worker of the run is writing any more.
    """
    names = {item.folder.name for item in planned}
    for entry in out.iterdir():
        name, marker, _ = entry.name[1:].rpartition(".partial-")
        if entry.name.startswith(".") and marker and name in names and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def run_archive(
    inputs: str | Path,
    out: str | Path,
    options: ExplainOptions = ExplainOptions(),
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    batch_size: int = 8,
    models: str | Path | None = None,
    device: str | None = None,
    gpus_per_worker: float = 1.0,
    progress: Callable[[ArchiveProgress], None] | None = None,
) -> ArchiveProgress:
    """Explain every input that ``inputs`` (a folder or a CSV manifest) names into ``out``; returns the final tally.

    Files are explained in batches of ``batch_size`` (one batched engine call each). Without ``ray_address`` the
    batches are explained here, one after another (Ray is not imported). With it (``auto``, a cluster's address,
    or ``local:N`` for a local instance of N worker processes) they go to ``workers`` Ray actors (default: one
    per GPU if ``device`` may use one, else per CPU of the cluster), each loading ``models`` (a spec or weights
    folder as ``--models`` takes; default the bundled set) once. The models run on ``device`` (as
    :func:`..modelset.load_model_set` takes it); one that cannot be used is reported through ``progress``, and the
    CPU used; on Ray, an actor whose device is a GPU reserves ``gpus_per_worker`` of one (a fraction shares a
    card among actors). Inputs and ``out`` must lie at the same path on every node. Raises
    :class:`ArchiveError` (or ``ValueError`` for a bad option) if the run cannot start; a bad input is a failed
    row, never an exception. At the end the site summary of all the index's rows is written (for a model set with a
    model card) and its warnings put in the tally's ``site_warnings``.
    """
    if (workers is not None and workers < 1) or batch_size < 1:
        raise ValueError(f"workers and batch size must be at least 1, not {workers} and {batch_size}")
    if not 0 < gpus_per_worker <= 1:
        raise ValueError(f"GPUs per worker must be more than 0 and at most 1, not {gpus_per_worker}")
    if device is not None:
        check_device(device)
    if ray_address is not None and importlib.util.find_spec("ray") is None:
        raise ArchiveError("Ray is not installed: pip install 'chestxraycounterfactual[archive]' (or ray)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    previous = read_index(out / NAME)
    planned = plan(list_inputs(Path(inputs), out), out, previous)
    tally = ArchiveProgress(total=len(planned))
    rows: dict[str, Row] = {}
    appender = IndexAppender(out / NAME)

    def land(key: str, row: Row) -> None:
        rows[key] = row
        if previous.get(key) != row:
            appender.append(row)
        tally.count(row)
        if progress:
            progress(tally)

    def warn(message: str) -> None:
        tally.last, tally.message = None, message
        if progress:
            progress(tally)

    def lost(message: str) -> None:
        tally.workers_lost += 1
        warn(message)

    try:
        todo = []
        for item in planned:
            if _still_negative(previous.get(item.key), options):
                land(item.key, previous[item.key])
            elif options.overwrite or not (item.folder / RECORD).exists():
                todo.append(item)
            elif _finished(previous.get(item.key), item):
                land(item.key, previous[item.key])
            else:
                land(item.key, _folder_row(item, "skipped"))
        work = [(item.path, item.folder) for item in todo]
        results: Generator[tuple[int, FileResult], None, None]
        if ray_address is None or not work:
            results = _explain_here(work, options, models, device, batch_size, warn)
        else:
            from .ray_actors import explain_on_ray

            results = explain_on_ray(
                work,
                options,
                address=ray_address,
                models=models,
                device=device,
                gpus_per_worker=gpus_per_worker,
                workers=workers,
                batch_size=batch_size,
                on_worker_lost=lost,
                on_warning=warn,
            )
        with closing(results):  # stops the workers (and a Ray instance started here) even if landing a row fails
            for position, result in results:
                row = _result_row(todo[position], result)
                tally.explained += row["status"] == "done"
                land(todo[position].key, row)
    finally:
        appender.close()
    final = [rows[item.key] for item in planned]
    rewrite_index(out / NAME, final)
    _remove_leftovers(out, planned)
    reference = load_reference(models)
    if reference is not None:
        summary = summarise(final, reference)
        write_summary(out / SUMMARY_NAME, summary)
        tally.site_warnings = summary["warnings"]
    return tally
