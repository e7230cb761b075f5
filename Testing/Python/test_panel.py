"""The Slicer panel, executed: the module's Widget, .ui and Logic run unmodified on a real Qt (PySide6,
offscreen) with PythonQt's conventions, a real MRML scene (slicer-core), Slicer's own util.py,
ScriptedLoadableModule and parameterNodeWrapper, and stand-ins generated from the real Slicer/CTK
headers (Testing/SlicerHarness). A user's session: load a file, Analyze, pick a finding, Explain
(with progress and Cancel), Show/opacity/colours, Compare, Play, add a model set, close the scene and
press everything again. A slot that raises fails the test (a user would have seen nothing happen).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import sys
import types
import unittest
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6", reason="needs PySide6 (pip install pyside6-essentials)")
slicer = pytest.importorskip("slicer", reason="needs slicer-core")

from conftest import JPEG_BASELINE, ROOT, SAMPLE
from SlicerHarness import application, pythonqt, standins

MODULE_FILE = ROOT / "ChestXrayCounterfactual" / "ChestXrayCounterfactual.py"


@pytest.fixture
def harness(tmp_path):
    pythonqt.slot_errors.clear()
    harness = application.start(tmp_path / "slicer")
    try:
        yield harness
    finally:
        harness.close()
    errors, pythonqt.slot_errors[:] = list(pythonqt.slot_errors), []
    shown = [text for _, text in harness.user.shown]
    unexplained = [e for e in errors if not any(str(e) in text for text in shown)]
    assert not unexplained, f"exceptions escaped from slots with no error dialog (a user saw nothing): {unexplained}"


@pytest.fixture
def panel(harness):
    _, widget = harness.load_module(MODULE_FILE)
    harness.enter(widget)
    return harness, widget


def _load_sample(harness, widget):
    harness.user.files.append(str(SAMPLE))
    widget.ui.loadFileButton.click()
    return widget._parameterNode.inputVolume


def _explain(harness, widget, method: str = "latent-shift"):
    widget.ui.counterfactualMethodComboBox.currentIndex = widget.ui.counterfactualMethodComboBox.findText(method)
    widget.ui.explainButton.click()
    return widget._parameterNode


def _composites():
    return slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")


def test_module_describes_itself_and_registers_its_sample(harness):
    module, _widget = harness.load_module(MODULE_FILE)
    parent = module.parent
    assert parent.title == "Chest X-ray Counterfactual" and parent.categories == ["Analysis"]
    assert parent.contributors == ["The ChestXrayCounterfactual project"]
    assert "http" not in parent.helpText, "the help links only to what exists (the README), no invented URL"
    [source] = harness.sample_sources
    local = source["uris"].removeprefix("file://")
    assert hashlib.sha256(open(local, "rb").read()).hexdigest() == source["checksums"].removeprefix("SHA256:")
    # As SampleData loads it: with the file type and properties given (Slicer's DICOM reader would win
    # a .dcm by confidence, import the folder into the database and load nothing).
    node = slicer.util.loadNodeFromFile(local, source["loadFileTypes"], dict(source["loadFileProperties"]))
    assert slicer.util.arrayFromVolume(node).shape == (1, 320, 320)


def test_input_selector_offers_scalar_radiographs_only(panel):
    harness, widget = panel
    volume = _load_sample(harness, widget)
    label = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    selector = widget.ui.inputSelector
    assert selector.nodeCount() == 1 and selector.currentNode() is volume
    with pytest.raises(ValueError):
        selector.setCurrentNode(label)
    p = _explain(harness, widget)
    assert selector.nodeCount() == 1, "the results (also scalar volumes) are not offered as inputs"
    with pytest.raises(ValueError):
        selector.setCurrentNode(p.counterfactualVolume)


def test_a_user_session_through_every_control(panel, tmp_path):
    harness, widget = panel
    ui = widget.ui
    assert not ui.analyzeButton.enabled and not ui.compareButton.enabled
    volume = _load_sample(harness, widget)
    assert harness.dicom_imports == [str(SAMPLE)], "DICOM goes through Slicer's DICOM database"
    assert ui.inputSelector.currentNode() is volume and ui.analyzeButton.enabled
    original = slicer.util.arrayFromVolume(volume).copy()

    ui.analyzeButton.click()
    assert ui.findingsTable.rowCount == 4
    assert re.fullmatch(r"Analyzed in \d+\.\d s \(the first time includes loading the models\)\.", ui.statusLabel.text)
    assert widget._parameterNode.finding == "Cardiomegaly"
    assert ui.findingsTable.item(ui.findingsTable.currentRow(), 0).text() == "Cardiomegaly"
    effusion = next(r for r in range(4) if ui.findingsTable.item(r, 0).text() == "Effusion")
    ui.findingsTable.selectRow(effusion)
    assert widget._parameterNode.finding == "Effusion"
    ui.findingsTable.selectRow(0 if effusion else 1)
    ui.findingsTable.selectRow(next(r for r in range(4) if ui.findingsTable.item(r, 0).text() == "Cardiomegaly"))

    p = _explain(harness, widget)
    assert ui.statusLabel.text.startswith("Cardiomegaly p ") and "threshold" in ui.statusLabel.text
    assert re.search(r"\nExplain took \d+\.\d s from the click to the layers\.$", ui.statusLabel.text)
    assert p.counterfactualVolume and p.saliencyVolume and p.differenceVolume and p.sequenceBrowser
    assert ui.compareButton.enabled and ui.playButton.enabled
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), original)
    assert [c.GetForegroundVolumeID() for c in _composites()] == [p.saliencyVolume.GetID()] * len(_composites())
    assert not any(kind.endswith("MessageBox") for kind, _ in harness.user.shown)

    ui.opacitySlider.value = 0.7
    assert p.saliencyOpacity == pytest.approx(0.7)
    assert [c.GetForegroundOpacity() for c in _composites()] == pytest.approx([0.7] * len(_composites()))

    ui.colorMapComboBox.currentIndex = ui.colorMapComboBox.findText("Iron")
    assert p.saliencyVolume.GetDisplayNode().GetColorNode().GetName() == "Iron"
    ui.colorMapComboBox.currentIndex = ui.colorMapComboBox.findText("Inferno")
    assert p.saliencyVolume.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeFileInferno.txt"
    assert p.differenceVolume.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"

    for index, background in ((1, p.counterfactualVolume), (2, p.differenceVolume), (0, volume)):
        ui.layerComboBox.currentIndex = index
        assert {c.GetBackgroundVolumeID() for c in _composites()} == {background.GetID()}
    assert {c.GetForegroundVolumeID() for c in _composites()} == {p.saliencyVolume.GetID()}

    ui.compareButton.click()
    layout = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    red, yellow = (harness.app.layoutManager().sliceWidget(v).sliceLogic() for v in ("Red", "Yellow"))
    assert red.GetSliceCompositeNode().GetBackgroundVolumeID() == volume.GetID()
    assert yellow.GetSliceCompositeNode().GetBackgroundVolumeID() == p.counterfactualVolume.GetID()
    normal = slicer.util.arrayFromVTKMatrix(yellow.GetSliceNode().GetSliceToRAS())[:3, 2]
    assert abs(normal[2]) == pytest.approx(1), "the view lies in the radiograph's plane"

    ui.playButton.click()
    browser = p.sequenceBrowser
    proxy = browser.GetProxyNode(browser.GetMasterSequenceNode())
    assert browser.GetPlaybackActive() and {c.GetBackgroundVolumeID() for c in _composites()} == {proxy.GetID()}
    ui.playButton.click()
    assert not browser.GetPlaybackActive()
    assert red.GetSliceCompositeNode().GetBackgroundVolumeID() == volume.GetID()
    assert yellow.GetSliceCompositeNode().GetBackgroundVolumeID() == p.counterfactualVolume.GetID(), "Compare kept"


def test_export_to_dicom_puts_the_results_in_the_input_study(panel):
    import pydicom

    harness, widget = panel
    _load_sample(harness, widget)
    assert not widget.ui.exportDicomButton.enabled
    _explain(harness, widget)
    study = str(pydicom.dcmread(SAMPLE, stop_before_pixels=True).StudyInstanceUID)
    database = slicer.dicomDatabase
    assert len(database.seriesForStudy(study)) == 1
    widget.ui.exportDicomButton.click()
    exported = [f for f in harness.dicom_imports if f != str(SAMPLE)]
    assert len(exported) >= 4 and widget.ui.statusLabel.text.startswith(f"{len(exported)} DICOM objects")
    assert {str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in exported} == {study}
    assert len(database.seriesForStudy(study)) > 1, "the outputs are new series of the input's study"
    assert not any(kind == "ctkMessageBox" for kind, _ in harness.user.shown)
    harness.close_scene()
    assert not widget.ui.exportDicomButton.enabled


def test_explain_shows_progress_and_cancel_adds_nothing(panel):
    harness, widget = panel
    _load_sample(harness, widget)
    seen = []

    def press_cancel_during_the_counterfactual():
        for dialog in application.QtWidgets.QApplication.topLevelWidgets():
            if isinstance(dialog, application.QtWidgets.QProgressDialog) and dialog.isVisible():
                seen.append(dialog.labelText)
                if dialog.labelText == "counterfactual":
                    dialog.cancel()

    timer = application.QtCore.QTimer()
    timer.timeout.connect(press_cancel_during_the_counterfactual)
    timer.start(0)
    before = slicer.mrmlScene.GetNumberOfNodes()
    try:
        _explain(harness, widget)
    finally:
        timer.stop()
    assert "saliency" in seen and "counterfactual" in seen
    assert widget.ui.statusLabel.text.startswith("Cancelled")
    assert slicer.mrmlScene.GetNumberOfNodes() == before
    assert not widget._parameterNode.counterfactualVolume
    assert not any(kind.endswith("MessageBox") for kind, _ in harness.user.shown), "cancelling is not an error"


def _explain_while(harness, widget, monkeypatch, action) -> int:
    """Explain, and ``action()`` once from the event loop while the progress dialog shows the counterfactual
    stage (as a user's click during the run arrives); returns how many runs began (progress dialogs made).
    """
    runs: list[bool] = []
    done: list[bool] = []
    make_dialog = slicer.util.createProgressDialog

    def counted(*args, **kwargs):
        runs.append(True)
        return make_dialog(*args, **kwargs)

    def act_during_the_counterfactual():
        for dialog in application.QtWidgets.QApplication.topLevelWidgets():
            if isinstance(dialog, application.QtWidgets.QProgressDialog) and dialog.isVisible():
                if dialog.labelText == "counterfactual" and not done:
                    done.append(True)
                    action()

    monkeypatch.setattr(slicer.util, "createProgressDialog", counted)
    timer = application.QtCore.QTimer()
    timer.timeout.connect(act_during_the_counterfactual)
    timer.start(0)
    try:
        _explain(harness, widget)
    finally:
        timer.stop()
    assert done, "the action ran during the counterfactual stage"
    return len(runs)


def test_a_second_explain_click_during_a_run_starts_nothing(panel, monkeypatch):
    harness, widget = panel
    _load_sample(harness, widget)
    assert _explain_while(harness, widget, monkeypatch, widget.ui.explainButton.click) == 1, "no nested second run"
    assert widget.ui.statusLabel.text.startswith("Cardiomegaly p ")
    assert widget._parameterNode.counterfactualVolume and widget.ui.explainButton.enabled
    assert not any(kind.endswith("MessageBox") for kind, _ in harness.user.shown)


def test_closing_the_scene_during_a_run_cancels_it_and_leaves_the_new_scene_empty(panel, monkeypatch):
    harness, widget = panel
    _load_sample(harness, widget)
    _explain_while(harness, widget, monkeypatch, harness.close_scene)
    volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
    assert volumes == [], f"nothing of the closed scene's run lands in the new one: {[v.GetName() for v in volumes]}"
    assert not slicer.util.getNodesByClass("vtkMRMLSequenceBrowserNode")
    assert widget.ui.statusLabel.text.startswith("Cancelled: the scene was closed")
    assert not any(kind.endswith("MessageBox") for kind, _ in harness.user.shown), "cancelling is not an error"
    volume = _load_sample(harness, widget)
    _explain(harness, widget)
    assert widget._parameterNode.inputVolume is volume and widget._parameterNode.counterfactualVolume


def test_after_closing_the_scene_every_control_is_safe(panel):
    harness, widget = panel
    _load_sample(harness, widget)
    _explain(harness, widget)
    harness.close_scene()
    ui = widget.ui
    assert ui.statusLabel.text == "" and ui.findingsTable.rowCount == 0
    for control in (ui.analyzeButton, ui.explainButton, ui.compareButton, ui.playButton, ui.layerComboBox):
        assert not control.enabled, control.objectName
    for slot in (widget.onCompare, widget.onAnalyze, widget.onExplain):
        slot()
    widget.onPlay(True)
    widget.onShowLayer(1)
    widget.onColorMap(1)
    widget.onOpacity(0.2)
    assert [kind for kind, _ in harness.user.shown if kind.endswith("MessageBox")] == [], "nothing to complain about"
    volume = _load_sample(harness, widget)
    assert ui.analyzeButton.enabled and widget._parameterNode.inputVolume is volume


def test_a_colour_image_loads_as_a_grey_radiograph(panel, tmp_path):
    import pydicom
    from PIL import Image

    harness, widget = panel
    grey = pydicom.dcmread(SAMPLE).pixel_array.astype(np.uint8)
    path = tmp_path / "chest.png"
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path)
    harness.user.files.append(str(path))
    widget.ui.loadFileButton.click()
    volume = widget._parameterNode.inputVolume
    assert volume.GetClassName() == "vtkMRMLScalarVolumeNode" and widget.ui.inputSelector.currentNode() is volume
    assert not slicer.util.getNodesByClass("vtkMRMLVectorVolumeNode")
    widget.ui.analyzeButton.click()
    assert widget.ui.findingsTable.rowCount == 4


def test_without_an_open_dicom_database_the_file_loads_directly(panel):
    harness, widget = panel
    slicer.dicomDatabase.__dict__["_open"] = False
    volume = _load_sample(harness, widget)
    assert volume is not None and harness.dicom_imports == []
    assert slicer.util.arrayFromVolume(volume).shape == (1, 320, 320)
    assert harness.user.shown == [("QFileDialog", "Load a chest X-ray")], "no temporary database, no dialog"


def test_errors_are_shown_in_a_dialog_not_as_a_traceback(panel, tmp_path):
    harness, widget = panel
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI")
    harness.user.files.append(str(broken))
    widget.ui.loadFileButton.click()
    assert [kind for kind, _ in harness.user.shown].count("ctkMessageBox") == 1
    flat = slicer.util.addVolumeFromArray(np.zeros((1, 64, 64), dtype=np.int16), name="flat")
    widget._parameterNode.inputVolume = flat
    widget.ui.analyzeButton.click()
    [(_, text)] = [shown for shown in harness.user.shown[2:] if shown[0] == "ctkMessageBox"]
    assert text.startswith("Could not analyze the radiograph.")


def test_add_model_set_checks_requirements_first_and_rejects_a_bad_spec(panel, tmp_path):
    harness, widget = panel
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"format": "not a model set"}))
    harness.user.files.append(str(spec))
    widget.ui.addModelSetButton.click()
    assert harness.user.shown[0][0] == "QFileDialog"
    assert any(text.startswith("This model-set spec cannot be used.") for _, text in harness.user.shown)
    assert widget.ui.modelSetComboBox.count == 1, "a spec that cannot be used is not remembered"


def test_add_a_model_set_then_analyze_with_it(panel, tmp_path, explainer):
    from ChestXrayCounterfactualLib.modelset import export_torchscript

    harness, widget = panel
    spec = export_torchscript(explainer.models, tmp_path / "torchscript")
    harness.user.files.append(str(spec))
    widget.ui.addModelSetButton.click()
    combo = widget.ui.modelSetComboBox
    assert combo.count == 2 and combo.currentIndex == 1 and widget.logic.modelSet == str(spec)
    _load_sample(harness, widget)
    widget.ui.analyzeButton.click()
    assert widget.ui.findingsTable.rowCount == 4
    _, again = harness.load_module(MODULE_FILE)
    assert again.ui.modelSetComboBox.count == 2, "the spec is remembered in the application settings"
    combo.currentIndex = 0
    assert widget.logic.modelSet is None


def test_logic_batch_with_a_bad_option_raises_a_sentence_and_slicer_stays_up(panel, tmp_path):
    _, widget = panel
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        widget.logic.explainFiles([SAMPLE], tmp_path / "out", method="nope")
    [result] = widget.logic.explainFiles([JPEG_BASELINE, tmp_path / "missing.dcm"][1:], tmp_path / "out")
    assert result.status == "failed" and "missing.dcm" in result.error
    assert not (tmp_path / "out" / "missing").exists()


def test_headless_script_always_exits_with_a_code(harness, tmp_path, monkeypatch):
    harness.load_module(MODULE_FILE)
    from ChestXrayCounterfactualSlicer import headless, requirements

    codes = []
    headless.main(["--", "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--method", "nope"], codes.append)
    headless.main(["--output", str(tmp_path)], codes.append)
    headless.main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--frames", "1"], codes.append)

    def broken(requirements_file, install=True):
        raise MemoryError("torch could not start")

    monkeypatch.setattr(requirements, "ensure", broken)
    headless.main(["--input", str(tmp_path), "--output", str(tmp_path / "out")], codes.append)
    assert codes == [2, 2, 2, 3]



def test_headless_script_offers_every_option_of_the_command_line(harness, tmp_path):
    harness.load_module(MODULE_FILE)
    from ChestXrayCounterfactualLib.options import ExplainOptions
    from ChestXrayCounterfactualSlicer import bridge, headless

    flags = ["--finding", "Effusion", "--method", "directions", "--saliency", "occlusion", "--direction", "add"]
    flags += ["--strength", "typical", "--frames", "3", "--overwrite", "--anonymize", "--dicom"]
    args = headless.parse(["--", "--input", str(tmp_path), "--output", str(tmp_path / "out"), *flags])
    assert bridge.options_from(args) == ExplainOptions(
        finding="Effusion",
        method="directions",
        saliency="occlusion",
        direction="add",
        strength="typical",
        frames=3,
        overwrite=True,
        anonymize=True,
        dicom=True,
    )

ABSENT = "chestxraycounterfactual-absent-package>=1"
OK, CANCEL, YES = (int(b.value) for b in (application.QtWidgets.QMessageBox.StandardButton.Ok,
                                          application.QtWidgets.QMessageBox.StandardButton.Cancel,
                                          application.QtWidgets.QMessageBox.StandardButton.Yes))


@pytest.fixture
def pip(tmp_path, monkeypatch):
    """Stands in for slicer.packaging.pip_ensure (the one step that would change this environment): it
    checks the call against the real function's signature (Slicer 5.12.3's), records it and "installs" each
    requirement as pip would leave it, a dist-info on sys.path.
    """
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    calls = []

    def pip_ensure(requirements, **options):
        calls.append((requirements, options))
        for line in requirements:
            name = line.split(">")[0].split("=")[0].replace("-", "_")
            info = site / f"{name}-1.0.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")

    real = standins.INVENTORY["python"]["slicer.packaging"]["functions"]["pip_ensure"]
    packaging = types.SimpleNamespace(pip_ensure=standins.checked("slicer.packaging", "pip_ensure", real, pip_ensure))
    monkeypatch.setattr(slicer, "packaging", packaging, raising=False)
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    return calls


def test_requirements_are_checked_by_version_and_never_installed_in_testing_mode(tmp_path, monkeypatch, pip, request):
    harness = application.start(tmp_path / "slicer", testing=True)
    request.addfinalizer(harness.close)
    harness.load_module(MODULE_FILE)
    from ChestXrayCounterfactualSlicer import requirements

    assert requirements.unmet(["pydicom>=99"]) == ["pydicom>=99"], "importable is not enough: the version counts"
    assert requirements.unmet(["pydicom>=3.0"]) == []
    wanted = tmp_path / "requirements.txt"
    wanted.write_text(f"# a package nobody has\n{ABSENT}\n")
    assert requirements.ensure(wanted) is False
    assert pip == [] and harness.torch_installs == [] and harness.user.shown == []

    module = sys.modules["ChestXrayCounterfactual"]
    monkeypatch.setattr(module.ChestXrayCounterfactualLogic, "resourcePath", lambda self, name: str(wanted))
    result = unittest.TestResult()
    module.ChestXrayCounterfactualTest("test_explain_sample").run(result)
    [(_, reason)] = result.skipped
    assert "never install" in reason and pip == [] and harness.torch_installs == []


def test_requirements_install_asks_once_and_keeps_pip_away_from_torch(harness, tmp_path, pip):
    harness.load_module(MODULE_FILE)
    from ChestXrayCounterfactualSlicer import requirements

    wanted = tmp_path / "requirements.txt"
    wanted.write_text(f"pydicom>=3.0\n{ABSENT}\n")
    harness.user.answers.append(CANCEL)
    assert requirements.ensure(wanted) is False and pip == [], "declined: nothing installed"
    assert requirements.ensure(wanted) is True
    [(installed, options)] = pip
    assert installed == [ABSENT] and options["prompt_install"] is False, "asked once, by the module"
    pins = Path(options["constraints"]).read_text()
    torch = importlib.metadata.version("torch")
    assert f"torch=={torch}" in pins, "pip can never replace the PyTorch extension's torch"
    assert [kind for kind, _ in harness.user.shown] == ["ctkMessageBox", "ctkMessageBox"]
    assert harness.user.busy_questions == [], "no question is asked under a wait cursor"
    assert requirements.ensure(wanted) is True and len(pip) == 1, "met now: no second install, no question"


def test_the_panel_asks_its_questions_before_the_wait_cursor(panel, tmp_path, monkeypatch, pip):
    """On Slicer 5.12.3 a message box keeps the application's override cursor: a question asked inside a
    wait-cursor block shows a busy cursor over its buttons. The panel asks first, then waits.
    """
    harness, widget = panel
    wanted = tmp_path / "requirements.txt"
    wanted.write_text(f"{ABSENT}\n")
    monkeypatch.setattr(widget.logic, "resourcePath", lambda name: str(wanted))
    _load_sample(harness, widget)
    harness.user.answers.append(OK)
    widget.ui.analyzeButton.click()
    assert next(text for kind, text in harness.user.shown if kind == "ctkMessageBox").startswith("Chest X-ray")
    assert len(pip) == 1 and widget.ui.findingsTable.rowCount == 4
    assert harness.user.busy_questions == [], "no question is asked under a wait cursor"
    assert application.QtWidgets.QApplication.overrideCursor() is None, "every wait cursor was restored"


def test_requirements_check_only_never_installs_or_asks(harness, tmp_path, pip):
    """Batch runs and the module's test (also run from the GUI's Reload and Test) only check."""
    harness.load_module(MODULE_FILE)
    from ChestXrayCounterfactualSlicer import requirements

    wanted = tmp_path / "requirements.txt"
    wanted.write_text(f"{ABSENT}\n")
    assert requirements.ensure(wanted, install=False) is False
    assert pip == [] and harness.torch_installs == [] and harness.user.shown == []


def test_requirements_refuse_an_old_torch_an_old_slicer_or_an_upgrade(harness, tmp_path, monkeypatch, pip):
    harness.load_module(MODULE_FILE)
    from ChestXrayCounterfactualSlicer import requirements

    wanted = tmp_path / "requirements.txt"
    wanted.write_text(f"{ABSENT}\n")
    supported = requirements.TORCH_REQUIREMENTS
    monkeypatch.setattr(requirements, "TORCH_REQUIREMENTS", ("torch>=99", "torchvision>=0.19"))
    harness.user.answers.append(OK)
    with pytest.raises(requirements.RequirementsError, match="PyTorch Utils"):
        requirements.ensure(wanted)
    assert harness.torch_installs == [] and pip == [], "an old torch is not silently replaced"
    monkeypatch.setattr(requirements, "TORCH_REQUIREMENTS", supported)

    # A requirement that only a newer copy of an installed package meets: refused before any question.
    wanted.write_text(f"pydicom>=99\n{ABSENT}\n")
    shown = len(harness.user.shown)
    with pytest.raises(requirements.RequirementsError, match=re.escape("pydicom>=99 (installed: ")):
        requirements.ensure(wanted)
    assert pip == [] and len(harness.user.shown) == shown, "nothing installed, nothing asked"

    monkeypatch.setattr(application, "SLICER_VERSION", (5, 10))
    with pytest.raises(requirements.RequirementsError, match=re.escape("Slicer 5.12 or later")):
        requirements.ensure(wanted)


def test_install_flow_on_slicer_5_12_3_upgrades_none_of_its_packages(harness, tmp_path, monkeypatch, pip):
    """The install flow replayed on the Python of Slicer 5.12.3: its pinned packages (from its SuperBuild,
    recorded in the inventory) plus the PyTorch extension's torch, and nothing of ours.
    """
    harness.load_module(MODULE_FILE)
    from ChestXrayCounterfactualSlicer import requirements

    slicer_packages = standins.INVENTORY["python_packages"]
    assert slicer_packages["highdicom"] == "0.27.0" and slicer_packages["pydicom"] == "3.0.2"
    installed = dict(slicer_packages, torch="2.9.1", torchvision="0.24.1")
    monkeypatch.setattr(
        requirements, "installed_distributions",
        lambda: installed | {requirements.canonical(line.split(">")[0]): "99" for call in pip for line in call[0]},
    )
    ours = MODULE_FILE.parent / "Resources" / "requirements.txt"
    harness.user.answers.append(OK)
    assert requirements.ensure(ours) is True
    [(asked_for, options)] = pip
    asked = {requirements.canonical(line.split(">")[0]) for line in asked_for}
    assert asked, "the packages Slicer lacks are installed"
    assert not asked & set(slicer_packages), f"pip is asked for what Slicer ships: {asked & set(slicer_packages)}"
    pins = Path(options["constraints"]).read_text().split()
    assert {f"{name}=={version}" for name, version in installed.items()} <= set(pins), "pip moves none of them"


#: The defects a review of the first version found, put back one at a time: (where, fixed, broken).
OLD_DEFECTS = {
    "slicer.qt in Load file": (
        "onLoadFile",
        "= qt.QFileDialog.getOpenFileName(",
        "= slicer.qt.QFileDialog.getOpenFileName(",
    ),
    "slicer.qt in the findings table": ("onAnalyze", "qt.QTableWidgetItem(text)", "slicer.qt.QTableWidgetItem(text)"),
    "setOrientation in Compare": (
        "onCompare",
        "views.compare_side_by_side(inputVolume, counterfactual)",
        'slicer.app.layoutManager().sliceWidget("Yellow").sliceController().setOrientation("Axial")',
    ),
    "SystemExit from batch": (
        "batch",
        "        options = bridge.ExplainOptions(**choices)\n",
        (
            '        if choices.get("method") not in ("local", "latent-shift", "directions"):\n'
            "            raise SystemExit(2)\n"
            "        options = bridge.ExplainOptions(**choices)\n"
        ),
    ),
}


@pytest.mark.parametrize("defect", OLD_DEFECTS)
def test_each_old_defect_fails_the_panel_run(harness, tmp_path, defect):
    """The harness catches each defect of the first version: its user step fails as it would in Slicer."""
    step, fixed, broken = OLD_DEFECTS[defect]
    source = MODULE_FILE.read_text()
    assert fixed in source
    variant = tmp_path / "module" / MODULE_FILE.name
    variant.parent.mkdir()
    variant.write_text(source.replace(fixed, broken))
    (variant.parent / "Resources").symlink_to(MODULE_FILE.parent / "Resources")
    _, widget = harness.load_module(variant)
    harness.enter(widget)
    if step == "batch":
        with pytest.raises(SystemExit):
            widget.logic.explainFiles([SAMPLE], tmp_path / "out", method="nope")
        return
    if step != "onLoadFile":
        _load_sample(harness, widget)
    if step == "onCompare":
        _explain(harness, widget)
    button = {"onLoadFile": "loadFileButton", "onAnalyze": "analyzeButton", "onCompare": "compareButton"}[step]
    pythonqt.slot_errors.clear()
    getattr(widget.ui, button).click()
    failures = list(pythonqt.slot_errors) + [text for kind, text in harness.user.shown if kind == "ctkMessageBox"]
    pythonqt.slot_errors.clear()
    harness.user.shown.clear()
    assert any("qt" in str(f) or "setOrientation" in str(f) for f in failures), failures


def test_the_harness_fails_on_calls_a_real_slicer_would_reject(panel, tmp_path):
    """The defects a review found in the first version, as calls: each fails here as it would in Slicer."""
    harness, widget = panel
    controller = harness.app.layoutManager().sliceWidget("Red").sliceController()
    with pytest.raises(AttributeError):
        controller.setOrientation("Axial")
    controller.setSliceOrientation("Sagittal")
    assert harness.app.layoutManager().sliceWidget("Red").mrmlSliceNode().GetOrientation() == "Sagittal"
    assert not hasattr(slicer, "qt"), "Slicer has no slicer.qt"
    with pytest.raises(AttributeError):
        widget.ui.compareButton.connect("clickd(bool)", widget.onCompare)
    misspelt = tmp_path / "ChestXrayCounterfactual.py"
    misspelt.write_text(MODULE_FILE.read_text().replace('"toggled(bool)", self.onPlay', '"toggle(bool)", self.onPlay'))
    for resource in ("Resources",):
        (tmp_path / resource).symlink_to(MODULE_FILE.parent / resource)
    with pytest.raises(AttributeError, match="toggle"):
        harness.load_module(misspelt)


#: Calls PythonQt rejects because the C++ method is neither a slot nor Q_INVOKABLE (only a property's
#: setter), each with the form PythonQt accepts: (injected call, the property form).
NON_SLOT_CALLS = {
    "ctkSliderWidget.setMaximum": ("self.ui.opacitySlider.setMaximum(2.0)", "self.ui.opacitySlider.maximum = 2.0"),
    "qMRMLNodeComboBox.setNodeTypes": (
        'self.ui.inputSelector.setNodeTypes(["vtkMRMLScalarVolumeNode"])',
        'self.ui.inputSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]',
    ),
}


@pytest.mark.parametrize("call", NON_SLOT_CALLS)
def test_a_call_pythonqt_does_not_expose_fails_the_panel(harness, tmp_path, call):
    """Injected into the panel's setup, a plain C++ method fails here as in Slicer; the property form works."""
    anchor = "        uiWidget.setMRMLScene(slicer.mrmlScene)\n"
    source = MODULE_FILE.read_text()
    assert anchor in source
    plain, as_property = NON_SLOT_CALLS[call]
    for folder, line in (("plain", plain), ("property", as_property)):
        variant = tmp_path / folder / MODULE_FILE.name
        variant.parent.mkdir()
        variant.write_text(source.replace(anchor, f"{anchor}        {line}\n"))
        (variant.parent / "Resources").symlink_to(MODULE_FILE.parent / "Resources")
        if line is plain:
            with pytest.raises(AttributeError, match=call.split(".")[1]):
                harness.load_module(variant)
        else:
            _, widget = harness.load_module(variant)
            assert widget.ui.opacitySlider.maximum == 2.0 or widget.ui.inputSelector.nodeTypes
