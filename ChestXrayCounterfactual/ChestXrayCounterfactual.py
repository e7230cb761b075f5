"""3D Slicer module ChestXrayCounterfactual: why does a chest X-ray classifier decide what it decides?

Thin by design: the Widget shows, the Logic delegates to the engine (``ChestXrayCounterfactualLib``),
whose ``scene`` module owns every MRML change. No third-party import happens at file scope: torch,
captum and the rest are checked (and installed with consent) on first use.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated

import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

SALIENCY_METHODS = ["grad-cam", "integrated-gradients", "occlusion", "smoothgrad"]
COUNTERFACTUAL_METHODS = ["latent-shift", "local", "directions"]


class ChestXrayCounterfactual(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Chest X-ray Counterfactual")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Analysis")]
        self.parent.dependencies = []
        self.parent.contributors = ["ChestXrayCounterfactual developers"]
        self.parent.helpText = _(
            "Explain a chest X-ray classifier: findings with probabilities, a saliency map (where the model looked) "
            "and a counterfactual image (the same radiograph changed just enough for the model to change its mind). "
            "Research and education only, not for diagnosis. "
            '<a href="https://github.com/ChestXrayCounterfactual/SlicerChestXrayCounterfactual">Documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "Bundled models trained on NIH ChestX-ray14 (NIH Clinical Center; Wang et al., CVPR 2017) and the Hannover "
            "Medical School COVID-19 image repository (CC BY 3.0). Methods: Latent Shift (Cohen et al.), local "
            "counterfactuals, EigenFind (CheXplaining in Style); saliency from captum."
        )


@parameterNodeWrapper
class ChestXrayCounterfactualParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    finding: str = ""
    saliencyMethod: Annotated[str, Choice(SALIENCY_METHODS)] = "grad-cam"
    counterfactualMethod: Annotated[str, Choice(COUNTERFACTUAL_METHODS)] = "local"
    direction: Annotated[str, Choice(["auto", "remove", "add"])] = "auto"
    saliencyOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4


class ChestXrayCounterfactualWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._lastNodes = {}

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ChestXrayCounterfactual.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ChestXrayCounterfactualLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.loadFileButton.connect("clicked(bool)", self.onLoadFile)
        self.ui.analyzeButton.connect("clicked(bool)", self.onAnalyze)
        self.ui.explainButton.connect("clicked(bool)", self.onExplain)
        self.ui.findingsTable.connect("itemSelectionChanged()", self.onFindingSelected)
        self.ui.layerComboBox.connect("currentIndexChanged(int)", self.onShowLayer)
        self.ui.colorMapComboBox.connect("currentIndexChanged(int)", self.onColorMap)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.playButton.connect("toggled(bool)", self.onPlay)
        self.ui.modelSetComboBox.connect("currentIndexChanged(int)", self.onModelSet)
        self.ui.addModelSetButton.connect("clicked(bool)", self.onAddModelSet)
        self._fillModelSets()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanRun)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanRun)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanRun)
            self._checkCanRun()

    def _checkCanRun(self, caller=None, event=None) -> None:
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.analyzeButton.enabled = ready
        self.ui.explainButton.enabled = ready
        if self._lastNodes.get("saliency"):
            self.logic.setSaliencyOpacity(self._parameterNode.saliencyOpacity)

    MODEL_SETS_KEY = "ChestXrayCounterfactual/ModelSets"

    def _fillModelSets(self) -> None:
        """Bundled first, then the spec files the user added (application settings, not the scene)."""
        specs = slicer.app.settings().value(self.MODEL_SETS_KEY) or []
        specs = [specs] if isinstance(specs, str) else list(specs)
        combo = self.ui.modelSetComboBox
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(_("Bundled (NIH, 224 px)"), "")
        for spec in specs:
            combo.addItem(os.path.basename(spec), spec)
        combo.blockSignals(False)

    def onAddModelSet(self) -> None:
        path = slicer.qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Model-set spec"), "", "JSON (*.json)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("This model-set spec cannot be used."), waitCursor=True):
            from ChestXrayCounterfactualLib import scene

            scene.explainer(path)  # validated (and loaded) before it is remembered
            specs = slicer.app.settings().value(self.MODEL_SETS_KEY) or []
            specs = [specs] if isinstance(specs, str) else list(specs)
            slicer.app.settings().setValue(self.MODEL_SETS_KEY, [s for s in specs if s != path] + [path])
            self._fillModelSets()
            self.ui.modelSetComboBox.setCurrentIndex(self.ui.modelSetComboBox.count - 1)

    def onModelSet(self, index: int) -> None:
        self.logic.modelSet = self.ui.modelSetComboBox.itemData(index) or None

    def onLoadFile(self) -> None:
        path = slicer.qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            _("Load a chest X-ray"),
            "",
            _("DICOM or image (*.dcm *.png *.jpg *.nrrd *.nii *.nii.gz *.mha);;All files (*)"),
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the file."), waitCursor=True):
            self._parameterNode.inputVolume = self.logic.loadFile(path)

    def onAnalyze(self) -> None:
        if not self.logic.setupPythonRequirements():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not analyze the radiograph."), waitCursor=True):
            probabilities, thresholds = self.logic.analyze(self._parameterNode.inputVolume)
            table = self.ui.findingsTable
            table.setRowCount(len(probabilities))
            best = max(probabilities, key=lambda f: probabilities[f] - thresholds[f])
            for row, (finding, p) in enumerate(probabilities.items()):
                for column, text in enumerate((finding, f"{p:.3f}", f"{thresholds[finding]:.3f}")):
                    table.setItem(row, column, slicer.qt.QTableWidgetItem(text))
                if finding == best:
                    table.selectRow(row)
            self._parameterNode.finding = best

    def onFindingSelected(self) -> None:
        rows = self.ui.findingsTable.selectionModel().selectedRows()
        if rows:
            self._parameterNode.finding = self.ui.findingsTable.item(rows[0].row(), 0).text()

    def onExplain(self) -> None:
        if not self.logic.setupPythonRequirements():
            return
        p = self._parameterNode
        dialog = slicer.util.createProgressDialog(
            labelText=_("Explaining..."), maximum=100, windowTitle=_("Chest X-ray Counterfactual")
        )

        def progress(stage: str, fraction: float) -> bool:
            dialog.labelText = stage.replace("_", " ")
            dialog.value = int(100 * fraction)
            slicer.app.processEvents()
            return not dialog.wasCanceled

        try:
            with slicer.util.tryWithErrorDisplay(_("Could not explain the radiograph."), waitCursor=True):
                self._lastNodes = self.logic.explainVolume(
                    p.inputVolume,
                    finding=p.finding or None,
                    method=p.counterfactualMethod,
                    saliency=p.saliencyMethod,
                    direction=None if p.direction == "auto" else p.direction,
                    progress=progress,
                )
                e = self._lastNodes["explanation"]
                self.ui.statusLabel.text = (
                    f"{e.finding}: p {e.p_original:.3f} -> {e.p_counterfactual:.3f} "
                    f"(threshold {e.threshold:.3f}, {'flipped' if e.flipped else 'not flipped'}) "
                    f"in {e.seconds['total']:.1f} s"
                )
                self.logic.setSaliencyOpacity(p.saliencyOpacity)
        finally:
            dialog.close()

    def onShowLayer(self, index: int) -> None:
        if self._lastNodes:
            self.logic.showLayer(
                self._parameterNode.inputVolume, self._lastNodes, ["original", "counterfactual", "difference"][index]
            )

    def onColorMap(self, index: int) -> None:
        if self._lastNodes:
            self.logic.setSaliencyColorMap(self._lastNodes["saliency"], self.ui.colorMapComboBox.currentText)

    def onCompare(self) -> None:
        if self._lastNodes:
            self.logic.compare(self._parameterNode.inputVolume, self._lastNodes["counterfactual"])

    def onPlay(self, playing: bool) -> None:
        if self._lastNodes:
            browser = self._lastNodes["sequence_browser"]
            browser.SetPlaybackActive(playing)
            proxy = browser.GetProxyNode(self._lastNodes["sequence"])
            slicer.util.setSliceViewerLayers(background=proxy if playing else self._parameterNode.inputVolume)


class ChestXrayCounterfactualLogic(ScriptedLoadableModuleLogic):
    """Usable from Slicer's Python without the GUI; raises on failure (the Widget displays errors)."""

    def __init__(self, modelSet: str | None = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.modelSet = modelSet  # a model-set spec file; None: the bundled models

    def getParameterNode(self):
        return ChestXrayCounterfactualParameterNode(super().getParameterNode())

    def setupPythonRequirements(self, askConfirmation: bool = True) -> bool:
        """torch via the PyTorch extension, the rest via pip from Resources/requirements.txt, asked once."""
        try:
            import captum  # noqa: F401
            import pydicom  # noqa: F401
            import torch  # noqa: F401
            import torchvision  # noqa: F401

            return True
        except ImportError:
            pass
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _(
                "Chest X-ray Counterfactual needs PyTorch, torchvision, captum and pydicom. Install them now? "
                "This downloads a few GB and may take several minutes."
            )
        ):
            return False
        try:
            import PyTorchUtils
        except ModuleNotFoundError as error:
            raise RuntimeError(
                _("Install the PyTorch extension from the Extensions Manager, then restart Slicer.")
            ) from error
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            torchLogic.installTorch(
                askConfirmation=False, torchVersionRequirement=">=2.4", torchvisionVersionRequirement=">=0.19"
            )
        requirements = self.resourcePath("requirements.txt")
        if hasattr(slicer, "packaging"):
            slicer.packaging.pip_ensure(
                slicer.packaging.load_requirements(requirements), requester="ChestXrayCounterfactual"
            )
        else:
            slicer.util.pip_install(["-r", requirements])
        return True

    def resourcePath(self, relativePath: str) -> str:
        return os.path.join(os.path.dirname(__file__), "Resources", relativePath)

    def loadFile(self, path: str):
        """A file as a volume node: DICOM through Slicer's DICOM database (patient/study kept), else as an image."""
        import pydicom

        if pydicom.misc.is_dicom(path):
            import ctk
            from DICOMLib import DICOMUtils

            if not slicer.dicomDatabase:
                DICOMUtils.openTemporaryDatabase()
            indexer = ctk.ctkDICOMIndexer()
            indexer.addFile(slicer.dicomDatabase, path, True)
            if hasattr(indexer, "waitForImportFinished"):
                indexer.waitForImportFinished()
            series = pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID
            nodeIds = DICOMUtils.loadSeriesByUID([series])
            if not nodeIds:
                raise RuntimeError(_("Slicer's DICOM plugins could not load {path}").format(path=path))
            return slicer.mrmlScene.GetNodeByID(nodeIds[0])
        return slicer.util.loadVolume(path, {"singleFile": True})

    def analyze(self, volumeNode):
        """(probabilities, thresholds) of every finding of the bundled model set."""
        from ChestXrayCounterfactualLib import scene

        engine = scene.explainer(self.modelSet)
        return engine.predict(scene.radiograph_from_volume(volumeNode)), dict(engine.models.thresholds)

    def explainVolume(
        self, volumeNode, finding=None, method=None, saliency=None, direction=None, progress=None
    ) -> dict:
        """Explain a volume; the created nodes by role (see ``ChestXrayCounterfactualLib.scene.explain_volume``)."""
        from ChestXrayCounterfactualLib import scene

        return scene.explain_volume(
            volumeNode, finding, method, saliency, direction, scene.explainer(self.modelSet), progress
        )

    def explainFiles(self, paths, outputDir, finding=None, method=None, saliency=None, overwrite=False) -> int:
        """The engine CLI's files for each input; returns its exit code (0: all done, 1: some failed)."""
        from ChestXrayCounterfactualLib.cli import main

        args = (["--models", self.modelSet] if self.modelSet else []) + [
            "explain",
            *[str(p) for p in paths],
            "--out",
            str(outputDir),
        ]
        for option, value in (("--finding", finding), ("--method", method), ("--saliency", saliency)):
            if value:
                args += [option, value]
        if overwrite:
            args.append("--overwrite")
        return main(args)

    def setSaliencyOpacity(self, opacity: float) -> None:
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            composite.SetForegroundOpacity(opacity)

    def setSaliencyColorMap(self, saliencyNode, name: str) -> None:
        colorNode = slicer.mrmlScene.GetFirstNodeByName(name) or slicer.util.getFirstNodeByClassByName(
            "vtkMRMLColorTableNode", name
        )
        if colorNode:
            saliencyNode.GetDisplayNode().SetAndObserveColorNodeID(colorNode.GetID())

    def showLayer(self, inputVolume, nodes: dict, which: str) -> None:
        background = {
            "original": inputVolume,
            "counterfactual": nodes["counterfactual"],
            "difference": nodes["difference"],
        }[which]
        slicer.util.setSliceViewerLayers(
            background=background, foreground=nodes["saliency"] if which == "original" else None
        )

    def compare(self, inputVolume, counterfactual) -> None:
        """Side-by-side linked views: original left, counterfactual right."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for viewName, volume in (("Red", inputVolume), ("Yellow", counterfactual)):
            widget = layoutManager.sliceWidget(viewName)
            if widget is None:
                continue
            composite = widget.sliceLogic().GetSliceCompositeNode()
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetForegroundVolumeID(None)
            composite.SetLinkedControl(True)
            widget.sliceController().setOrientation("Axial")
            widget.sliceLogic().FitSliceToAll()


class ChestXrayCounterfactualTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (``--testing``) on the bundled sample radiograph."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_explain_sample()

    def sampleFile(self) -> str:
        return os.path.join(os.path.dirname(__file__), "Resources", "SampleData", "nih_chest_pa_cardiomegaly.dcm")

    def test_explain_sample(self):
        self.delayDisplay("Loading the bundled sample")
        logic = ChestXrayCounterfactualLogic()
        if not logic.setupPythonRequirements(askConfirmation=False):
            self.skipTest("torch is not installed")
        volume = slicer.util.loadVolume(self.sampleFile(), {"singleFile": True, "show": False})
        original = slicer.util.arrayFromVolume(volume).copy()
        probabilities, thresholds = logic.analyze(volume)
        self.assertIn("Cardiomegaly", probabilities)
        nodes = logic.explainVolume(volume)
        for key in ("saliency", "counterfactual", "difference"):
            self.assertEqual(slicer.util.arrayFromVolume(nodes[key]).shape, original.shape)
        self.assertTrue((slicer.util.arrayFromVolume(volume) == original).all())
        self.assertGreater(nodes["sequence"].GetNumberOfDataNodes(), 1)
        logging.info("explained %s: %s", volume.GetName(), nodes["explanation"].flipped)
        self.delayDisplay("Test passed")
