"""A Slicer application for tests: real Qt (PySide6, offscreen, with PythonQt's conventions), real MRML
(slicer-core), Slicer's own Python (``slicer.util`` from slicer-core; ScriptedLoadableModule,
parameterNodeWrapper, i18n and packaging copied from Slicer v5.12.3 into ``python/``), and stand-ins
built from the real headers for what only the application has (``slicer.app``, CTK and qMRML widgets,
the layout manager, the DICOM database, the module factory).

    harness = start(tmp_path)
    module, widget = harness.load_module(ROOT / "ChestXrayCounterfactual" / "ChestXrayCounterfactual.py")
    harness.enter(widget)
    widget.ui.analyzeButton.click()

The behaviour mixins below implement, for each stand-in, just what Slicer's Python code in the module,
slicer.util and the parameterNodeWrapper uses; everything else the real class has raises NotEmulated.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import shutil
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent

from . import pythonqt

pythonqt.install()

import qt
import slicer

if str(HERE / "python" / "slicer") not in slicer.__path__:
    slicer.__path__.append(str(HERE / "python" / "slicer"))  # Slicer's own Python modules copied here


def _use_slicer_util_of_this_release() -> None:
    """``slicer.util`` from the copied release (python/slicer/util.py), not slicer-core's later one."""
    path = HERE / "python" / "slicer" / "util.py"
    if getattr(sys.modules.get("slicer.util"), "__file__", None) == str(path):
        return
    spec = importlib.util.spec_from_file_location("slicer.util", path)
    util = importlib.util.module_from_spec(spec)
    sys.modules["slicer.util"] = util
    spec.loader.exec_module(util)
    slicer.util = util


_use_slicer_util_of_this_release()
import shiboken6
from PySide6 import QtCore, QtWidgets

from .standins import build, python_class, python_module

#: The Slicer release the stand-ins and copied Python files come from.
SLICER_VERSION = (5, 12)


def _paint_combo(widget, text: str) -> None:
    """Draw ``widget`` as Qt's own combo box showing ``text`` (for screenshots of the panel)."""
    option = QtWidgets.QStyleOptionComboBox()
    option.initFrom(widget)
    option.currentText = text
    painter = QtWidgets.QStylePainter(widget)
    painter.drawComplexControl(QtWidgets.QStyle.ComplexControl.CC_ComboBox, option)
    painter.drawControl(QtWidgets.QStyle.ControlElement.CE_ComboBoxLabel, option)


def _size_of(kind: type) -> QtCore.QSize:
    return kind().sizeHint()


class MRMLWidget:
    """qMRMLWidget: holds the scene and announces it (the .ui connects this to child widgets)."""

    def setMRMLScene(self, scene) -> None:
        self.__dict__["_scene"] = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self.__dict__.get("_scene")


class NodeComboBox:
    """qMRMLNodeComboBox over a real scene: lists nodes of ``nodeTypes`` (subclasses only when
    ``showChildNodeTypes``), follows additions and removals, keeps a current node.
    """

    def _option(self, name: str, default):
        return self.__dict__.setdefault("_properties", {}).get(name, default)

    def setMRMLScene(self, scene) -> None:
        old = self.mrmlScene()
        if old is not None:
            for tag in self.__dict__.pop("_observers", []):
                old.RemoveObserver(tag)
        self.__dict__["_scene"] = scene
        self.__dict__["_current"] = None
        if scene is not None:
            self.__dict__["_observers"] = tags = []

            def forward(handler):
                def observer(caller, event):
                    if not shiboken6.isValid(self):  # the C++ widget is gone: stop observing, as its destructor would
                        for tag in tags:
                            caller.RemoveObserver(tag)
                        return
                    handler(caller, event)

                return observer

            tags += [
                scene.AddObserver(scene.NodeAddedEvent, forward(self._nodeAdded)),
                scene.AddObserver(scene.NodeRemovedEvent, forward(self._nodeRemoved)),
            ]
        self._selectDefault()

    def mrmlScene(self):
        return self.__dict__.get("_scene")

    def _offered(self, node) -> bool:
        types_ = self._option("nodeTypes", [])
        if self._option("showChildNodeTypes", True):
            offered = any(node.IsA(t) for t in types_)
        else:
            offered = node.GetClassName() in types_
        hidden = node.GetHideFromEditors() and not self._option("showHidden", False)
        hidden = hidden or node.GetID() in self.sortFilterProxyModel().hiddenNodeIDs
        excluded = any(node.IsA(t) for t in self._option("hideChildNodeTypes", []))
        return offered and not hidden and not excluded

    def sortFilterProxyModel(self):
        """The proxy model that filters the scene's nodes (its ``hiddenNodeIDs`` hide nodes here)."""
        if "_proxy" not in self.__dict__:
            self.__dict__["_proxy"] = slicer.qMRMLSortFilterProxyModel()
        return self.__dict__["_proxy"]

    def _nodes(self) -> list:
        scene = self.mrmlScene()
        if scene is None:
            return []
        return [n for n in (scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())) if self._offered(n)]

    def _selectDefault(self) -> None:
        if self.__dict__.get("_current") is None and not self._option("noneEnabled", False) and self._nodes():
            self.setCurrentNode(self._nodes()[0])

    def _nodeAdded(self, scene, event) -> None:
        self._selectDefault()

    def _nodeRemoved(self, scene, event) -> None:
        current = self.__dict__.get("_current")
        if current is not None and not scene.IsNodePresent(current):
            self.setCurrentNode(None)

    def nodeCount(self) -> int:
        return len(self._nodes())

    def paintEvent(self, event) -> None:
        current = self.currentNode()
        _paint_combo(self, current.GetName() if current is not None else "None")

    def sizeHint(self) -> QtCore.QSize:
        return _size_of(QtWidgets.QComboBox)

    def nodeFromIndex(self, index: int):
        return self._nodes()[index]

    def currentNode(self):
        return self.__dict__.get("_current")

    def setCurrentNode(self, node) -> None:
        if isinstance(node, str):
            node = self.mrmlScene().GetNodeByID(node)
        if node is not None and not self._offered(node):
            offered = self._option("nodeTypes", [])
            raise ValueError(f"{node.GetID()} is not offered by this selector (nodeTypes {offered})")
        if node is self.__dict__.get("_current"):
            return
        self.__dict__["_current"] = node
        self.currentNodeChanged[object].emit(node)
        self.currentNodeChanged[bool].emit(node is not None)
        self.currentNodeIDChanged.emit(node.GetID() if node is not None else "")

    def setCurrentNodeID(self, node_id: str) -> None:
        self.setCurrentNode(node_id or None)


class SliderWidget:
    """ctkSliderWidget: a bounded value with a step; announces changes."""

    def _get(self, name: str, default: float) -> float:
        return self.__dict__.setdefault("_values", {}).get(name, default)

    def _set(self, name: str, value: float) -> None:
        self.__dict__.setdefault("_values", {})[name] = float(value)
        if name in ("minimum", "maximum"):
            self._setValue(self._get("value", 0.0))

    def _setValue(self, value: float) -> None:
        value = min(max(float(value), self._get("minimum", 0.0)), self._get("maximum", 99.0))
        if value != self._get("value", 0.0):
            self.__dict__["_values"]["value"] = value
            self.valueChanged.emit(value)

    value = QtCore.Property(float, lambda s: s._get("value", 0.0), _setValue)
    minimum = QtCore.Property(float, lambda s: s._get("minimum", 0.0), lambda s, v: s._set("minimum", v))
    maximum = QtCore.Property(float, lambda s: s._get("maximum", 99.0), lambda s, v: s._set("maximum", v))
    singleStep = QtCore.Property(float, lambda s: s._get("singleStep", 1.0), lambda s, v: s._set("singleStep", v))
    decimals = QtCore.Property(int, lambda s: int(s._get("decimals", 2)), lambda s, v: s._set("decimals", v))

    def setValue(self, value: float) -> None:
        self._setValue(value)

    def paintEvent(self, event) -> None:
        """Qt's slider with the value beside it, as ctkSliderWidget shows it."""
        span = self._get("maximum", 99.0) - self._get("minimum", 0.0)
        option = QtWidgets.QStyleOptionSlider()
        option.initFrom(self)
        option.orientation = QtCore.Qt.Orientation.Horizontal
        option.minimum, option.maximum = 0, 1000
        option.sliderPosition = int(1000 * (self._get("value", 0.0) - self._get("minimum", 0.0)) / (span or 1))
        option.rect = self.rect.adjusted(0, 0, -60, 0)  # PythonQt: Qt properties are attributes
        painter = QtWidgets.QStylePainter(self)
        painter.drawComplexControl(QtWidgets.QStyle.ComplexControl.CC_Slider, option)
        text_area = self.rect.adjusted(self.width - 55, 0, 0, 0)
        painter.drawText(text_area, QtCore.Qt.AlignmentFlag.AlignCenter, f"{self._get('value', 0.0):.2f}")

    def sizeHint(self) -> QtCore.QSize:
        return _size_of(QtWidgets.QSlider)


class CollapsibleButton:
    """ctkCollapsibleButton: a checkable header whose contents collapse."""

    def _setCollapsed(self, collapsed: bool) -> None:
        self.__dict__["_collapsed"] = bool(collapsed)
        self._showContents()
        self.contentsCollapsed.emit(bool(collapsed))

    def _showContents(self) -> None:
        self.setContentsMargins(0, 26, 0, 0)  # room for the header
        collapsed = self.__dict__.get("_collapsed", False)
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindChildOption.FindDirectChildrenOnly):
            child.setVisible(not collapsed)

    collapsed = QtCore.Property(bool, lambda s: s.__dict__.get("_collapsed", False), _setCollapsed)

    def showEvent(self, event) -> None:
        self._showContents()

    def paintEvent(self, event) -> None:
        """The header: an arrow and the title, as ctkCollapsibleButton draws it."""
        painter = QtWidgets.QStylePainter(self)
        option = QtWidgets.QStyleOptionButton()
        option.initFrom(self)
        option.rect = QtCore.QRect(0, 0, self.width, 22)
        painter.drawControl(QtWidgets.QStyle.ControlElement.CE_PushButtonBevel, option)
        arrow = "\u25b8 " if self.__dict__.get("_collapsed") else "\u25be "
        painter.drawText(option.rect.adjusted(8, 0, 0, 0), QtCore.Qt.AlignmentFlag.AlignVCenter, arrow + self.text)


class ModuleParent:
    """qSlicerScriptedLoadableModule: the C++ module object a scripted module's class describes."""


class ModuleWidgetParent:
    """qSlicerScriptedLoadableModuleWidget: the panel a module's Widget fills."""

    isEntered = QtCore.Property(bool, lambda s: s.__dict__.get("_entered", False))


class ModuleManager:
    """qSlicerModuleManager: announces unloading (ScriptedLoadableModuleWidget listens)."""


class SliceController:
    """qMRMLSliceControllerWidget of one slice view."""

    def _logic(self):
        return self.__dict__["_slice_logic"]

    def setSliceOrientation(self, orientation: str) -> None:
        self._logic().GetSliceNode().SetOrientation(orientation)

    def fitSliceToBackground(self) -> None:
        self._logic().FitSliceToBackground()

    def sliceLogic(self):
        return self._logic()

    def mrmlSliceNode(self):
        return self._logic().GetSliceNode()


class SliceWidget:
    """qMRMLSliceWidget: a slice view with its logic and controller."""

    def sliceLogic(self):
        return self.__dict__["_slice_logic"]

    def sliceController(self):
        return self.__dict__["_controller"]

    def mrmlSliceNode(self):
        return self.sliceLogic().GetSliceNode()

    def fitSliceToBackground(self) -> None:
        self.sliceLogic().FitSliceToBackground()


class LayoutManager:
    """qSlicerLayoutManager over the scene's layout node and the application's slice logics."""

    def _setLayout(self, layout: int) -> None:
        self.__dict__["_node"].SetViewArrangement(int(layout))

    layout = QtCore.Property(int, lambda s: s.__dict__["_node"].GetViewArrangement(), _setLayout)

    def setLayout(self, layout: int) -> None:
        self._setLayout(layout)

    def sliceWidget(self, name: str):
        return self.__dict__["_slice_widgets"].get(name)

    def sliceViewNames(self) -> list[str]:
        return list(self.__dict__["_slice_widgets"])


class DICOMDatabase:
    """ctkDICOMDatabase: the files imported in this session, indexed by their UIDs (pydicom reads them)."""

    isOpen = QtCore.Property(bool, lambda s: s.__dict__.get("_open", False))

    def _files(self) -> dict:
        return self.__dict__.setdefault("_index", {})

    def patients(self) -> list[str]:
        return sorted({entry["patient"] for entry in self._files().values()})

    def seriesForFile(self, path: str) -> str:
        return self._files().get(os.path.abspath(path), {}).get("series", "")

    def filesForSeries(self, series: str, hits: int = -1) -> list[str]:
        return [f for f, entry in self._files().items() if entry["series"] == series]

    def seriesForStudy(self, study: str) -> list[str]:
        return sorted({entry["series"] for entry in self._files().values() if entry["study"] == study})

    def fileForInstance(self, instance: str) -> str:
        return next((f for f, entry in self._files().items() if entry["instance"] == instance), "")


class CoreIOManager:
    """qSlicerCoreIOManager for volume files, as Slicer's volumes reader loads them (archetype reader)."""

    def fileType(self, path: str) -> str:
        return "VolumeFile"

    def loadNodes(self, file_type: str, properties: dict, loaded=None, messages=None) -> bool:
        if file_type != "VolumeFile":
            raise NotImplementedError(f"the harness loads volumes only, not {file_type}")
        path = properties["fileName"]
        name = properties.get("name", Path(path).name.split(".")[0])
        if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg"):
            node = self._loadPicture(path, name)  # slicer-core's ITK has no PNG/JPEG reader; Slicer's has
        else:
            options = 4 if properties.get("singleFile") else 0  # vtkSlicerVolumesLogic's single-file bit
            node = slicer.app.applicationLogic().GetModuleLogic("Volumes").AddArchetypeVolume(path, name, options, None)
        if node is not None and loaded is not None:
            loaded.AddItem(node)
        return node is not None

    @staticmethod
    def _loadPicture(path: str, name: str):
        """As Slicer's volumes reader gives a PNG/JPEG: grey as a scalar volume, colour as a vector volume
        (RGB), 1 mm pixels, IJK to RAS = diag(-1, -1, 1).
        """
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB") if image.mode not in ("L", "I;16", "I") else image)
        kind = "vtkMRMLVectorVolumeNode" if pixels.ndim == 3 else "vtkMRMLScalarVolumeNode"
        node = slicer.util.addVolumeFromArray(pixels[None], np.diag([-1.0, -1.0, 1.0, 1.0]), name, kind)
        node.CreateDefaultDisplayNodes()
        return node


class DICOMIndexer:
    """ctkDICOMIndexer: indexes files into the database (pydicom reads the UIDs); what it cannot parse
    it skips, as the real indexer does.
    """

    def addFile(self, database, path: str, copy: bool = False) -> None:
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not indexed: the caller finds no series for the file
            return
        if all(key in ds for key in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")):
            database._files()[os.path.abspath(path)] = {
                "patient": str(ds.PatientID),
                "study": str(ds.StudyInstanceUID),
                "series": str(ds.SeriesInstanceUID),
                "instance": str(ds.SOPInstanceUID),
            }
            imported.append(path)

    def addDirectory(self, database, directory: str, copy: bool = False, include_hidden: bool = True) -> None:
        for path in sorted(Path(directory).rglob("*")):
            if path.is_file():
                self.addFile(database, str(path), copy)

    def waitForImportFinished(self, timeout: int = -1) -> None:
        """Indexing here is synchronous."""


#: Every file the DICOM indexer added, in order (tests check that DICOM went through the database).
imported: list[str] = []


class Application:
    """qSlicerApplication, as the object ``slicer.app`` (the real QApplication answers the Qt part)."""

    def __getattr__(self, name: str):
        if hasattr(QtWidgets.QApplication, name):
            return getattr(QtWidgets.QApplication.instance(), name)
        raise AttributeError(f"qSlicerApplication has no attribute {name}")

    majorVersion = QtCore.Property(int, lambda s: SLICER_VERSION[0])
    minorVersion = QtCore.Property(int, lambda s: SLICER_VERSION[1])
    applicationName = QtCore.Property(str, lambda s: "Slicer")

    def testingEnabled(self) -> bool:
        return self.__dict__.get("_testing", False)

    def settings(self):
        return qt.QSettings()

    def userSettings(self):
        return qt.QSettings()

    def applicationLogic(self):
        return slicer.appLogic

    def layoutManager(self):
        return self.__dict__["_layout_manager"]

    def moduleManager(self):
        return self.__dict__["_module_manager"]

    def coreIOManager(self):
        return self.__dict__["_io_manager"]

    def processEvents(self, *args) -> None:
        QtWidgets.QApplication.processEvents(*args)


class Harness:
    """The application and its scene; see the module docstring."""

    def __init__(self, root: Path, testing: bool) -> None:
        from mrml_scene import new_scene

        self.root = root
        self.panels: list = []  # every module panel made, deleted by close()
        settings_dir = root / "settings"
        QtCore.QSettings.setDefaultFormat(QtCore.QSettings.Format.IniFormat)
        QtCore.QSettings.setPath(QtCore.QSettings.Format.IniFormat, QtCore.QSettings.Scope.UserScope, str(settings_dir))
        QtCore.QCoreApplication.setOrganizationName("SlicerHarness")
        QtCore.QCoreApplication.setApplicationName("Slicer")
        self.scene, self.app_logic, self.volumes, _, _ = new_scene(str(root / "cache"))
        self.user = pythonqt.user
        self.user.__init__()
        imported.clear()
        self.dicom_imports = imported
        self._load_slicer_colors()
        self._install_classes()
        self._install_application(testing)
        self._install_python_modules()

    def _load_slicer_colors(self) -> None:
        """Slicer's Inferno and DivergingBlueRed tables, added as the application adds its ColorFiles
        (vtkMRMLColorLogic::AddDefaultFileNode: a file node with the file's singleton tag).
        """
        for path in sorted((HERE / "python" / "ColorFiles").glob("*.txt")):
            node = slicer.vtkMRMLColorTableNode()
            node.SetName(path.stem)
            node.SetTypeToFile()
            node.SetSingletonTag(slicer.vtkMRMLColorLogic.GetFileColorNodeSingletonTag(str(path)))
            storage = slicer.vtkMRMLColorTableStorageNode()
            storage.SetFileName(str(path))
            storage.ReadData(node)
            self.scene.AddNode(node)

    def _install_classes(self) -> None:
        ctk = types.ModuleType("ctk", "CTK's Python module: stand-ins built from CTK's headers")
        behaviours = {
            "ctkDICOMIndexer": DICOMIndexer,
            "ctkDICOMDatabase": DICOMDatabase,
            "ctkCollapsibleButton": CollapsibleButton,
            "ctkSliderWidget": SliderWidget,
            "qMRMLWidget": MRMLWidget,
            "qMRMLNodeComboBox": NodeComboBox,
        }
        from .standins import INVENTORY

        widgets = {}
        for name, entry in INVENTORY["classes"].items():
            if not name.startswith(("ctk", "qMRML", "qSlicer")) or entry["qt_base"] is None:
                continue
            cls = build(name, behaviours.get(name))
            setattr(ctk if name.startswith("ctk") else slicer, name, cls)
            if issubclass(cls, QtWidgets.QWidget):
                widgets[name] = cls
        sys.modules["ctk"] = ctk
        self.ctk = ctk
        pythonqt.QUiLoader.custom_widgets = widgets

    def _install_application(self, testing: bool) -> None:
        application_class = build("qSlicerApplication", Application, base=QtCore.QObject)
        app = application_class()
        app.__dict__["_testing"] = testing
        main_window = slicer.qSlicerMainWindow()
        main_window.objectName = "qSlicerMainWindow"
        app.__dict__["_main_window"] = main_window
        app.__dict__["_module_manager"] = build("qSlicerModuleManager", ModuleManager, base=QtCore.QObject)()
        app.__dict__["_layout_manager"] = self._layout_manager()
        app.__dict__["_io_manager"] = build("qSlicerCoreIOManager", CoreIOManager, base=QtCore.QObject)()
        database = self.ctk.ctkDICOMDatabase()
        database.__dict__["_open"] = True
        slicer.app = app
        slicer.dicomDatabase = database
        slicer.modules = types.SimpleNamespace()
        slicer.selfTests = {}
        self.app = app

    def _layout_manager(self):
        self.layout_logic = slicer.vtkMRMLLayoutLogic()
        self.layout_logic.SetMRMLScene(self.scene)
        layout_node = self.layout_logic.GetLayoutNode()
        layout_node.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
        manager = build("qSlicerLayoutManager", LayoutManager, base=QtCore.QObject)()
        manager.__dict__["_node"] = layout_node
        widgets = {}
        controller_class = build("qMRMLSliceControllerWidget", SliceController)
        widget_class = build("qMRMLSliceWidget", SliceWidget)
        for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
            logic = self.app_logic.GetSliceLogicByLayoutName(name)
            if logic is None:
                logic = slicer.vtkMRMLSliceLogic()
                logic.SetMRMLApplicationLogic(self.app_logic)
                logic.SetMRMLScene(self.scene)
                logic.AddSliceNode(name).SetOrientation(orientation)
                self.app_logic.GetSliceLogics().AddItem(logic)
            widget, controller = widget_class(), controller_class()
            widget.__dict__.update(_slice_logic=logic, _controller=controller)
            controller.__dict__["_slice_logic"] = logic
            widgets[name] = widget
        manager.__dict__["_slice_widgets"] = widgets
        return manager

    def _install_python_modules(self) -> None:
        volumes = self.volumes

        class ScalarVolumePlugin:
            """As Slicer's DICOMScalarVolumePlugin loads a single-frame radiograph: the archetype reader."""

            loadType = "Scalar Volume"

            def load(self, loadable):
                import pydicom

                node = volumes.AddArchetypeVolume(loadable.files[0], loadable.name, 4, None)
                instances = (str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in loadable.files)
                node.SetAttribute("DICOM.instanceUIDs", " ".join(instances))
                return node

        def get_loadables(fileLists, pluginClassNames=None, messages=None, progressCallback=None, pluginInstances=None):
            loadables = [
                types.SimpleNamespace(files=list(files), name=Path(files[0]).stem, selected=True, confidence=0.5,
                                      derivedItems=[], loadSuccess=None)
                for files in fileLists
            ]
            return {ScalarVolumePlugin(): loadables}, bool(loadables)

        def select_highest(loadablesByPlugin):
            everything = [loadable for loadables in loadablesByPlugin.values() for loadable in loadables]
            best = max((loadable.confidence for loadable in everything), default=0)
            for loadable in everything:
                loadable.selected = loadable.confidence == best

        def load_loadables(loadablesByPlugin, messages=None, progressCallback=None):
            ids = []
            for plugin, loadables in loadablesByPlugin.items():
                for loadable in (loadable for loadable in loadables if loadable.selected):
                    node = plugin.load(loadable)
                    loadable.loadSuccess = node is not None
                    ids += [node.GetID()] if node is not None else []
            return ids

        def import_dicom(dicomDataDir, dicomDatabase=None, copyFiles=False):
            """As DICOMUtils.importDicom: the indexer adds the folder (copies kept in the database folder)."""
            folder = Path(dicomDataDir)
            if copyFiles:
                folder = Path(shutil.copytree(folder, self.root / "dicom-database" / folder.name, dirs_exist_ok=True))
            self.ctk.ctkDICOMIndexer().addDirectory(dicomDatabase or slicer.dicomDatabase, str(folder), False, True)
            return True

        dicomlib = types.ModuleType("DICOMLib")
        dicomlib.DICOMUtils = python_module(
            "DICOMLib.DICOMUtils",
            {
                "importDicom": import_dicom,
                "getLoadablesFromFileLists": get_loadables,
                "selectHighestConfidenceLoadables": select_highest,
                "loadLoadables": load_loadables,
            },
        )
        sys.modules["DICOMLib"] = dicomlib
        sys.modules["DICOMLib.DICOMUtils"] = dicomlib.DICOMUtils

        self.sample_sources: list[dict] = []
        sample_data = python_module("SampleData")
        sample_data.SampleDataLogic = python_class(
            "SampleData.SampleDataLogic",
            {"registerCustomSampleDataSource": lambda **source: self.sample_sources.append(source)},
        )
        sys.modules["SampleData"] = sample_data

        self.torch_installs: list[dict] = []

        def torch_installed() -> bool:
            return importlib.util.find_spec("torch") is not None

        sys.modules["PyTorchUtils"] = types.ModuleType("PyTorchUtils")
        sys.modules["PyTorchUtils"].PyTorchUtilsLogic = python_class(
            "PyTorchUtils.PyTorchUtilsLogic",
            {
                "__init__": lambda self: None,
                "torchInstalled": torch_installed,
                "installTorch": lambda logic, **options: self.torch_installs.append(options),
            },
        )

    def load_module(self, path: Path):
        """What Slicer's scripted-module factory does at start-up, then what selecting the module does:
        import the file, describe the module, create its panel (Widget) and call ``setup``.
        """
        name = path.stem
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(name, path)
        python_module_ = importlib.util.module_from_spec(spec)
        sys.modules[name] = python_module_
        spec.loader.exec_module(python_module_)
        parent = build("qSlicerScriptedLoadableModule", ModuleParent, base=QtCore.QObject)()
        parent.__dict__["_properties"] = {"path": str(path), "name": name}
        module = getattr(python_module_, name)(parent)
        setattr(slicer.modules, name.lower(), parent)
        self.app.startupCompleted.emit()
        panel = build("qSlicerScriptedLoadableModuleWidget", ModuleWidgetParent)()
        panel.setLayout(qt.QVBoxLayout())
        self.panels.append(panel)
        widget = getattr(python_module_, f"{name}Widget")(panel)
        panel.__dict__["_python"] = widget
        widget.setup()
        return module, widget

    def enter(self, widget) -> None:
        widget.parent.__dict__["_entered"] = True
        widget.enter()

    def close(self) -> None:
        """Quit the application: every panel's ``cleanup`` (as Slicer calls it on exit), then the panels, their
        widgets and the application's windows are deleted here, at a known point, not whenever Python's cycle
        collector happens to free them (a panel and its Python Widget refer to each other): a Qt widget tree
        freed from inside unrelated later code, with scene observers still pointing at it, is how a test run
        crashes.
        """
        for panel in reversed(self.panels):
            widget = panel.__dict__.pop("_python", None)
            if widget is not None:
                widget.cleanup()
        self.panels.clear()
        # Then every window of this application, the panels among them (the main window with the dialogs
        # parented to it, the slice views): left alive, the next harness's slicer.util.mainWindow() could find
        # this one and parent a dialog to a window that is deleted mid-run.
        for window in QtWidgets.QApplication.topLevelWidgets():
            if shiboken6.isValid(window):
                shiboken6.delete(window)
        QtWidgets.QApplication.processEvents()  # deferred deletes (message boxes) happen now
        gc.collect()

    def close_scene(self) -> None:
        """File > Close Scene: the scene is cleared (observers see StartClose/EndClose)."""
        self.scene.Clear(0)

    def grab(self, widget, path: Path) -> Path:
        """A PNG of a widget as Qt paints it (offscreen)."""
        widget.resize(420, 900)
        widget.show()
        QtWidgets.QApplication.processEvents()
        widget.grab().save(str(path))
        return path


def start(root: Path, testing: bool = False) -> Harness:
    """A fresh application and scene rooted at ``root`` (settings, caches)."""
    root.mkdir(parents=True, exist_ok=True)
    return Harness(root, testing)

