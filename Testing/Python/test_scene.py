"""Scene code against Slicer's real MRML (slicer-core): DICOM -> volume -> explanation layers,
subject hierarchy, sequence, colour tables, save to .mrb and reload, rerun replaces.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")

from ChestXrayCounterfactualLib.options import ExplainOptions
from ChestXrayCounterfactualSlicer import bridge, results
from ChestXrayCounterfactualSlicer.volumes import radiograph_from_volume
from conftest import MONOCHROME1, SAMPLE
from mrml_scene import load_dicom_file, new_scene


@pytest.fixture
def mrml(tmp_path):
    return new_scene(str(tmp_path / "cache"))


def _ijk_to_ras(node) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


@pytest.fixture
def explained(mrml, explainer):
    scene, _, volumes, slice_logic, _ = mrml
    volume = load_dicom_file(volumes, SAMPLE)
    original = slicer.util.arrayFromVolume(volume).copy()
    nodes = bridge.explain_volume(volume, engine=explainer)
    return scene, volume, original, nodes, slice_logic


def test_dicom_loads_with_its_geometry(mrml):
    _, _, volumes, _, _ = mrml
    volume = load_dicom_file(volumes, SAMPLE)
    assert slicer.util.arrayFromVolume(volume).shape == (1, 320, 320)
    assert volume.GetSpacing()[:2] == pytest.approx((1.1985, 1.1985))


def test_outputs_lie_on_the_input_geometry_and_leave_it_untouched(explained):
    _scene, volume, original, nodes, _ = explained
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), original)
    for key in ("saliency", "counterfactual", "difference"):
        node = nodes[key]
        assert slicer.util.arrayFromVolume(node).shape == original.shape
        np.testing.assert_allclose(_ijk_to_ras(node), _ijk_to_ras(volume))
        assert node.GetName() == f"{volume.GetName()} {key} {nodes['explanation'].finding}"
    counterfactual = slicer.util.arrayFromVolume(nodes["counterfactual"])
    difference = slicer.util.arrayFromVolume(nodes["difference"])
    np.testing.assert_allclose(counterfactual - original, difference, atol=1e-3)


def test_colour_tables_layers_and_hierarchy(explained):
    scene, volume, _, nodes, slice_logic = explained
    saliency_display = nodes["saliency"].GetDisplayNode()
    assert saliency_display.GetColorNode().GetName().startswith(results.SALIENCY_COLOR)
    assert saliency_display.GetApplyThreshold() and saliency_display.GetLowerThreshold() == pytest.approx(0.15)
    assert nodes["difference"].GetDisplayNode().GetColorNode().GetName().startswith(results.DIFFERENCE_COLOR)
    composite = slice_logic.GetSliceCompositeNode()
    assert composite.GetBackgroundVolumeID() == volume.GetID()
    assert composite.GetForegroundVolumeID() == nodes["saliency"].GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    sh = scene.GetSubjectHierarchyNode()
    study = sh.GetItemAncestorAtLevel(sh.GetItemByDataNode(volume), "Study")
    assert study
    for key in ("saliency", "counterfactual", "difference", "sequence", "findings_table"):
        assert sh.GetItemParent(sh.GetItemByDataNode(nodes[key])) == study, key
    assert nodes["sequence"].GetNumberOfDataNodes() == len(nodes["explanation"].model_frame_changes) >= 2
    assert nodes["sequence_browser"].GetPlaybackLooped()
    table = nodes["findings_table"]
    explanation = nodes["explanation"]
    assert table.GetNumberOfRows() == len(explanation.probabilities) + len(explanation.audit)
    assert nodes["counterfactual"].GetAttribute("ChestXrayCounterfactual.flipped") in ("true", "false")


def test_rerun_replaces_outputs_instead_of_piling_up(explained, explainer):
    scene, volume, _, nodes, _ = explained
    count = scene.GetNumberOfNodes()
    again = bridge.explain_volume(volume, ExplainOptions(finding=nodes["explanation"].finding), engine=explainer)
    assert scene.GetNumberOfNodes() == count
    for key in ("saliency", "counterfactual", "difference", "sequence", "findings_table"):
        assert again[key] is nodes[key]


def test_scene_saved_to_mrb_reloads_with_everything(explained, tmp_path):
    scene, volume, _, nodes, _ = explained
    for node in [
        volume,
        nodes["saliency"],
        nodes["counterfactual"],
        nodes["difference"],
        nodes["sequence"],
        nodes["findings_table"],
    ] + [nodes["sequence_browser"].GetProxyNode(nodes["sequence"])]:
        if node.GetStorageNode() is None:
            node.AddDefaultStorageNode()
    path = str(tmp_path / "explained.mrb")
    assert scene.WriteToMRB(path)
    reloaded, *_ = new_scene(str(tmp_path / "cache2"))
    reloaded.SetURL(path)
    assert reloaded.ReadFromMRB(path)
    for key in ("saliency", "counterfactual", "difference"):
        node = reloaded.GetFirstNodeByName(nodes[key].GetName())
        assert node is not None, key
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), slicer.util.arrayFromVolume(nodes[key]))
    saliency = reloaded.GetFirstNodeByName(nodes["saliency"].GetName())
    assert saliency.GetDisplayNode().GetColorNode().GetName().startswith(results.SALIENCY_COLOR)
    assert (
        reloaded.GetFirstNodeByName(nodes["sequence"].GetName()).GetNumberOfDataNodes()
        == nodes["sequence"].GetNumberOfDataNodes()
    )
    counterfactual = reloaded.GetFirstNodeByName(nodes["counterfactual"].GetName())
    assert counterfactual.GetAttribute("ChestXrayCounterfactual.p_original") is not None


def test_monochrome1_volume_is_detected_and_displayed_bone_bright(mrml, explainer):
    _, _, volumes, _, _ = mrml
    volume = load_dicom_file(volumes, MONOCHROME1)
    radiograph = radiograph_from_volume(volume)
    from ChestXrayCounterfactualLib import read_radiograph

    reference = read_radiograph(MONOCHROME1)
    np.testing.assert_allclose(radiograph.display(), reference.display(), atol=0.01)
    nodes = bridge.explain_volume(volume, ExplainOptions(finding="Cardiomegaly", direction="add"), engine=explainer)
    shown_inverted = radiograph.inverted
    color = nodes["counterfactual"].GetDisplayNode().GetColorNodeID()
    assert (color == "vtkMRMLColorTableNodeInvertedGrey") == shown_inverted


def _blended_view(slice_logic) -> np.ndarray:
    """The slice view's blended RGBA image, as Slicer's slice logic composes it (no OpenGL needed)."""
    from vtk.util.numpy_support import vtk_to_numpy

    producer = slice_logic.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    columns, rows, _ = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1)[..., :3].astype(float)


def test_slice_view_shows_the_saliency_overlay_where_saliency_is_high(explained):
    _scene, _volume, _, _nodes, slice_logic = explained
    slice_logic.ResizeSliceNode(256, 256)
    slice_logic.FitSliceToBackground()
    with_overlay = _blended_view(slice_logic)
    slice_logic.GetSliceCompositeNode().SetForegroundVolumeID(None)
    without = _blended_view(slice_logic)
    colour_change = np.abs(with_overlay - without).sum(axis=2)
    tinted = (np.abs(with_overlay[..., 0] - with_overlay[..., 2]) > 10).mean()
    assert colour_change.max() > 50 and tinted > 0.05, "the inferno overlay must be visible over the radiograph"
    untouched = (colour_change == 0).mean()
    assert untouched > 0.05, "low saliency stays transparent (threshold)"


def test_bad_volume_input_raises_one_sentence(mrml, explainer):
    scene, *_ = mrml
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "not a radiograph")
    with pytest.raises(ValueError, match="choose a scalar volume"):
        bridge.explain_volume(table, engine=explainer)
    flat = slicer.util.addVolumeFromArray(np.zeros((1, 128, 128), np.float32), name="blank")
    from ChestXrayCounterfactualLib.errors import ConstantImageError

    with pytest.raises(ConstantImageError, match="blank"):
        bridge.explain_volume(flat, engine=explainer)


def test_a_volume_from_a_ct_file_is_refused_by_the_input_gate(mrml, explainer):
    """A volume's source file goes through the engine's gate: a CT slice loaded in Slicer is refused with the
    sentence naming it, before anything is added to the scene.
    """
    from pathlib import Path

    from pydicom.data import get_testdata_file

    from ChestXrayCounterfactualLib.errors import NotExplainableError

    scene, _, volumes, _, _ = mrml
    volume = load_dicom_file(volumes, Path(get_testdata_file("CT_small.dcm")))
    before = scene.GetNumberOfNodes()
    with pytest.raises(NotExplainableError, match=r"a CT image \(Modality CT\), not a projection radiograph"):
        bridge.explain_volume(volume, engine=explainer)
    assert scene.GetNumberOfNodes() == before
