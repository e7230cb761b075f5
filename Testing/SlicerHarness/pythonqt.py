"""PythonQt's calling conventions on PySide6, so Slicer module code runs unmodified on a real Qt.

What Slicer's Python sees of Qt, and how this reproduces it:

- a module ``qt`` with the classes of QtCore, QtGui, QtWidgets and QtUiTools;
- ``obj.connect("clicked(bool)", slot)``: the signature is resolved against the object's real signals
  (its meta-object, or for stand-ins the signatures of the real C++ class); an unknown signal raises
  (PythonQt only prints a warning and connects nothing, so a misspelt signal is a silent dead button);
- Qt properties as attributes, ahead of methods of the same name (``combo.count`` is an int,
  ``label.text = "x"`` sets it; assigning a read-only property raises); ``obj.name`` is ``objectName``;
- static ``QFileDialog.getOpenFileName`` returns the path only, and modal ``exec``/``exec_`` never
  block: both are answered by :data:`user`, the scripted user of a test.
"""

from __future__ import annotations

import os
import sys
import types
import xml.etree.ElementTree as ET
from collections import deque

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets

_ORIGINAL_GETATTRIBUTE = QtCore.QObject.__getattribute__
#: Shiboken.Object's: the one original that Python's C-level setattr check accepts on every subclass.
_ORIGINAL_SETATTR = QtCore.QObject.__mro__[-2].__dict__["__setattr__"]


class ScriptedUser:
    """Answers what a real user would answer in dialogs, in order, and remembers what was shown."""

    def __init__(self) -> None:
        self.files: deque[str] = deque()
        self.answers: deque[int] = deque()
        self.shown: list[tuple[str, str]] = []
        #: Dialogs shown while the application had an override cursor (a busy cursor over the buttons).
        self.busy_questions: list[str] = []

    def open_file(self, *args) -> str:
        self.shown.append(("QFileDialog", str(args[1] if len(args) > 1 else "")))
        return self.files.popleft() if self.files else ""

    def exec_dialog(self, dialog) -> int:
        text = dialog.text if isinstance(dialog, QtWidgets.QMessageBox) else dialog.windowTitle
        self.shown.append((type(dialog).__name__, text))
        if QtWidgets.QApplication.overrideCursor() is not None:
            self.busy_questions.append(text)
        if self.answers:
            return self.answers.popleft()
        return int(QtWidgets.QMessageBox.StandardButton.Ok.value)


user = ScriptedUser()

#: Exceptions raised in slots. Qt cannot pass them to the caller (PythonQt, like PySide, prints them to
#: the console), so a test fails if any are left here: a user would have seen nothing happen.
slot_errors: list[BaseException] = []


def _record_slot_error(kind, value, traceback) -> None:
    slot_errors.append(value)
    sys.__excepthook__(kind, value, traceback)


def normalized(signature: str) -> str:
    return QtCore.QMetaObject.normalizedSignature(signature).data().decode()


def connect(obj: QtCore.QObject, signature: str, slot) -> bool:
    """PythonQt's ``obj.connect(signature, slot)``; raises if ``obj`` has no such signal."""
    wanted = normalized(signature)
    mapped = getattr(type(obj), "_signal_signatures", {}).get(wanted)
    if mapped is None and QtCore.QObject.metaObject(obj).indexOfSignal(wanted) >= 0:
        mapped = wanted
    if mapped is None:
        raise AttributeError(f"{type(obj).__name__} has no signal {signature} (PythonQt would connect nothing)")
    QtCore.QObject.connect(obj, QtCore.SIGNAL(mapped), slot)
    return True


def disconnect(obj: QtCore.QObject, signature: str, slot) -> bool:
    wanted = normalized(signature)
    mapped = getattr(type(obj), "_signal_signatures", {}).get(wanted, wanted)
    return QtCore.QObject.disconnect(obj, QtCore.SIGNAL(mapped), slot)


def _property(obj: QtCore.QObject, name: str) -> QtCore.QMetaProperty | None:
    meta = QtCore.QObject.metaObject(obj)
    index = meta.indexOfProperty(name)
    return meta.property(index) if index >= 0 else None


#: Properties read by a virtual C++ method of the same name: PySide looks these names up on the object
#: to find Python overrides whenever Qt calls them, so they must stay methods here (PythonQt would give
#: the property value; Slicer module code does not read them).
_VIRTUAL_GETTERS = frozenset({"sizeHint", "minimumSizeHint"})


def _getattribute(self, name: str):
    if name.startswith("_") or name in _VIRTUAL_GETTERS:
        return _ORIGINAL_GETATTRIBUTE(self, name)
    if name == "connect":
        return lambda signature, slot: connect(self, signature, slot)
    if name == "disconnect":
        return lambda signature, slot: disconnect(self, signature, slot)
    if name in ("exec", "exec_") and isinstance(self, (QtWidgets.QDialog, QtWidgets.QMenu)):
        return lambda *args: user.exec_dialog(self)
    if name == "name":
        name = "objectName"
    prop = _property(self, name)
    if prop is not None and prop.isReadable():
        return prop.read(self)  # not QObject.property(): PySide's looks the name up on the object again
    return _ORIGINAL_GETATTRIBUTE(self, name)


def _setattr(self, name: str, value) -> None:
    if not name.startswith("_"):
        name = "objectName" if name == "name" else name
        prop = _property(self, name)
        if prop is not None:
            if not prop.isWritable():
                raise AttributeError(f"property {name} of {type(self).__name__} is read-only")
            if not prop.write(self, value):
                raise TypeError(f"cannot set property {name} of {type(self).__name__} to {value!r}")
            return
    _ORIGINAL_SETATTR(self, name, value)


class QFileDialog(QtWidgets.QFileDialog):
    """PythonQt returns the chosen path only; the scripted user chooses."""

    @staticmethod
    def getOpenFileName(*args) -> str:
        return user.open_file(*args)

    @staticmethod
    def getExistingDirectory(*args) -> str:
        return user.open_file(*args)


class QUiLoader(QtUiTools.QUiLoader):
    """Loads a Slicer .ui with the stand-ins registered, then makes its <connections> the PythonQt way
    (the C++ signatures there name types such as ``vtkMRMLScene*``). Fails on a custom widget without a
    stand-in (Qt would silently make it a QWidget) and on a property the widget's class lacks.
    """

    custom_widgets: dict[str, type] = {}

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        for cls in self.custom_widgets.values():
            self.registerCustomWidget(cls)

    def load(self, device, parent=None):
        device.seek(0)
        tree = ET.fromstring(bytes(device.readAll()))
        connections = tree.find("connections")
        if connections is not None:
            tree.remove(connections)
        for custom in tree.iter("customwidget"):
            if custom.findtext("class") not in self.custom_widgets:
                raise TypeError(f"no stand-in for the custom widget {custom.findtext('class')}")
        buffer = QtCore.QBuffer()
        buffer.setData(QtCore.QByteArray(ET.tostring(tree)))
        buffer.open(QtCore.QIODevice.OpenModeFlag.ReadOnly)
        root = super().load(buffer, parent)
        if root is None:
            return None
        widgets = {w.objectName: w for w in root.findChildren(QtCore.QObject)} | {root.objectName: root}
        for element in tree.iter("widget"):
            widget = widgets[element.get("name")]
            for prop in element.findall("property"):
                if prop.get("stdset") != "0" and _property(widget, prop.get("name")) is None:
                    owner = f"{element.get('class')} {element.get('name')}"
                    raise AttributeError(f"{owner} has no property {prop.get('name')}")
        for c in connections if connections is not None else []:
            receiver = widgets[c.findtext("receiver")]
            slot_name = c.findtext("slot").split("(")[0]
            connect(widgets[c.findtext("sender")], c.findtext("signal"), getattr(receiver, slot_name))
        return root


def make_qt_module() -> types.ModuleType:
    """The ``qt`` module of Slicer's Python."""
    qt = types.ModuleType("qt", "PythonQt's qt module, emulated on PySide6 (Testing/SlicerHarness/pythonqt.py)")
    for module in (QtCore, QtGui, QtWidgets, QtUiTools):
        for name in dir(module):
            if name.startswith("Q") or name == "Qt":
                setattr(qt, name, getattr(module, name))
    qt.QFileDialog = QFileDialog
    qt.QUiLoader = QUiLoader
    return qt


def install() -> QtWidgets.QApplication:
    """Patch QObject with PythonQt's conventions, register ``qt``, and start the one QApplication."""
    sys.excepthook = _record_slot_error
    QtCore.QObject.__getattribute__ = _getattribute
    for module in (QtCore, QtGui, QtWidgets, QtUiTools):  # each PySide class has its own setattr slot
        for value in (getattr(module, name) for name in dir(module)):  # dir() loads PySide's lazy classes
            if isinstance(value, type) and issubclass(value, QtCore.QObject):
                value.__setattr__ = _setattr
    sys.modules["qt"] = make_qt_module()
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication(["SlicerHarness"])
