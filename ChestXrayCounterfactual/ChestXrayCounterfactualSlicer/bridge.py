"""Where the Slicer side calls the engine: a model set loaded once per process, a volume analysed or explained
with its results put in the scene, and files explained into a folder as the command line does.

The module file and the headless script ask the engine for nothing except through this package; the names they
need before any model is loaded (method names, the options object and the command line's flags for it, the
cancel error, the wording of a result) are here too. At file scope it imports only the engine's torch-free
modules, so Slicer can load the module file before the Python requirements are installed; the models are
loaded by the functions that explain.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ChestXrayCounterfactualLib import methods
from ChestXrayCounterfactualLib.errors import CancelledError
from ChestXrayCounterfactualLib.explain.records import input_lines, strength_line
from ChestXrayCounterfactualLib.options import ExplainOptions
from ChestXrayCounterfactualLib.runs.cli import add_options, options_from
from ChestXrayCounterfactualLib.runs.files import FileResult, explain_files as _explain_files

from . import results, views, volumes

if TYPE_CHECKING:
    from ChestXrayCounterfactualLib.explain.pipeline import Explainer
    from ChestXrayCounterfactualLib.explain.stages import ProgressCallback

__all__ = [
    "CancelledError",
    "ExplainOptions",
    "add_options",
    "analyze",
    "explain_files",
    "explain_volume",
    "explainer",
    "input_lines",
    "methods",
    "options_from",
    "strength_line",
]

_explainers: dict[str, Explainer] = {}


def explainer(model_set: str | None = None) -> Explainer:
    """The engine for a model-set spec (default: the bundled models), loaded and verified once per process, on the
    GPU when torch has one (each explanation's status line names the device, and says why when it is the CPU
    although a GPU is there); raises with the reason if the spec cannot be used.
    """
    key = str(model_set or "")
    if key not in _explainers:
        from ChestXrayCounterfactualLib.explain.pipeline import Explainer
        from ChestXrayCounterfactualLib.modelset import load_model_set

        _explainers[key] = Explainer(load_model_set(model_set), device="auto")
    return _explainers[key]


def analyze(volume_node, model_set: str | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """(probabilities, thresholds) of every finding of the model set for a radiograph volume."""
    engine = explainer(model_set)
    return engine.predict(volumes.radiograph_from_volume(volume_node)), dict(engine.models.thresholds)


def explain_volume(
    volume_node,
    options: ExplainOptions | None = None,
    engine: Explainer | None = None,
    progress: ProgressCallback | None = None,
) -> dict:
    """Explain a radiograph volume as ``options`` say (default: ``ExplainOptions()``) with ``engine`` (default: the
    bundled models), put the results in its study and show the saliency over it; the nodes by role (see
    :func:`.results.add_results`). Nothing is added to the scene if the explanation fails or is cancelled.
    """
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise ValueError("choose a scalar volume (a radiograph) to explain")
    engine = engine or explainer()
    explanation = engine.explain(volumes.radiograph_from_volume(volume_node), options or ExplainOptions(), progress)
    nodes = results.add_results(volume_node, explanation, engine.models.thresholds)
    views.show_layers(volume_node, nodes["saliency"])
    return nodes


def explain_files(
    paths: Iterable[Path | str], out: Path | str, options: ExplainOptions, model_set: str | None = None,
) -> list[FileResult]:
    """Explain files into ``out`` (one folder each) as the command line does; one ``FileResult`` per input."""
    return _explain_files(paths, out, explainer(model_set), options)
