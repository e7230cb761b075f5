"""Everything that creates or changes MRML nodes or view state: explanation results as layers in the
input's study, and how they are shown (layers, opacity, colours, side-by-side, playback).

Qt-free, built on ``slicer.util`` and MRML classes only, so it runs in the Slicer application and in
plain Python on the PyPI package ``slicer-core`` (a bare ``vtkMRMLScene``), and is tested there. The
engine (torch) is imported only by the functions that explain, so the view functions work before the
Python requirements are installed.

Entry point: :func:`explain_volume`. For an input volume named ``<input>`` it creates, or on a rerun
replaces, ``<input> saliency <finding>``, ``<input> counterfactual <finding>``, ``<input> difference
<finding>``, the sequence ``<input> latent shift <finding>`` with its browser, and the table
``<input> findings``, all under the input's study in the subject hierarchy. The input's voxels are
never modified.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import slicer

if TYPE_CHECKING:
    from ChestXrayCounterfactualLib.explain.pipeline import Explainer, Explanation, ProgressCallback
    from ChestXrayCounterfactualLib.inputs.reader import Radiograph

ATTRIBUTE = "ChestXrayCounterfactual"
#: The fields of an explanation's record kept on the counterfactual node (``ChestXrayCounterfactual.<field>``).
FIGURES = (
    "finding",
    "method",
    "saliency",
    "direction",
    "strength",
    "p_original",
    "p_counterfactual",
    "threshold",
    "flipped",
    "verdict",
    "auditors",
    "seconds",
    "model_set",
)
#: Slicer's own colour tables (loaded from its ColorFiles), by name: node ID, and the matplotlib map our
#: fallback table copies where they are absent (slicer-core ships no colour files).
SLICER_COLORS = {
    "Inferno": ("vtkMRMLColorTableNodeFileInferno.txt", "inferno"),
    "DivergingBlueRed": ("vtkMRMLColorTableNodeFileDivergingBlueRed.txt", "RdBu_r"),
}
SALIENCY_COLOR = "Inferno"
DIFFERENCE_COLOR = "DivergingBlueRed"
#: Saliency below this fraction of its maximum is transparent, so the anatomy stays visible.
SALIENCY_VISIBLE_FROM = 0.15

_explainers: dict[str, Explainer] = {}


def explainer(model_set: str | None = None) -> Explainer:
    """The engine for a model-set spec (default: the bundled models), loaded and verified once per process."""
    key = str(model_set or "")
    if key not in _explainers:
        from ChestXrayCounterfactualLib.explain.pipeline import Explainer
        from ChestXrayCounterfactualLib.modelset import load_model_set

        _explainers[key] = Explainer(load_model_set(model_set))
    return _explainers[key]


def source_file(volume_node) -> Path | None:
    """The file a volume was loaded from: its storage node, or the DICOM database entry."""
    storage = volume_node.GetStorageNode()
    if storage is not None and storage.GetFileName() and Path(storage.GetFileName()).is_file():
        return Path(storage.GetFileName())
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    database = getattr(slicer, "dicomDatabase", None)
    if uids and database is not None:
        path = database.fileForInstance(uids[0])
        if path and Path(path).is_file():
            return Path(path)
    return None


def radiograph_from_volume(volume_node) -> Radiograph:
    """The engine's view of a volume node: its voxels as they are, and how to display them.

    Whether the node holds MONOCHROME1 values (and its window) is learned by comparing its voxels
    with the source file read by the engine's reader, so it does not matter whether the loader
    inverted MONOCHROME1 (GDCM does, DCMTK and Slicer's DICOM plugin do not). The source file's header
    goes through the engine's input gate: a CT, MR, ... volume or a lateral view is refused with its
    sentence, and the gate's notes become the radiograph's warnings.
    """
    from ChestXrayCounterfactualLib.errors import UnsupportedImageError
    from ChestXrayCounterfactualLib.explain.gate import check_header
    from ChestXrayCounterfactualLib.inputs.reader import Radiograph, read_radiograph, validate

    pixels = slicer.util.arrayFromVolume(volume_node)
    if volume_node.IsA("vtkMRMLVectorVolumeNode"):
        pixels = _luminance(pixels)
    if pixels.ndim == 3 and pixels.shape[0] > 1:
        raise UnsupportedImageError(
            volume_node.GetName(), f"a 3D volume with {pixels.shape[0]} slices is not a radiograph",
        )
    if pixels.ndim == 3:
        pixels = pixels[0]
    pixels = np.asarray(pixels, dtype=np.float32).copy()
    spacing = tuple(float(s) for s in volume_node.GetSpacing()[:2])
    window, inverted, notes = None, False, []
    path = source_file(volume_node)
    if path is not None:
        try:
            reference = read_radiograph(path)
        except Exception:  # an unreadable source only means we fall back to the display settings
            reference = None
        if reference is not None:
            notes = check_header(reference)
        if reference is not None and reference.shape == pixels.shape:
            shown = reference.display().ravel()
            inside = (shown > 0.02) & (shown < 0.98)
            if inside.sum() > 100:
                x = pixels.ravel()[inside].astype(np.float64)
                y = shown[inside].astype(np.float64)
                slope = float(np.mean((x - x.mean()) * (y - y.mean())) / max(x.var(), 1e-12))
                offset = float(y.mean() - slope * x.mean())
                if abs(slope) > 0:
                    inverted = slope < 0
                    ends = sorted(((0 - offset) / slope, (1 - offset) / slope))
                    window = (float(ends[0]), float(ends[1]))
    if window is None:
        display = volume_node.GetDisplayNode()
        if display is not None and display.GetWindow() > 0:
            window = (display.GetLevel() - display.GetWindow() / 2, display.GetLevel() + display.GetWindow() / 2)
        else:
            window = (0.0, 0.0)  # validate() sets the percentile window
        inverted = volume_node.GetAttribute(f"{ATTRIBUTE}.Inverted") == "1"
    radiograph = Radiograph(
        pixels,
        window,
        spacing,
        inverted=inverted,
        source=volume_node.GetName(),
        metadata={"volume_node": volume_node.GetID(), "source_file": str(path or "")},
        warnings=notes,
    )
    return validate(volume_node.GetName(), radiograph)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Grey values of colour voxels, as the engine's reader makes them from a colour file."""
    from ChestXrayCounterfactualLib.inputs.reader import grey

    return grey(np.asarray(rgb, dtype=np.float32))


def as_scalar_volume(volume_node):
    """The radiograph as a plain scalar volume: a colour image (loaded as a vector volume) is replaced by
    its grey values on the same grid; other volumes are returned as they are.
    """
    if not volume_node.IsA("vtkMRMLVectorVolumeNode"):
        return volume_node
    scalar = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", volume_node.GetName())
    scalar.CopyOrientation(volume_node)
    slicer.util.updateVolumeFromArray(scalar, _luminance(slicer.util.arrayFromVolume(volume_node)))
    scalar.CreateDefaultDisplayNodes()
    slicer.mrmlScene.RemoveNode(volume_node)
    return scalar


def first_radiograph():
    """The first plain scalar volume of the scene that this module did not make, or None."""
    for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
        if node.GetClassName() == "vtkMRMLScalarVolumeNode" and not node.GetAttribute(f"{ATTRIBUTE}.Role"):
            return node
    return None


def color_node(name: str):
    """The colour table called ``name``: Slicer's own (Inferno, DivergingBlueRed, Iron, ...) where the
    application has it, else for Inferno/DivergingBlueRed a user table with the same colours (saved with
    the scene, made once); ``None`` if there is no such table.
    """
    scene = slicer.mrmlScene
    if name in SLICER_COLORS:
        node_id, matplotlib_name = SLICER_COLORS[name]
        node = scene.GetNodeByID(node_id) or _our_node("vtkMRMLColorTableNode", f"{name} ({ATTRIBUTE})", Colors=name)
        if node.GetNumberOfColors() == 0:
            node.SetTypeToUser()
            colors = _matplotlib_colors(matplotlib_name)
            node.SetNumberOfColors(len(colors))
            for i, (r, g, b) in enumerate(colors):
                node.SetColor(i, f"{i}", float(r), float(g), float(b), 1.0)
        return node
    return slicer.util.getFirstNodeByClassByName("vtkMRMLColorTableNode", name)


def _matplotlib_colors(name: str) -> np.ndarray:
    """256 RGB colours of a matplotlib colour map."""
    from matplotlib import colormaps

    return colormaps[name](np.linspace(0, 1, 256))[:, :3]


def _our_node(class_name: str, name: str, **attributes: str):
    """The node of ``class_name`` this module made with these attributes (a rerun reuses it), or a new one."""
    for candidate in slicer.util.getNodesByClass(class_name):
        if all(candidate.GetAttribute(f"{ATTRIBUTE}.{key}") == value for key, value in attributes.items()):
            return candidate
    node = slicer.mrmlScene.AddNewNodeByClass(class_name, name)
    for key, value in attributes.items():
        node.SetAttribute(f"{ATTRIBUTE}.{key}", value)
    return node


def _output_volume(volume_node, role: str, finding: str, array: np.ndarray):
    """The output node of one role for (input, finding): reused on a rerun, created otherwise."""
    name = f"{volume_node.GetName()} {role} {finding}"
    node = _our_node("vtkMRMLScalarVolumeNode", name, Role=role, Finding=finding, Source=volume_node.GetID())
    node.SetName(name)
    node.CopyOrientation(volume_node)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array, dtype=np.float32)[None])
    node.SetNodeReferenceID(f"{ATTRIBUTE}.source", volume_node.GetID())
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def _study_item(volume_node) -> int:
    """The subject-hierarchy item outputs go under: the input's study, parent, or a new one."""
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    item = sh.GetItemByDataNode(volume_node)
    if not item:
        item = sh.CreateItem(sh.GetSceneItemID(), volume_node)
    study = sh.GetItemAncestorAtLevel(item, "Study")
    if study:
        return study
    parent = sh.GetItemParent(item)
    if parent and parent != sh.GetSceneItemID():
        return parent
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), f"{volume_node.GetName()} patient")
    study = sh.CreateStudyItem(patient, f"{volume_node.GetName()} study")
    sh.SetItemParent(item, study)
    return study


def _place(node, study: int) -> None:
    sh = slicer.mrmlScene.GetSubjectHierarchyNode()
    item = sh.GetItemByDataNode(node)
    if item:
        sh.SetItemParent(item, study)
    else:
        sh.CreateItem(study, node)


def _style_saliency(node) -> None:
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(color_node(SALIENCY_COLOR).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.AutoThresholdOff()
    display.SetThreshold(SALIENCY_VISIBLE_FROM, 1.0)
    display.ApplyThresholdOn()
    legend = None
    for i in range(node.GetNumberOfDisplayNodes()):
        if node.GetNthDisplayNode(i).IsA("vtkMRMLColorLegendDisplayNode"):
            legend = node.GetNthDisplayNode(i)
    if legend is None:
        legend = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode")
        legend.SetAndObservePrimaryDisplayNode(display)
        node.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetTitleText("saliency")


def _style_like_input(node, volume_node, inverted: bool) -> None:
    source, display = volume_node.GetDisplayNode(), node.GetDisplayNode()
    if source is not None:
        display.SetAndObserveColorNodeID(source.GetColorNodeID())
        display.SetAutoWindowLevel(source.GetAutoWindowLevel())
        display.SetWindowLevel(source.GetWindow(), source.GetLevel())
    if inverted:
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeInvertedGrey")


def _style_difference(node, difference: np.ndarray) -> None:
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(color_node(DIFFERENCE_COLOR).GetID())
    limit = float(max(np.abs(difference).max(), 1e-6))
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(-limit, limit)


def _findings_table(volume_node, explanation: Explanation, thresholds: dict[str, float], study: int):
    """One row per finding of the explained model (its probability on the input and on the counterfactual), then
    one row per independent auditor for the explained finding.
    """
    table = _our_node("vtkMRMLTableNode", f"{volume_node.GetName()} findings", Source=volume_node.GetID())
    table.RemoveAllColumns()
    rows = [
        (explanation.model_set["name"], f, p, explanation.counterfactual_probabilities[f], thresholds[f])
        for f, p in explanation.probabilities.items()
    ] + [
        (name, explanation.finding, a["p_original"], a["p_counterfactual"], a["threshold"])
        for name, a in explanation.audit.items()
    ]
    columns = {
        "Model": [row[0] for row in rows],
        "Finding": [row[1] for row in rows],
        "Probability": [row[2] for row in rows],
        "Counterfactual probability": [row[3] for row in rows],
        "Threshold": [row[4] for row in rows],
        "Above threshold": [int(row[2] >= row[4]) for row in rows],
    }
    import vtk

    for title, values in columns.items():
        array = vtk.vtkStringArray() if title in ("Model", "Finding") else vtk.vtkDoubleArray()
        array.SetName(title)
        for value in values:
            array.InsertNextValue(value)
        table.AddColumn(array)
    _place(table, study)
    return table


def _sequence(volume_node, explanation: Explanation, study: int):
    scene = slicer.mrmlScene
    name = f"{volume_node.GetName()} latent shift {explanation.finding}"
    browser = None
    sequence = _our_node("vtkMRMLSequenceNode", name, Source=volume_node.GetID(), Finding=explanation.finding)
    sequence.RemoveAllDataNodes()
    sequence.SetIndexName("frame")
    sequence.SetIndexUnit("")
    frame = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "frame (scratch)")
    try:
        for i in range(len(explanation.model_frame_changes)):
            frame.CopyOrientation(volume_node)
            slicer.util.updateVolumeFromArray(frame, explanation.frame_on_grid(i)[None])
            sequence.SetDataNodeAtValue(frame, str(i))
    finally:
        scene.RemoveNode(frame)
    for candidate in slicer.util.getNodesByClass("vtkMRMLSequenceBrowserNode"):
        if candidate.GetMasterSequenceNode() is sequence:
            browser = candidate
    if browser is None:
        browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
        browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.SetPlaybackLooped(True)
    browser.SetPlaybackRateFps(6.0)
    logic = _sequences_logic()
    if logic is not None:
        logic.UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(sequence)
    if proxy is not None:
        _style_like_input(proxy, volume_node, explanation.radiograph.inverted)
    for node in (sequence, browser) + ((proxy,) if proxy is not None else ()):
        _place(node, study)
    return sequence, browser


def _application_logic():
    """Slicer's application logic: ``slicer.app``'s in the application, ``slicer.appLogic`` on slicer-core."""
    app = getattr(slicer, "app", None)
    return app.applicationLogic() if app is not None else getattr(slicer, "appLogic", None)


def _sequences_logic():
    app_logic = _application_logic()
    if app_logic is not None:
        logic = app_logic.GetModuleLogic("Sequences")
        if logic is not None:
            return logic
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(slicer.mrmlScene)
    return logic


def show_layers(background, foreground, opacity: float = 0.4) -> None:
    """``background`` with ``foreground`` (or nothing) over it, in every slice view of the scene."""
    for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(opacity)


def set_saliency_opacity(opacity: float) -> None:
    """Opacity of the foreground (saliency) layer in every slice view."""
    for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
        composite.SetForegroundOpacity(opacity)


def set_saliency_colors(saliency_node, name: str) -> None:
    """Show the saliency with the colour table ``name`` (see :func:`color_node`)."""
    node = color_node(name)
    if node is None:
        raise ValueError(f"there is no colour table called {name!r} in this scene")
    saliency_node.GetDisplayNode().SetAndObserveColorNodeID(node.GetID())


def _slice_logics(views):
    app_logic = _application_logic()
    for view in views:
        logic = app_logic.GetSliceLogicByLayoutName(view) if app_logic is not None else None
        if logic is not None:
            yield view, logic


def compare_side_by_side(volume_node, counterfactual_node) -> None:
    """Side-by-side layout: the original in the Red view, the counterfactual in the Yellow view, each
    view turned to the radiograph's own plane (a DX or NIfTI radiograph need not lie axial), with
    linked slice controls. Fit the views (:func:`fit_views`) once the layout has sized them.
    """
    layout = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is not None:
        layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
    volumes = {"Red": volume_node, "Yellow": counterfactual_node}
    for view, logic in _slice_logics(volumes):
        composite = logic.GetSliceCompositeNode()
        composite.SetBackgroundVolumeID(volumes[view].GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetLinkedControl(True)
        logic.RotateSliceToLowestVolumeAxes()


def fit_views(views) -> None:
    """Fit each named slice view to its background volume."""
    for _view, logic in _slice_logics(views):
        logic.FitSliceToBackground()


def play(browser_node, playing: bool, still_node) -> None:
    """Loop the latent-shift frames in every slice view; on stop, give each view back the background it
    had (``still_node`` where that is gone).
    """
    browser_node.SetPlaybackActive(playing)
    proxy = browser_node.GetProxyNode(browser_node.GetMasterSequenceNode())
    key = f"{ATTRIBUTE}.StillBackground"
    for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
        if playing and proxy is not None:
            if composite.GetBackgroundVolumeID() != proxy.GetID():
                composite.SetAttribute(key, composite.GetBackgroundVolumeID() or "")
            composite.SetBackgroundVolumeID(proxy.GetID())
        elif not playing:
            still = slicer.mrmlScene.GetNodeByID(composite.GetAttribute(key) or "") or still_node
            composite.SetBackgroundVolumeID(still.GetID())


def explain_volume(
    volume_node,
    finding: str | None = None,
    method: str | None = None,
    saliency: str | None = None,
    direction: str | None = None,
    engine: Explainer | None = None,
    progress: ProgressCallback | None = None,
    strength: str | None = None,
) -> dict:
    """Explain a radiograph volume and put the results in the scene; returns the nodes created.

    Keys: ``saliency``, ``counterfactual``, ``difference`` (volume nodes), ``sequence`` and
    ``sequence_browser``, ``findings_table``, ``explanation`` (the engine's result) and ``figures`` (the
    ``FIGURES`` of its record, also set as attributes of the counterfactual node).
    """
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise ValueError("choose a scalar volume (a radiograph) to explain")
    from ChestXrayCounterfactualLib import methods

    engine = engine or explainer()
    radiograph = radiograph_from_volume(volume_node)
    explanation = engine.explain(
        radiograph,
        finding,
        method or methods.DEFAULT_COUNTERFACTUAL,
        saliency or methods.DEFAULT_SALIENCY,
        direction,
        progress=progress,
        strength=strength or methods.DEFAULT_STRENGTH,
    )
    study = _study_item(volume_node)
    finding = explanation.finding
    nodes = {
        "saliency": _output_volume(volume_node, "saliency", finding, explanation.saliency),
        "counterfactual": _output_volume(volume_node, "counterfactual", finding, explanation.counterfactual),
        "difference": _output_volume(volume_node, "difference", finding, explanation.difference),
    }
    _style_saliency(nodes["saliency"])
    _style_like_input(nodes["counterfactual"], volume_node, radiograph.inverted)
    _style_difference(nodes["difference"], explanation.difference)
    if radiograph.inverted and volume_node.GetDisplayNode() is not None:
        volume_node.GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeInvertedGrey")
    record = explanation.record()
    figures = {key: record[key] for key in FIGURES}
    for key, value in figures.items():
        nodes["counterfactual"].SetAttribute(
            f"{ATTRIBUTE}.{key}", json.dumps(value) if not isinstance(value, str) else value,
        )
    for node in nodes.values():
        _place(node, study)
    nodes["sequence"], nodes["sequence_browser"] = _sequence(volume_node, explanation, study)
    nodes["findings_table"] = _findings_table(volume_node, explanation, engine.models.thresholds, study)
    show_layers(volume_node, nodes["saliency"])
    nodes["explanation"] = explanation
    nodes["figures"] = figures
    return nodes
