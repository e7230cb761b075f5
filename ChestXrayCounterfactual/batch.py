"""Explain every radiograph of a folder headlessly, inside Slicer:

    Slicer --no-main-window --python-script <module dir>/batch.py -- --input DIR --output DIR [--finding NAME]

Writes, per input, the same files as ``python -m ChestXrayCounterfactualLib explain`` and exits
non-zero if any input failed. Progress is printed as each file is done.
"""

import argparse
import sys
from pathlib import Path

import slicer

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv):
    parser = argparse.ArgumentParser(prog="batch.py")
    parser.add_argument("--input", required=True, type=Path, help="folder of DICOM or image files")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--finding")
    parser.add_argument("--method", help="latent-shift, local or directions (default: the engine's)")
    parser.add_argument("--saliency", help="grad-cam, integrated-gradients, occlusion or smoothgrad")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    from ChestXrayCounterfactual import ChestXrayCounterfactualLogic

    logic = ChestXrayCounterfactualLogic()
    if not logic.setupPythonRequirements(askConfirmation=False):
        print("error: PyTorch is not installed; install the PyTorch extension", file=sys.stderr)
        return 2
    paths = sorted(p for p in args.input.rglob("*") if p.is_file() and not p.name.startswith("."))
    print(f"{len(paths)} files in {args.input}", flush=True)
    return 1 if logic.explainFiles(paths, args.output, args.finding, args.method, args.saliency, args.overwrite) else 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    slicer.util.exit(code) if hasattr(slicer.util, "exit") else sys.exit(code)
