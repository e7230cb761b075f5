"""The results of an explanation as nodes in the input's study: for an input volume named ``<input>``,
:func:`add_results` creates, or on a rerun replaces, ``<input> saliency <finding>``, ``<input> counterfactual
<finding>``, ``<input> difference <finding>``, the sequence ``<input> frames <finding>`` (the animation) with its
browser, and the table ``<input> findings``, all under the input's study in the subject hierarchy, styled for
display. The input's voxels are never modified.

Qt-free, built on ``slicer.util`` and MRML classes only, so it runs in the Slicer application and in
plain Python on the PyPI package ``slicer-core`` (a bare ``vtkMRMLScene``), and is tested there.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import slicer

from .volumes import ATTRIBUTE

if TYPE_CHECKING:
    from ChestXrayCounterfactualLib.explain.explanation import Explanation

#: The fields of an explanation's record kept on the counterfactual node (``ChestXrayCounterfactual.<field>``).
FIGURES = (
    "finding",
    "method",
    "saliency",
    "direction",
    "strength",
    "strength_reason",
    "crossing_frame",
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
    name = f"{volume_node.GetName()} frames {explanation.finding}"
    browser = None
    sequence = _our_node("vtkMRMLSequenceNode", name, Source=volume_node.GetID(), Finding=explanation.finding)
    sequence.RemoveAllDataNodes()
    sequence.SetIndexName("frame")
    sequence.SetIndexUnit("")
    frame = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "frame (scratch)")
    frame.SetAttribute(f"{ATTRIBUTE}.Role", "frame")
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
        proxy.SetAttribute(f"{ATTRIBUTE}.Role", "frame")
        _style_like_input(proxy, volume_node, explanation.radiograph.inverted)
    for node in (sequence, browser) + ((proxy,) if proxy is not None else ()):
        _place(node, study)
    return sequence, browser


def _sequences_logic():
    app_logic = application_logic()
    if app_logic is not None:
        logic = app_logic.GetModuleLogic("Sequences")
        if logic is not None:
            return logic
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(slicer.mrmlScene)
    return logic


def application_logic():
    """Slicer's application logic: ``slicer.app``'s in the application, ``slicer.appLogic`` on slicer-core."""
    app = getattr(slicer, "app", None)
    return app.applicationLogic() if app is not None else getattr(slicer, "appLogic", None)


def add_results(volume_node, explanation: Explanation, thresholds: dict[str, float]) -> dict:
    """Put an explanation of ``volume_node`` in the scene, styled; returns the nodes by role.

    Keys: ``saliency``, ``counterfactual``, ``difference`` (volume nodes), ``sequence`` and
    ``sequence_browser``, ``findings_table``, ``explanation`` (the engine's result) and ``figures`` (the
    ``FIGURES`` of its record, also set as attributes of the counterfactual node).
    """
    study = _study_item(volume_node)
    finding = explanation.finding
    nodes = {
        "saliency": _output_volume(volume_node, "saliency", finding, explanation.saliency),
        "counterfactual": _output_volume(volume_node, "counterfactual", finding, explanation.counterfactual),
        "difference": _output_volume(volume_node, "difference", finding, explanation.difference),
    }
    inverted = explanation.radiograph.inverted
    _style_saliency(nodes["saliency"])
    _style_like_input(nodes["counterfactual"], volume_node, inverted)
    _style_difference(nodes["difference"], explanation.difference)
    if inverted and volume_node.GetDisplayNode() is not None:
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
    nodes["findings_table"] = _findings_table(volume_node, explanation, thresholds, study)
    nodes["explanation"] = explanation
    nodes["figures"] = figures
    return nodes
