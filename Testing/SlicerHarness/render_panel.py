"""The README's panel picture: the module panel as the harness runs it (a Qt offscreen grab after Load,
Analyze and Explain on the bundled sample) next to the Red slice view (Slicer's slice logic output).

    cd Testing && ../.venv/bin/python -m SlicerHarness.render_panel ../Resources/Screenshots/panel.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from vtk.util.numpy_support import vtk_to_numpy

ROOT = Path(__file__).resolve().parents[2]


def slice_view(logic, size: int) -> Image.Image:
    """What Slicer draws in a slice view: the blended layers of the slice logic, as RGB."""
    logic.ResizeSliceNode(size, size)
    logic.FitSliceToBackground()
    producer = logic.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3]
    return Image.fromarray(np.ascontiguousarray(pixels))


def render(out: Path) -> Path:
    sys.path[:0] = [str(ROOT / "Testing" / "Python"), str(ROOT / "ChestXrayCounterfactual")]
    from SlicerHarness import application

    with tempfile.TemporaryDirectory() as scratch:
        harness = application.start(Path(scratch))
        _, widget = harness.load_module(ROOT / "ChestXrayCounterfactual" / "ChestXrayCounterfactual.py")
        harness.enter(widget)
        sample = ROOT / "ChestXrayCounterfactual" / "Resources" / "SampleData" / "nih_chest_pa_cardiomegaly.dcm"
        harness.user.files.append(str(sample))
        widget.ui.loadFileButton.click()
        widget.ui.analyzeButton.click()
        widget.ui.explainButton.click()
        panel = harness.grab(widget.parent, Path(scratch) / "panel.png")
        left = Image.open(panel).convert("RGB")
        right = slice_view(harness.app.layoutManager().sliceWidget("Red").sliceLogic(), left.height)
        picture = Image.new("RGB", (left.width + right.width, left.height), "white")
        picture.paste(left, (0, 0))
        picture.paste(right, (left.width, 0))
        out.parent.mkdir(parents=True, exist_ok=True)
        picture.save(out, optimize=True)
        harness.close()
    return out


if __name__ == "__main__":
    print(render(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "Resources" / "Screenshots" / "panel.png"))
