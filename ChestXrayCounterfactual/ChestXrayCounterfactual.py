"""3D Slicer module ChestXrayCounterfactual: why does a chest X-ray classifier decide what it decides?

Thin by design: the Widget shows, the Logic delegates. The engine (``ChestXrayCounterfactualLib``)
imports nothing from Slicer, and this file nothing from the engine: it reaches it through the package
``ChestXrayCounterfactualSlicer`` (``bridge`` calls the engine, ``volumes``, ``results`` and ``views`` make every
MRML and view change, ``database`` loads and exports through Slicer's DICOM database), imported at file scope.
The Python requirements are checked and installed (with consent) by ``ChestXrayCounterfactualSlicer.requirements``
on first use, so no package from them is imported at file scope.
"""

from __future__ import annotations

import logging
import os
import time
import unittest
from typing import Annotated

import qt
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

from ChestXrayCounterfactualSlicer import bridge, database, requirements, views, volumes
from ChestXrayCounterfactualSlicer.bridge import (  # names only: no torch
    CancelledError,
    input_lines,
    methods,
    strength_line,
)

LAYERS = ["original", "counterfactual", "difference"]
SAMPLE = "nih_chest_pa_cardiomegaly.dcm"
SAMPLE_SHA256 = "5f5ac303fdf813d6fac632fe28927adcbf1eda14e8a2fa49112d77788a134818"


class ChestXrayCounterfactual(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Chest X-ray Counterfactual")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Analysis")]
        self.parent.dependencies = []
        self.parent.contributors = ["The ChestXrayCounterfactual project"]
        self.parent.helpText = _(
            "Explain a chest X-ray classifier: findings with probabilities, a saliency map (where the model looked) "
            "and a counterfactual image (the same radiograph changed just enough for the model to change its mind). "
            "Research and education only, not for diagnosis. Documentation: README.md of the extension's source "
            "repository (Extensions Manager, extension details). Needs Slicer 5.12 or later and the PyTorch extension.")
        self.parent.acknowledgementText = _(
            "Bundled models trained on NIH ChestX-ray14 (NIH Clinical Center; Wang et al., CVPR 2017) and the Hannover "
            "Medical School COVID-19 image repository (CC BY 3.0). Methods: Latent Shift (Cohen et al.), local "
            "counterfactuals, EigenFind (CheXplaining in Style); saliency from captum.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """The bundled radiograph in the Sample Data module (copied from the module's Resources, no download)."""
    import SampleData

    here = os.path.dirname(__file__)
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="Chest X-ray Counterfactual",
        sampleName="Chest PA, cardiomegaly (NIH)",
        thumbnailFileName=os.path.join(here, "Resources", "Icons", "ChestXrayCounterfactual.png"),
        uris=qt.QUrl.fromLocalFile(os.path.join(here, "Resources", "SampleData", SAMPLE)).toString(),
        fileNames=SAMPLE,
        nodeNames="Chest PA cardiomegaly",
        checksums=f"SHA256:{SAMPLE_SHA256}",
        loadFileTypes="VolumeFile",  # not the DICOM reader: it would import the cache folder and load nothing
        loadFileProperties={"singleFile": True},
    )


@parameterNodeWrapper
class ChestXrayCounterfactualParameterNode:
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    finding: str = ""
    saliencyMethod: Annotated[str, Choice(list(methods.SALIENCY_METHODS))] = methods.DEFAULT_SALIENCY
    counterfactualMethod: Annotated[str, Choice(list(methods.COUNTERFACTUAL_METHODS))] = methods.DEFAULT_COUNTERFACTUAL
    direction: Annotated[str, Choice(["auto", *methods.DIRECTIONS])] = "auto"
    strength: Annotated[str, Choice(list(methods.STRENGTHS))] = methods.DEFAULT_STRENGTH
    saliencyOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
    # The last explanation's nodes: cleared by the wrapper when the nodes leave the scene.
    saliencyVolume: slicer.vtkMRMLScalarVolumeNode
    counterfactualVolume: slicer.vtkMRMLScalarVolumeNode
    differenceVolume: slicer.vtkMRMLScalarVolumeNode
    sequenceBrowser: slicer.vtkMRMLSequenceBrowserNode


class ChestXrayCounterfactualWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    MODEL_SETS_KEY = "ChestXrayCounterfactual/ModelSets"

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._explanation = None  # the last engine result, for DICOM export; not kept past the scene
        self._running = False  # an explanation is under way (its progress dialog processes events)
        self._sceneClosedDuringRun = False

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
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacity)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.playButton.connect("toggled(bool)", self.onPlay)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self._sceneClosedDuringRun = self._running  # the run stops at its next progress report
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self._explanation = None
        self.ui.findingsTable.setRowCount(0)
        self.ui.statusLabel.text = ""
        self.ui.playButton.checked = False
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = self.logic.firstRadiograph()
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        """Actions are enabled only when what they act on exists (the result nodes leave with the scene)."""
        p = self._parameterNode
        ready = self._hasInput()
        explained = bool(ready and p.counterfactualVolume and p.saliencyVolume and p.differenceVolume)
        self.ui.analyzeButton.enabled = ready
        self.ui.explainButton.enabled = ready
        for widget in (self.ui.layerComboBox, self.ui.colorMapComboBox, self.ui.opacitySlider, self.ui.compareButton):
            widget.enabled = explained
        self.ui.playButton.enabled = bool(explained and p.sequenceBrowser)
        self.ui.exportDicomButton.enabled = bool(explained and self._explanation is not None)
        # Radiographs only: this module's results are not offered as an input (set only when they change, since
        # each assignment makes the selector filter the scene again).
        proxy, results = self.ui.inputSelector.sortFilterProxyModel(), self.logic.resultVolumeIDs()
        if list(proxy.hiddenNodeIDs) != results:
            proxy.hiddenNodeIDs = results

    def _requirementsReady(self) -> bool:
        """Check (and with consent install) the requirements; a failure is shown, and the action stops.
        No wait cursor here: the questions come first, and the install shows its own wait cursor.
        """
        try:
            with slicer.util.tryWithErrorDisplay(_("The Python requirements are not met.")):
                return self.logic.setupPythonRequirements()
        except Exception:  # shown to the user by tryWithErrorDisplay
            return False

    def _fillModelSets(self) -> None:
        """Bundled first, then the spec files the user added (application settings, not the scene)."""
        combo = self.ui.modelSetComboBox
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(_("Bundled (NIH, 224 px)"), "")
        for spec in self._modelSets():
            combo.addItem(os.path.basename(spec), spec)
        combo.blockSignals(False)

    def _modelSets(self) -> list[str]:
        specs = qt.QSettings().value(self.MODEL_SETS_KEY) or []
        return [specs] if isinstance(specs, str) else list(specs)

    def onAddModelSet(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Model-set spec"), "", "JSON (*.json)")
        if not path or not self._requirementsReady():
            return
        with slicer.util.tryWithErrorDisplay(_("This model-set spec cannot be used."), waitCursor=True):
            self.logic.checkModelSet(path)
            qt.QSettings().setValue(self.MODEL_SETS_KEY, [s for s in self._modelSets() if s != path] + [path])
            self._fillModelSets()
            self.ui.modelSetComboBox.setCurrentIndex(self.ui.modelSetComboBox.count - 1)

    def onModelSet(self, index: int) -> None:
        self.logic.modelSet = self.ui.modelSetComboBox.itemData(index) or None

    def onLoadFile(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            _("Load a chest X-ray"),
            "",
            _("DICOM or image (*.dcm *.png *.jpg *.nrrd *.nii *.nii.gz *.mha);;All files (*)"),
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the file."), waitCursor=True):
            self._parameterNode.inputVolume = self.logic.loadFile(path)

    def _hasInput(self) -> bool:
        return bool(self._parameterNode and self._parameterNode.inputVolume)

    def onAnalyze(self) -> None:
        if not self._hasInput() or not self._requirementsReady():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not analyze the radiograph."), waitCursor=True):
            started = time.perf_counter()
            probabilities, thresholds = self.logic.analyze(self._parameterNode.inputVolume)
            text = _("Analyzed in {seconds:.1f} s (the first time includes loading the models).")
            self.ui.statusLabel.text = text.format(seconds=time.perf_counter() - started)
            table = self.ui.findingsTable
            table.setRowCount(len(probabilities))
            best = max(probabilities, key=lambda f: probabilities[f] - thresholds[f])
            for row, (finding, p) in enumerate(probabilities.items()):
                for column, text in enumerate((finding, f"{p:.3f}", f"{thresholds[finding]:.3f}")):
                    table.setItem(row, column, qt.QTableWidgetItem(text))
            table.selectRow(list(probabilities).index(best))
            self._parameterNode.finding = best

    def onFindingSelected(self) -> None:
        rows = self.ui.findingsTable.selectionModel().selectedRows()
        if rows:
            self._parameterNode.finding = self.ui.findingsTable.item(rows[0].row(), 0).text()

    def onExplain(self) -> None:
        """Explain the input, one run at a time: the progress dialog is application-modal and the panel is
        disabled while it runs; closing the scene mid-run cancels it, so nothing lands in the next scene.
        """
        if self._running or not self._hasInput() or not self._requirementsReady():
            return
        self._running, self._sceneClosedDuringRun = True, False
        self.parent.enabled = False
        try:
            self._explain()
        finally:
            self._running = False
            self.parent.enabled = True

    def _explain(self) -> None:
        started = time.perf_counter()
        p = self._parameterNode
        dialog = slicer.util.createProgressDialog(
            labelText=_("Explaining..."), maximum=100, windowTitle=_("Chest X-ray Counterfactual"),
            windowModality=qt.Qt.ApplicationModal,
        )

        def progress(stage: str, fraction: float) -> bool:
            dialog.labelText = stage.replace("_", " ")
            dialog.value = int(100 * fraction)
            slicer.app.processEvents()
            return not (dialog.wasCanceled or self._sceneClosedDuringRun)

        try:
            with slicer.util.tryWithErrorDisplay(_("Could not explain the radiograph."), waitCursor=True):
                try:
                    nodes = self.logic.explainVolume(
                        p.inputVolume,
                        finding=p.finding or None,
                        method=p.counterfactualMethod,
                        saliency=p.saliencyMethod,
                        direction=None if p.direction == "auto" else p.direction,
                        strength=p.strength,
                        progress=progress,
                    )
                except CancelledError:  # the user's choice, not an error
                    self.ui.statusLabel.text = (
                        _("Cancelled: the scene was closed, and nothing was added to the new one.")
                        if self._sceneClosedDuringRun
                        else _("Cancelled: nothing was added to the scene.")
                    )
                    return
                self._explanation = nodes["explanation"]
                with slicer.util.NodeModify(p):
                    p.saliencyVolume = nodes["saliency"]
                    p.counterfactualVolume = nodes["counterfactual"]
                    p.differenceVolume = nodes["difference"]
                    p.sequenceBrowser = nodes["sequence_browser"]
                explanation = nodes["explanation"]
                record = explanation.record()
                lines = [explanation.summary(), strength_line(record), *input_lines(record)]
                lines.append(_("Explain took {seconds:.1f} s from the click to the layers.").format(
                    seconds=time.perf_counter() - started,
                ))
                self.ui.statusLabel.text = "\n".join(lines)
                self.ui.layerComboBox.setCurrentIndex(0)
                self.logic.setSaliencyOpacity(p.saliencyOpacity)
        finally:
            dialog.close()

    def onShowLayer(self, index: int) -> None:
        p = self._parameterNode
        if p and p.counterfactualVolume:
            with slicer.util.tryWithErrorDisplay(_("Could not show the layer."), waitCursor=True):
                self.logic.showLayer(p.inputVolume, self._results(), LAYERS[index], p.saliencyOpacity)

    def onColorMap(self, index: int) -> None:
        p = self._parameterNode
        if p and p.saliencyVolume:
            with slicer.util.tryWithErrorDisplay(_("Could not change the colours.")):
                self.logic.setSaliencyColorMap(p.saliencyVolume, self.ui.colorMapComboBox.currentText)

    def onOpacity(self, opacity: float) -> None:
        if self._parameterNode and self._parameterNode.saliencyVolume:
            self.logic.setSaliencyOpacity(opacity)

    def onCompare(self) -> None:
        p = self._parameterNode
        if p and p.counterfactualVolume:
            with slicer.util.tryWithErrorDisplay(_("Could not compare side by side.")):
                self.logic.compare(p.inputVolume, p.counterfactualVolume)

    def onPlay(self, playing: bool) -> None:
        p = self._parameterNode
        if p and p.sequenceBrowser:
            with slicer.util.tryWithErrorDisplay(_("Could not play the animation.")):
                self.logic.play(p.sequenceBrowser, playing, p.inputVolume)

    def onExportDicom(self) -> None:
        p = self._parameterNode
        if not (p and p.counterfactualVolume and self._explanation is not None):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not export to DICOM."), waitCursor=True):
            outputs = self.logic.exportDicom(self._explanation)
            self.ui.statusLabel.text = _("{count} DICOM objects added to the DICOM database. {notes}").format(
                count=len(outputs.files), notes=" ".join(outputs.notes),
            )

    def _results(self) -> dict:
        p = self._parameterNode
        return {
            "saliency": p.saliencyVolume,
            "counterfactual": p.counterfactualVolume,
            "difference": p.differenceVolume,
        }


class ChestXrayCounterfactualLogic(ScriptedLoadableModuleLogic):
    """Usable from Slicer's Python without the GUI; raises on failure (the Widget displays errors)."""

    def __init__(self, modelSet: str | None = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.modelSet = modelSet  # a model-set spec file; None: the bundled models

    def getParameterNode(self):
        return ChestXrayCounterfactualParameterNode(super().getParameterNode())

    def resourcePath(self, relativePath: str) -> str:
        return os.path.join(os.path.dirname(__file__), "Resources", relativePath)

    def setupPythonRequirements(self, install: bool = True) -> bool:
        """True when torch, captum, pydicom, ... are installed at the versions we need. With ``install``
        what is missing is installed once the user agrees; without, nothing is ever installed (see
        ``ChestXrayCounterfactualSlicer.requirements.ensure``; never installs in testing mode).
        """
        return requirements.ensure(self.resourcePath("requirements.txt"), install)

    def firstRadiograph(self):
        """The first volume the input selector offers (a plain scalar volume this module did not make)."""
        return volumes.first_radiograph()

    def resultVolumeIDs(self) -> list[str]:
        """IDs of the volumes this module made, which the input selector does not offer."""
        return volumes.result_volume_ids()

    def checkModelSet(self, path: str) -> None:
        """Load and verify a model-set spec (raises with the reason if it cannot be used)."""
        bridge.explainer(path)

    def loadFile(self, path: str):
        """A file as a volume node, in its patient's study when Slicer's DICOM database is open."""
        return database.load_file(path)

    def analyze(self, volumeNode):
        """(probabilities, thresholds) of every finding of the model set."""
        return bridge.analyze(volumeNode, self.modelSet)

    def explainVolume(self, volumeNode, progress=None, **choices) -> dict:
        """Explain a volume as ``choices`` say (the fields of ``ExplainOptions``: ``finding=``, ``method=``, ...);
        the created nodes by role (see ``ChestXrayCounterfactualSlicer.results.add_results``).
        """
        options = bridge.ExplainOptions(**choices)
        return bridge.explain_volume(volumeNode, options, bridge.explainer(self.modelSet), progress)

    def explainFiles(self, paths, outputDir, **choices) -> list:
        """Explain files into ``outputDir`` (one folder each) as ``choices`` say (the fields of ``ExplainOptions``),
        as the command line does; one ``FileResult`` per input. A bad option raises ``ValueError`` before any file
        is read.
        """
        options = bridge.ExplainOptions(**choices)
        return bridge.explain_files(paths, outputDir, options, self.modelSet)

    def exportDicom(self, explanation, folder: str | None = None):
        """Write an explanation as DICOM series of the input's study and add them to Slicer's DICOM database."""
        return database.export_dicom(explanation, folder)

    def setSaliencyOpacity(self, opacity: float) -> None:
        views.set_saliency_opacity(opacity)

    def setSaliencyColorMap(self, saliencyNode, name: str) -> None:
        views.set_saliency_colors(saliencyNode, name)

    def showLayer(self, inputVolume, nodes: dict, which: str, opacity: float = 0.4) -> None:
        """``which``: "original" (with the saliency over it), "counterfactual" or "difference"."""
        background = inputVolume if which == "original" else nodes[which]
        views.show_layers(background, nodes["saliency"] if which == "original" else None, opacity)

    def compare(self, inputVolume, counterfactual) -> None:
        """Side-by-side linked views: original left, counterfactual right."""
        views.compare_side_by_side(inputVolume, counterfactual)
        slicer.app.processEvents()  # the layout manager sizes the new views before they are fitted
        views.fit_views(("Red", "Yellow"))

    def play(self, browser, playing: bool, inputVolume) -> None:
        views.play(browser, playing, inputVolume)


class ChestXrayCounterfactualTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (``--testing``) on the bundled sample radiograph. It never installs anything:
    without the Python requirements it is skipped with the reason.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        try:
            self.test_explain_sample()
        except unittest.SkipTest as skipped:
            self.delayDisplay(f"Skipped: {skipped}")

    def sampleFile(self) -> str:
        return os.path.join(os.path.dirname(__file__), "Resources", "SampleData", SAMPLE)

    def test_explain_sample(self):
        logic = ChestXrayCounterfactualLogic()
        if not logic.setupPythonRequirements(install=False):
            message = (
                "the Python requirements (PyTorch, captum, ...) are not installed, and tests never install them; "
                "open the module and press Analyze once to install them"
            )
            logging.warning("ChestXrayCounterfactual test skipped: %s", message)
            self.skipTest(message)
        self.delayDisplay("Loading the bundled sample")
        volume = slicer.util.loadVolume(self.sampleFile(), {"singleFile": True, "show": False})
        original = slicer.util.arrayFromVolume(volume).copy()
        probabilities, _thresholds = logic.analyze(volume)
        self.assertIn("Cardiomegaly", probabilities)
        nodes = logic.explainVolume(volume)
        for key in ("saliency", "counterfactual", "difference"):
            self.assertEqual(slicer.util.arrayFromVolume(nodes[key]).shape, original.shape)
        self.assertTrue((slicer.util.arrayFromVolume(volume) == original).all())
        self.assertGreater(nodes["sequence"].GetNumberOfDataNodes(), 1)
        logging.info("explained %s: %s", volume.GetName(), nodes["explanation"].flipped)
        self.delayDisplay("Test passed")
