"""The module's Logic, imported outside Slicer on real MRML (slicer-core).

STUB TEST: Slicer's GUI-side Python modules (ScriptedLoadableModule, parameterNodeWrapper, i18n) are
absent from slicer-core, so minimal stand-ins are installed for the import only. What runs for real is
the Logic's delegation to the engine and the scene code; the Widget is checked only statically
(test_packaging.py) and inside Slicer (the module's Test class).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core")

from conftest import ROOT, SAMPLE  # noqa: E402
from mrml_scene import load_dicom_file, new_scene  # noqa: E402


@pytest.fixture
def module(monkeypatch):
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in (
        "ScriptedLoadableModule",
        "ScriptedLoadableModuleLogic",
        "ScriptedLoadableModuleTest",
        "ScriptedLoadableModuleWidget",
    ):
        setattr(scripted, name, type(name, (), {"__init__": lambda self, *a: None}))
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = wrapper.WithinRange = lambda *a: None
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    for name, stub in (("ScriptedLoadableModule", scripted), ("parameterNodeWrapper", wrapper), ("i18n", i18n)):
        monkeypatch.setitem(sys.modules, f"slicer.{name}", stub)
    monkeypatch.syspath_prepend(str(ROOT / "ChestXrayCounterfactual"))
    monkeypatch.delitem(sys.modules, "ChestXrayCounterfactual", raising=False)
    import ChestXrayCounterfactual

    return ChestXrayCounterfactual


def test_logic_analyzes_and_explains_a_volume_and_files(module, tmp_path):
    _, _, volumes, _, _ = new_scene(str(tmp_path / "cache"))
    volume = load_dicom_file(volumes, SAMPLE)
    logic = module.ChestXrayCounterfactualLogic()
    assert logic.setupPythonRequirements(askConfirmation=False)
    probabilities, thresholds = logic.analyze(volume)
    assert probabilities["Cardiomegaly"] > thresholds["Cardiomegaly"]
    stages = []
    nodes = logic.explainVolume(volume, progress=lambda stage, fraction: stages.append(stage) or True)
    assert nodes["explanation"].finding == "Cardiomegaly" and nodes["explanation"].method == "local"
    assert slicer.util.arrayFromVolume(nodes["counterfactual"]).shape == slicer.util.arrayFromVolume(volume).shape
    assert stages[0] == "model_space" and "counterfactual" in stages
    assert logic.explainFiles([SAMPLE], tmp_path / "out", method="latent-shift") == 0
    assert (tmp_path / "out" / SAMPLE.stem / "explanation.json").exists()


def test_logic_cancel_stops_the_explanation(module, tmp_path):
    from ChestXrayCounterfactualLib import CancelledError

    _, _, volumes, _, _ = new_scene(str(tmp_path / "cache"))
    volume = load_dicom_file(volumes, SAMPLE)
    before = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(CancelledError):
        module.ChestXrayCounterfactualLogic().explainVolume(volume, progress=lambda stage, f: stage != "saliency")
    assert slicer.mrmlScene.GetNumberOfNodes() == before, "a cancelled run adds nothing to the scene"
    assert np.isfinite(slicer.util.arrayFromVolume(volume)).all()
