"""Explain many files into one output folder: the one function behind the CLI's ``explain`` and the
Slicer module's batch use (``ChestXrayCounterfactualLogic.explainFiles``).

Options are checked before any file is touched and a bad one raises ``ValueError`` with a sentence
(never ``SystemExit``, which inside Slicer would close the application). A file that cannot be read
or explained becomes a failed :class:`FileResult` with a one-line reason; the other files go on.
Every output folder is written atomically (see :func:`outputs.write_explanation`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import methods
from .errors import ExplainerError

_SUFFIXES = (".nii.gz", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd")


@dataclass(frozen=True)
class ExplainOptions:
    """What to explain and how; ``None`` means the engine's default."""

    finding: str | None = None
    method: str = methods.DEFAULT_COUNTERFACTUAL
    saliency: str = methods.DEFAULT_SALIENCY
    direction: str | None = None
    frames: int = 8
    overwrite: bool = False
    anonymize: bool = False
    dicom: bool = False

    def check(self) -> None:
        """Raise ``ValueError`` naming the first option that cannot work."""
        methods.check(self.method, self.saliency, self.direction)
        if not isinstance(self.frames, int) or self.frames < 2:
            raise ValueError(f"frames must be a whole number of at least 2, not {self.frames!r}")


@dataclass
class FileResult:
    """What happened to one input: ``status`` is "done", "skipped" (output exists) or "failed"."""

    input: Path
    status: str
    folder: Path | None = None
    record: dict | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a console or a status bar."""
        if self.status == "failed":
            return f"error: {self.error}"
        if self.status == "skipped":
            return f"note: {self.input}: {self.folder} exists, skipped (overwrite to redo)"
        assert self.record is not None  # a "done" result always carries its record
        return f"{self.input}: {outcome_line(self.record)} -> {self.folder}"


def outcome_line(record: Mapping) -> str:
    """"Cardiomegaly p 0.880 -> 0.410 (threshold 0.460, flipped) in 2.3 s" from an explanation's record."""
    flipped = "flipped" if record["flipped"] else "not flipped"
    return (
        f"{record['finding']} p {record['p_original']:.3f} -> {record['p_counterfactual']:.3f} "
        f"(threshold {record['threshold']:.3f}, {flipped}) in {record['seconds']['total']:.1f} s"
    )


def output_stem(path: Path) -> str:
    """The input's name without its image suffix (``a.nii.gz`` -> ``a``)."""
    name = path.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def describe_error(path: Path, error: BaseException) -> str:
    """The reason a file failed, in one line that names the file."""
    if isinstance(error, ExplainerError):
        return str(error) if str(error).startswith(str(path)) else f"{path}: {error}"
    if isinstance(error, ValueError):
        return f"{path}: {error}"
    return f"{path}: internal error ({type(error).__name__}: {error}); rerun with --debug and report it"


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
    options.check()
    from .engine import Explainer
    from .outputs import write_explanation
    from .reader import read_radiograph

    explainer = explainer or Explainer()
    out = Path(out)
    used: set[str] = set()
    results = []
    for path in map(Path, paths):
        stem = output_stem(path)
        name, n = stem, 2
        while name in used:
            name, n = f"{stem}-{n}", n + 1
        used.add(name)
        folder = out / name
        result = FileResult(path, "skipped", folder)
        if not folder.exists() or options.overwrite:
            try:
                started = time.perf_counter()
                radiograph = read_radiograph(path)
                read_seconds = round(time.perf_counter() - started, 4)
                result.warnings = list(radiograph.warnings)
                explanation = explainer.explain(
                    radiograph, options.finding, options.method, options.saliency, options.direction, options.frames,
                )
                explanation.seconds = {"read": read_seconds, **explanation.seconds}
                result.record = write_explanation(
                    folder,
                    explanation,
                    explainer,
                    overwrite=options.overwrite,
                    anonymize=options.anonymize,
                    dicom=options.dicom,
                )
                result.status = "done"
            except Exception as error:  # one broken file must not stop the batch; describe_error words it
                result.status, result.error = "failed", describe_error(path, error)
                if on_error:
                    on_error(path, error)
        results.append(result)
        if on_result:
            on_result(result)
    return results
