"""Explain every radiograph of a folder headlessly, inside Slicer:

    Slicer --no-main-window --python-script <module dir>/ChestXrayCounterfactualSlicer/headless.py \
        -- --input DIR --output DIR [the options of ``python -m ChestXrayCounterfactualLib explain``]

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
sys.path.insert(0, str(MODULE_DIR))

from ChestXrayCounterfactualSlicer import bridge, requirements


def parse(argv: list[str]) -> argparse.Namespace:
    """``--input`` and ``--output``, then every option of the command line's ``explain``."""
    parser = argparse.ArgumentParser(prog="headless.py", exit_on_error=False)
    parser.add_argument("--input", required=True, type=Path, help="folder of DICOM or image files")
    parser.add_argument("--output", required=True, type=Path)
    bridge.add_options(parser)
    return parser.parse_args(argv[1:] if argv[:1] == ["--"] else argv)  # Slicer passes on the "--" separator


def run(argv: list[str]) -> int:
    """The exit code of one headless run (see the module docstring)."""
    try:
        args = parse(argv)
        options = bridge.options_from(args)
    except (argparse.ArgumentError, SystemExit, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:  # a headless run never installs
        ready = requirements.ensure(MODULE_DIR / "Resources" / "requirements.txt", install=False)
    except requirements.RequirementsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not ready:
        print("error: the Python requirements are not installed; open the module once in Slicer", file=sys.stderr)
        return 2
    paths = sorted(p for p in args.input.rglob("*") if p.is_file() and not p.name.startswith("."))
    print(f"{len(paths)} files in {args.input}", flush=True)
    results = bridge.explain_files(paths, args.output, options)
    for result in results:
        print(result.summary(), file=sys.stderr if result.status == "failed" else sys.stdout, flush=True)
    return 1 if any(r.status == "failed" for r in results) else 0


def main(argv: list[str], exit_application) -> None:
    """Run and always hand Slicer an exit code, whatever happened."""
    try:
        code = run(argv)
    except BaseException:  # anything at all must still end the windowless Slicer
        traceback.print_exc()
        code = 3
    exit_application(code)


if __name__ == "__main__":
    import slicer

    main(sys.argv[1:], slicer.util.exit)
