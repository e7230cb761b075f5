"""Explain every radiograph of a folder headlessly, inside Slicer:

    Slicer --no-main-window --python-script <module dir>/ChestXrayCounterfactualSlicer/batch.py \
        -- --input DIR --output DIR [--finding NAME] [--method M] [--saliency S] [--overwrite]

Writes, per input, the same files as ``python -m ChestXrayCounterfactualLib explain``. Slicer always
exits with a code: 0 when every file was explained (or already was), 1 when some failed, 2 when the
run could not start (bad option, missing requirements) and 3 on an unexpected error, which is
printed; a windowless Slicer never stays behind.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="batch.py", exit_on_error=False)
    parser.add_argument("--input", required=True, type=Path, help="folder of DICOM or image files")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--finding")
    parser.add_argument("--method", help="counterfactual method (default: the engine's)")
    parser.add_argument("--saliency", help="saliency method (default: the engine's)")
    parser.add_argument("--overwrite", action="store_true")
    return parser.parse_args(argv[1:] if argv[:1] == ["--"] else argv)  # Slicer passes on the "--" separator


def run(argv: list[str]) -> int:
    """The exit code of one batch run (see the module docstring)."""
    try:
        args = parse(argv)
    except (argparse.ArgumentError, SystemExit) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(MODULE_DIR))
    from ChestXrayCounterfactual import ChestXrayCounterfactualLogic
    from ChestXrayCounterfactualSlicer.requirements import RequirementsError

    logic = ChestXrayCounterfactualLogic()
    try:
        ready = logic.setupPythonRequirements(install=False)  # a headless run never installs
    except RequirementsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not ready:
        print("error: the Python requirements are not installed; open the module once in Slicer", file=sys.stderr)
        return 2
    paths = sorted(p for p in args.input.rglob("*") if p.is_file() and not p.name.startswith("."))
    print(f"{len(paths)} files in {args.input}", flush=True)
    try:
        results = logic.explainFiles(paths, args.output, args.finding, args.method, args.saliency, args.overwrite)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for result in results:
        print(result.summary(), file=sys.stderr if result.status == "failed" else sys.stdout, flush=True)
    return 1 if any(r.status == "failed" for r in results) else 0


def main(argv: list[str], exit_application) -> None:
    """Run and always hand Slicer an exit code, whatever happened."""
    try:
        code = run(argv)
    except BaseException:  # noqa: BLE001 - anything at all must still end the windowless Slicer
        traceback.print_exc()
        code = 3
    exit_application(code)


if __name__ == "__main__":
    import slicer

    main(sys.argv[1:], slicer.util.exit)
