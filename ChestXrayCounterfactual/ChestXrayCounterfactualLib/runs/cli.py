"""Command line: ``python -m ChestXrayCounterfactualLib predict|explain FILE...`` and ``batch FOLDER|CSV``.

A file that cannot be read or explained gets one line on stderr naming it and the reason; the
other files are still processed, and the exit code is 1 if any failed (130 if interrupted).
``--debug`` shows tracebacks instead. ``batch`` explains an archive, resumably, optionally on Ray
(see :mod:`.archive`); its progress goes to stderr and its results to ``OUT/index.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from dataclasses import fields
from pathlib import Path

from .. import methods
from ..errors import ExplainerError
from ..options import DEFAULT_FRAMES, ExplainOptions
from .files import describe_error, explain_files


def _add_choice(parser: argparse.ArgumentParser, flag: str, what: str, choices: dict[str, str], default: str) -> None:
    """An option taking one of ``choices`` (name: what it does), with its default and every choice in its help."""
    parser.add_argument(
        flag, choices=list(choices), default=default, help=f"{what} (default {default}): " + methods.help_text(choices),
    )


def add_options(parent: argparse.ArgumentParser) -> None:
    """One flag per field of :class:`ExplainOptions` (``--finding``, ``--method``, ... ``--dicom``), read back by
    :func:`options_from`; the command line's ``explain`` and ``batch`` and Slicer's headless script offer these.
    """
    parent.add_argument("--finding", help="finding to explain (default: the most probable above its threshold)")
    counterfactual = methods.COUNTERFACTUAL_METHODS
    _add_choice(parent, "--method", "counterfactual method", counterfactual, methods.DEFAULT_COUNTERFACTUAL)
    _add_choice(parent, "--saliency", "saliency method", methods.SALIENCY_METHODS, methods.DEFAULT_SALIENCY)
    parent.add_argument(
        "--direction",
        choices=methods.DIRECTIONS,
        help="remove or add the finding (default: remove if present, add if absent)",
    )
    parent.add_argument(
        "--strength",
        choices=list(methods.STRENGTHS),
        help=f"how far the counterfactual goes (default {methods.DEFAULT_STRENGTH} where the model set stores typical "
        "probabilities, else threshold): " + methods.help_text(methods.STRENGTHS),
    )
    parent.add_argument(
        "--frames",
        type=int,
        default=DEFAULT_FRAMES,
        help="frames of the animation, at most (the default method shows its search's steps: fewer if it took fewer)",
    )
    _add_choice(parent, "--precision", "arithmetic of the search", methods.PRECISIONS, methods.DEFAULT_PRECISION)
    parent.add_argument("--overwrite", action="store_true", help="redo inputs whose output folder exists")
    parent.add_argument("--anonymize", action="store_true", help="keep no DICOM UIDs or input folder in the outputs")
    parent.add_argument(
        "--dicom",
        action="store_true",
        help="also write DICOM: the counterfactual, difference, saliency and a structured report as new series "
        "of the input's study (dicom/ in each output folder)",
    )


def options_from(args: argparse.Namespace) -> ExplainOptions:
    """The options :func:`add_options` parsed; raises ``ValueError`` for a combination that cannot work.
    A PACS destination (``--send``/``--stow``, where the parser has them) implies ``--dicom``.
    """
    values = {option.name: getattr(args, option.name) for option in fields(ExplainOptions)}
    values["dicom"] = values["dicom"] or bool(getattr(args, "send", None) or getattr(args, "stow", None))
    return ExplainOptions(**values)


def _device(request: str) -> str:
    """``--device``'s value checked (:func:`..methods.check_device`), so a bad one is a usage error."""
    try:
        return methods.check_device(request)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``: where the models run. A model-loading option like ``--models``, not an :class:`ExplainOptions`
    field: what is explained and how does not depend on it, and results are the same numpy arrays on every device.
    """
    parser.add_argument(
        "--device",
        type=_device,
        default=methods.DEFAULT_DEVICE,
        help=f"where the models run: {methods.DEVICE_HELP} (default {methods.DEFAULT_DEVICE}); one that this "
        "machine cannot run on is named in a warning and the CPU is used",
    )


def _explain_options() -> argparse.ArgumentParser:
    """The options ``explain`` and ``batch`` share (a parent parser): ``--out``, :func:`add_options`, ``--device``
    and the PACS destinations.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--out", required=True, type=Path, help="output folder; one subfolder per input")
    add_options(parent)
    _add_device(parent)
    _add_delivery_options(parent)
    return parent


def _add_delivery_options(parser: argparse.ArgumentParser) -> None:
    """``--send`` and ``--stow``: where the DICOM objects go once written (each implies ``--dicom``)."""
    parser.add_argument(
        "--send",
        action="append",
        default=[],
        metavar="AET@HOST:PORT",
        help="send the DICOM outputs to this DICOM node by C-STORE (implies --dicom; repeatable)",
    )
    parser.add_argument(
        "--stow",
        action="append",
        default=[],
        metavar="URL",
        help="store the DICOM outputs at this DICOMweb service by STOW-RS, e.g. http://pacs:8042/dicom-web "
        "(implies --dicom; repeatable)",
    )


def _targets(args: argparse.Namespace) -> list:
    """The checked ``--send``/``--stow`` destinations (:class:`SendError` for a malformed one)."""
    from ..outputs.pacs import destinations

    return destinations(args.send, args.stow)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ChestXrayCounterfactualLib",
        description="Findings, saliency and counterfactual explanations of chest X-rays "
        "(research and education, not for diagnosis).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--models", help="model-set spec (JSON) or weights folder (default: the bundled models)")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export-torchscript", help="write the model set as TorchScript files and a spec")
    export.add_argument("--out", required=True, type=Path)
    predict = sub.add_parser("predict", help="probability of every finding")
    predict.add_argument("files", nargs="+", type=Path)
    predict.add_argument("--json", action="store_true", help="print one JSON document")
    _add_device(predict)
    shared = _explain_options()
    explain = sub.add_parser("explain", parents=[shared], help="saliency map and counterfactual for one finding")
    explain.add_argument("files", nargs="+", type=Path)
    batch = sub.add_parser(
        "batch",
        parents=[shared],
        help="explain an archive into --out, with OUT/index.csv; a rerun does only what is missing or failed",
    )
    batch.add_argument(
        "input", type=Path, nargs="?", help="a folder (searched recursively) or a CSV manifest with a path column",
    )
    _add_pull_options(batch)
    batch.add_argument(
        "--ray",
        metavar="auto|ADDRESS|local:N",
        help="run on Ray: the running cluster (auto), the one at ADDRESS, or a local one with N worker processes "
        "(default: in this process, without Ray)",
    )
    batch.add_argument("--workers", type=int, help="Ray actors (default: one per GPU, else per CPU of the cluster)")
    batch.add_argument("--batch-size", type=int, default=8, help="inputs sent to a Ray actor at a time (default 8)")
    batch.add_argument(
        "--gpus-per-worker",
        type=float,
        default=1.0,
        help="share of a GPU each Ray actor reserves when --device is cuda or auto on a cluster with GPUs "
        "(default 1; 0.5: two actors per card)",
    )
    return parser


def _add_pull_options(batch: argparse.ArgumentParser) -> None:
    """``batch --pull URL``: the inputs come from a DICOMweb service instead of a folder (see :mod:`.pacs_pull`)."""
    batch.add_argument(
        "--pull",
        metavar="URL",
        help="explain radiographs pulled from this DICOMweb service (QIDO-RS/WADO-RS) instead of INPUT; "
        "send the results back with --stow URL or --send",
    )
    batch.add_argument("--study", action="append", default=[], metavar="UID", help="a study to pull (repeatable)")
    batch.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pull the studies this QIDO-RS filter matches, e.g. ModalitiesInStudy=CR (repeatable)",
    )


def _pulled(args: argparse.Namespace, folder: Path) -> Path:
    """The batch's input: INPUT, or (with --pull) ``folder`` filled from the DICOMweb service."""
    from .pacs_pull import parse_query, pull

    if (args.input is None) == (args.pull is None):
        raise ValueError("give either INPUT (a folder or CSV) or --pull URL")
    if args.pull is None:
        if args.study or args.query:
            raise ValueError("--study and --query choose what --pull URL pulls; give --pull too")
        return args.input
    if not (args.study or args.query):
        raise ValueError("--pull needs --study UID or --query KEY=VALUE (which studies to pull)")
    count = pull(args.pull, folder, args.study, parse_query(args.query))
    _say(f"pulled {count} radiographs from {args.pull}")
    return folder


def _progress(items: list, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, file=sys.stderr, unit="file", dynamic_ncols=True)


def _say(message: str) -> None:
    """One line on stderr, on its own line even while a progress bar is drawn."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "batch":
        return _batch(args)
    if args.command == "explain":
        try:
            options = options_from(args)  # checked before any model is loaded
            _targets(args)
        except (ValueError, ExplainerError) as error:
            parser.error(str(error))
    from ..explain.pipeline import Explainer
    from ..modelset import export_torchscript, load_model_set

    def fail(path: Path, error: BaseException) -> None:
        if args.debug:
            traceback.print_exception(error)

    try:
        explainer = Explainer(load_model_set(args.models, getattr(args, "device", None)))
    except ExplainerError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    if explainer.device_warning:
        _say(f"warning: {explainer.device_warning}")
    if args.command == "export-torchscript":
        print(export_torchscript(explainer.models, args.out))
        return 0
    try:
        if args.command == "predict":
            return _predict(args, explainer, fail)
        results = explain_files(
            _progress(args.files, len(args.files) > 1), args.out, explainer, options, _report, on_error=fail,
        )
    except KeyboardInterrupt:
        _say("interrupted: finished outputs are complete; rerun to do the rest")
        return 130
    undelivered = _deliver_results(results, _targets(args))
    return 1 if undelivered or any(r.status == "failed" for r in results) else 0


def _deliver_results(results, targets) -> int:
    """Send each explained (or earlier explained) input's DICOM objects to ``targets``; returns the failures."""
    from .archive_delivery import deliver_folder

    failures = 0
    for result in results:
        if not targets or result.status == "failed" or result.folder is None:
            continue
        sent = deliver_folder(result.folder, targets)
        if sent != "yes":
            failures += 1
            _say(f"error: {result.input}: {sent}")
    return failures


def _report(result) -> None:
    for warning in result.warnings:
        _say(f"warning: {result.input}: {warning}")
    if result.status in ("done", "negative"):
        print(result.summary())
    else:
        _say(result.summary())


def _predict(args: argparse.Namespace, explainer, fail) -> int:
    from ..inputs.reader import read_radiograph

    failures = 0
    results = []
    for path in _progress(args.files, len(args.files) > 1):
        try:
            radiograph = read_radiograph(path)
            for warning in radiograph.warnings:
                _say(f"warning: {path}: {warning}")
            findings = explainer.predict(radiograph)
        except Exception as error:  # one broken file must not stop the batch; describe_error words it
            failures += 1
            fail(path, error)
            _say(f"error: {describe_error(path, error)}")
            continue
        results.append({"input": str(path), "findings": findings})
        if not args.json:
            text = ", ".join(
                f"{f} {p:.3f}{'*' if p >= explainer.models.thresholds[f] else ''}" for f, p in findings.items()
            )
            print(f"{path}: {text}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures else 0


class _ArchiveReport:
    """Progress of ``batch`` on stderr: each failure and lost worker as it happens, the tally at most every
    ``every`` seconds and at the end (an archive can have a million inputs; a log line each is too many).
    """

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.printed = 0.0

    def __call__(self, progress) -> None:
        if progress.message:
            _say(f"warning: {progress.message}")
        elif progress.last["status"] == "failed":
            _say(f"error: {progress.last['error']}")
        finished = progress.done + progress.failed == progress.total
        if finished or progress.message or time.monotonic() - self.printed >= self.every:
            self.printed = time.monotonic()
            _say(progress.line())


def _batch(args: argparse.Namespace) -> int:
    from .archive import run_archive
    from .archive_delivery import deliver_archive

    try:
        targets = _targets(args)
        with tempfile.TemporaryDirectory(prefix="cxrcf-pulled-") as pulled:
            progress = run_archive(
                _pulled(args, Path(pulled)),
                args.out,
                options_from(args),
                ray_address=args.ray,
                workers=args.workers,
                batch_size=args.batch_size,
                models=args.models,
                device=args.device,
                gpus_per_worker=args.gpus_per_worker,
                progress=_ArchiveReport(),
            )
    except (ExplainerError, ValueError) as error:
        if args.debug:
            traceback.print_exc()
        _say(f"error: {error}")
        return 2
    except KeyboardInterrupt:
        _say("interrupted: finished outputs and their index rows are complete; rerun to do the rest")
        return 130
    undelivered = deliver_archive(args.out, targets, _say) if targets else 0
    for warning in progress.site_warnings:
        _say(f"warning: {warning}")
    print(args.out / "index.csv")
    return 1 if progress.failed or undelivered else 0
