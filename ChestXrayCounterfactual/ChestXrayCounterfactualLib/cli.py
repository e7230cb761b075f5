"""Command line: ``python -m ChestXrayCounterfactualLib predict|explain FILE...``.

A file that cannot be read or explained gets one line on stderr naming it and the reason; the
other files are still processed, and the exit code is 1 if any failed (130 if interrupted).
``--debug`` shows tracebacks instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from . import counterfactual, saliency
from .errors import ExplainerError


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


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
    explain = sub.add_parser("explain", help="saliency map and counterfactual for one finding")
    explain.add_argument("files", nargs="+", type=Path)
    explain.add_argument("--out", required=True, type=Path, help="output folder; one subfolder per input")
    explain.add_argument("--finding", help="finding to explain (default: the most probable above its threshold)")
    explain.add_argument("--method", choices=counterfactual.METHODS, default=counterfactual.DEFAULT_METHOD)
    explain.add_argument("--saliency", choices=saliency.METHODS, default=saliency.DEFAULT_METHOD)
    explain.add_argument(
        "--direction",
        choices=("remove", "add"),
        help="remove or add the finding (default: remove if present, add if absent)",
    )
    explain.add_argument("--frames", type=int, default=8, help="frames of the animation")
    explain.add_argument("--overwrite", action="store_true", help="redo inputs whose output folder exists")
    explain.add_argument("--anonymize", action="store_true", help="keep no DICOM UIDs or input folder in the outputs")
    return parser


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
    args = _parser().parse_args(argv)
    from .engine import Explainer
    from .modelset import load_model_set
    from .modelspec import export_torchscript, load_spec
    from .reader import read_radiograph

    def fail(path: Path, error: BaseException) -> None:
        if args.debug:
            traceback.print_exception(error)
        if isinstance(error, ExplainerError):
            message = str(error) if str(error).startswith(str(path)) else f"{path}: {error}"
        elif isinstance(error, ValueError):
            message = f"{path}: {error}"
        else:
            message = f"{path}: internal error ({type(error).__name__}: {error}); rerun with --debug and report it"
        _say(f"error: {message}")

    try:
        explainer = Explainer(load_spec(args.models) if args.models else load_model_set())
    except ExplainerError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "export-torchscript":
        print(export_torchscript(explainer.models, args.out))
        return 0
    failures = 0
    results = []
    used: set[str] = set()
    try:
        for path in _progress(args.files, len(args.files) > 1):
            try:
                started = time.perf_counter()
                radiograph = read_radiograph(path)
                read_seconds = round(time.perf_counter() - started, 4)
                for warning in radiograph.warnings:
                    _say(f"warning: {path}: {warning}")
                if args.command == "predict":
                    findings = explainer.predict(radiograph)
                    results.append({"input": str(path), "findings": findings})
                    if not args.json:
                        text = ", ".join(
                            f"{f} {p:.3f}{'*' if p >= explainer.models.thresholds[f] else ''}"
                            for f, p in findings.items()
                        )
                        print(f"{path}: {text}")
                    continue
                stem = _stem(path)
                name, n = stem, 2
                while name in used:
                    name, n = f"{stem}-{n}", n + 1
                used.add(name)
                folder = args.out / name
                if folder.exists() and not args.overwrite:
                    _say(f"note: {path}: {folder} exists, skipped (use --overwrite to redo)")
                    continue
                from .outputs import write_explanation

                explanation = explainer.explain(
                    radiograph, args.finding, args.method, args.saliency, args.direction, args.frames
                )
                explanation.seconds = {"read": read_seconds, **explanation.seconds}
                record = write_explanation(
                    folder, explanation, explainer, overwrite=args.overwrite, anonymize=args.anonymize
                )
                print(
                    f"{path}: {record['finding']} p {record['p_original']:.3f} -> {record['p_counterfactual']:.3f} "
                    f"(threshold {record['threshold']:.3f}, {'flipped' if record['flipped'] else 'not flipped'}) "
                    f"in {record['seconds']['total']:.1f} s -> {folder}"
                )
            except Exception as error:  # one broken file must not stop the batch; fail() words it
                failures += 1
                fail(path, error)
    except KeyboardInterrupt:
        _say("interrupted: finished outputs are complete; rerun to do the rest")
        return 130
    if args.command == "predict" and args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures else 0
