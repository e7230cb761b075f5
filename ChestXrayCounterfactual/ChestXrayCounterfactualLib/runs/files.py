"""Explain many files into one output folder: the one function behind the CLI's ``explain`` and the
Slicer module's batch use (``ChestXrayCounterfactualLogic.explainFiles``).

The options (:class:`..options.ExplainOptions`) were checked when they were made, before any file is touched. A
file that cannot be read or explained becomes a failed :class:`FileResult` with a one-line reason; the other files
go on. A radiograph with no finding above its threshold, when none was named, is a result: "negative", with every
finding's probability and no output folder.
Every output folder is written atomically (see :func:`..outputs.folder.write_explanation`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ExplainerError, NoFindingError
from ..inputs.dicom import is_dicom_file
from ..explain.records import outcome_line
from ..options import ExplainOptions

_SUFFIXES = (".nii.gz", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd")


@dataclass
class FileResult:
    """What happened to one input: ``status`` is "done", "skipped" (output exists), "negative" (no finding above its
    threshold and none named: nothing to explain, no folder; ``error`` holds the sentence) or "failed".
    ``probabilities`` is the classifier's probability of every finding on the input, where it was classified.
    """

    input: Path
    status: str
    folder: Path | None = None
    record: dict | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for a console or a status bar."""
        if self.status == "failed":
            return f"error: {self.error}"
        if self.status == "negative":
            return f"{self.input}: negative: {self.error}"
        if self.status == "skipped":
            return f"note: {self.input}: {self.folder} exists, skipped (overwrite to redo)"
        assert self.record is not None  # a "done" result always carries its record
        return f"{self.input}: {outcome_line(self.record)} -> {self.folder}"


def output_stem(path: Path) -> str:
    """The input's name without its image suffix (``a.nii.gz`` -> ``a``)."""
    name = path.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_input_file(path: Path) -> bool:
    """Whether an archive folder's file is an input: its name ends in the suffix of a format we read, or it is a
    DICOM Part 10 file by its preamble, whatever its name (PACS exports and DICOM media name images IM000001).
    """
    return path.name.lower().endswith(_SUFFIXES) or is_dicom_file(path)


def describe_error(path: Path, error: BaseException) -> str:
    """The reason a file failed, in one line that names the file."""
    if isinstance(error, ExplainerError):
        return str(error) if str(error).startswith(str(path)) else f"{path}: {error}"
    if isinstance(error, ValueError):
        return f"{path}: {error}"
    return f"{path}: internal error ({type(error).__name__}: {error}); rerun with --debug and report it"


def folder_name(path: Path, used: set[str]) -> str:
    """The name of ``path``'s output folder: its stem, or ``stem-2``, ``stem-3``, ... if ``used`` already holds
    it; the name is added to ``used``. Names depend only on the order inputs are named in, never on which
    finishes first, so a rerun finds the same folders.
    """
    stem = output_stem(path)
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}-{n}", n + 1
    used.add(name)
    return name


def explain_work(
    work: Sequence[tuple[Path, Path]],
    explainer,
    options: ExplainOptions,
    on_error: Callable[[Path, BaseException], None] | None = None,
) -> list[FileResult]:
    """Explain each (input file, output folder) of ``work`` with one batched engine call
    (:meth:`Explainer.explain_batch`), skipping folders that exist (unless ``options.overwrite``); one
    :class:`FileResult` each, in order.

    The step of :func:`explain_files` and of archive runs, for callers that choose folders and schedule files
    themselves. Never raises for a bad file: it becomes a failed result. If
    the batch as a whole fails, its files are explained one by one, so one file cannot fail the others.
    """
    from ..outputs.folder import write_explanation
    from ..inputs.reader import read_radiograph

    results = [FileResult(path, "skipped", folder) for path, folder in work]

    def fail(k: int, error: BaseException) -> None:
        results[k].status, results[k].error = "failed", describe_error(results[k].input, error)
        if on_error:
            on_error(results[k].input, error)

    read, read_seconds = {}, {}
    for k, (path, folder) in enumerate(work):
        if folder.exists() and not options.overwrite:
            continue
        try:
            started = time.perf_counter()
            read[k] = read_radiograph(path)
            read_seconds[k] = time.perf_counter() - started
            results[k].warnings = list(read[k].warnings)
        except Exception as error:  # one broken file must not stop the batch; describe_error words it
            fail(k, error)
    keys = list(read)
    try:
        outcomes: list = explainer.explain_batch([read[k] for k in keys], options) if keys else []
    except Exception:  # retried one by one below, where each file's own error is kept
        outcomes = []
        for k in keys:
            try:
                outcomes += explainer.explain_batch([read[k]], options)
            except Exception as error:  # this file's error, worded by describe_error
                outcomes.append(error)
    for k, outcome in zip(keys, outcomes, strict=True):
        try:
            if isinstance(outcome, NoFindingError):
                results[k].status, results[k].error = "negative", str(outcome)
                results[k].probabilities, results[k].folder = outcome.probabilities, None
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            results[k].probabilities = dict(outcome.probabilities)
            outcome.record_time("read", read_seconds[k])
            results[k].record = write_explanation(
                work[k][1],
                outcome,
                overwrite=options.overwrite,
                anonymize=options.anonymize,
                dicom=options.dicom,
            )
            results[k].warnings = list(outcome.warnings)
            results[k].status = "done"
        except Exception as error:  # one broken file must not stop the batch
            fail(k, error)
    return results


def explain_files(
    paths: Iterable[Path | str],
    out: Path | str,
    explainer=None,
    options: ExplainOptions = ExplainOptions(),
    on_result: Callable[[FileResult], None] | None = None,
    on_error: Callable[[Path, BaseException], None] | None = None,
) -> list[FileResult]:
    """Explain every file into ``out/<input name>/``; one :class:`FileResult` per input, in order.

    ``explainer`` defaults to the bundled model set. ``on_result`` is told each result as it lands
    (for progress); ``on_error`` sees the exception of a failed file (for tracebacks in debug mode).
    """
    from ..explain.pipeline import Explainer

    explainer = explainer or Explainer()
    out = Path(out)
    used: set[str] = set()
    results = []
    for path in map(Path, paths):
        (result,) = explain_work([(path, out / folder_name(path, used))], explainer, options, on_error)
        results.append(result)
        if on_result:
            on_result(result)
    return results
