"""Stand-ins for Slicer's and CTK's C++ classes (and a few of their Python modules), built from the
inventory of the real headers (``inventory/slicer-5.12.3.json``, made by ``inventory/make_inventory.py``).

A stand-in class has exactly what PythonQt exposes of the real class: its signals, properties, public slots,
``Q_INVOKABLE`` methods and PythonQt decorator methods (plus the members of its Qt base class, which is the
real PySide6 class). Plain public C++ methods are not exposed by PythonQt, so they do not exist here either:
``slider.setMaximum(2.0)`` fails as it fails in Slicer (``slider.maximum = 2.0`` is the way). A member the
real class lacks does not exist, so calling it fails as it would in Slicer. A real member that no behaviour
here emulates raises :class:`NotEmulated`, so a test never passes by silently skipping work. Behaviours are
small mixins whose public members must all be exposed by PythonQt of the real class (checked when the class
is built).
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import re
import types
from pathlib import Path

from PySide6 import QtCore, QtWidgets

INVENTORY_FILE = Path(__file__).resolve().parent / "inventory" / "slicer-5.12.3.json"
INVENTORY = json.loads(INVENTORY_FILE.read_text())

_SIGNAL_TYPES = {"bool": bool, "int": int, "double": float, "float": float, "QString": str}
_PYSIDE_NAMES = {bool: "bool", int: "int", float: "double", str: "QString", object: "PyObject"}
_PROPERTY_TYPES = {"bool": bool, "int": int, "double": float, "float": float, "QString": str}
_DEFAULTS = {"bool": False, "int": 0, "double": 0.0, "float": 0.0, "QString": "", "QStringList": []}


class NotEmulated(NotImplementedError):
    """The real class has this member, but no stand-in behaviour emulates it."""


def _name(signature: str) -> str:
    return signature.split("(", 1)[0]


def _arguments(signature: str) -> list[str]:
    inside = signature[signature.index("(") + 1 : signature.rindex(")")]
    return [a for a in re.split(r",(?![^<]*>)", inside) if a]


def chain(class_name: str) -> list[dict]:
    """The inventory entries of a class and its Slicer/CTK bases, nearest first."""
    entries, pending = [], [class_name]
    while pending:
        name = pending.pop(0)
        if name in INVENTORY["classes"]:
            entries.append(INVENTORY["classes"][name])
            pending.extend(INVENTORY["classes"][name]["bases"])
    return entries


def members(class_name: str) -> dict[str, set[str]]:
    """Names of the real class's members as PythonQt exposes them (inherited included): signals,
    properties, ``callables`` (public slots, ``Q_INVOKABLE`` methods and PythonQt decorator methods) and
    ``plain`` (other public C++ methods, which Python cannot call).
    """
    found = {"signals": set(), "properties": set(), "callables": set(), "plain": set()}
    for entry in chain(class_name):
        found["signals"] |= {_name(s) for s in entry["signals"]}
        found["properties"] |= set(entry["properties"])
        found["callables"] |= {_name(s) for s in entry["slots"]}
        found["callables"] |= {_name(m["signature"]) for m in entry["methods"] if m["invokable"]}
        found["callables"] |= {_name(m["signature"]) for m in entry.get("python_decorators", [])}
        found["plain"] |= {_name(m["signature"]) for m in entry["methods"] if not m["invokable"]}
    found["plain"] -= found["callables"]
    return found


def qt_base(class_name: str) -> type:
    name = INVENTORY["classes"][class_name]["qt_base"]
    for module in (QtWidgets, QtCore):
        if hasattr(module, name):
            return getattr(module, name)
    raise KeyError(f"{class_name}: Qt base {name} is not in PySide6")


def _signals(class_name: str) -> tuple[dict[str, QtCore.Signal], dict[str, str]]:
    """PySide signals for the real signatures, and the map real signature -> PySide signature."""
    overloads: dict[str, list[tuple]] = {}
    real: dict[str, list[str]] = {}
    for entry in reversed(chain(class_name)):
        for signature in entry["signals"]:
            types_ = tuple(_SIGNAL_TYPES.get(a.strip(), object) for a in _arguments(signature))
            name = _name(signature)
            if types_ not in overloads.setdefault(name, []):
                overloads[name].append(types_)
            real.setdefault(name, []).append(signature)
    signals, mapping = {}, {}
    for name, variants in overloads.items():
        signals[name] = QtCore.Signal(*variants) if len(variants) > 1 else QtCore.Signal(*variants[0])
        for signature in real[name]:
            types_ = tuple(_SIGNAL_TYPES.get(a.strip(), object) for a in _arguments(signature))
            mapping[QtCore.QMetaObject.normalizedSignature(signature).data().decode()] = (
                f"{name}({','.join(_PYSIDE_NAMES[t] for t in types_)})"
            )
    return signals, mapping


def _stored_property(name: str, cpp_type: str, writable: bool) -> QtCore.Property:
    """A property that keeps what is written (the default of its C++ type until then)."""
    default = _DEFAULTS.get(cpp_type)

    def read(self):
        return self.__dict__.setdefault("_properties", {}).get(name, default)

    def write(self, value):
        self.__dict__.setdefault("_properties", {})[name] = value

    return QtCore.Property(_PROPERTY_TYPES.get(cpp_type, "QVariant"), read, write if writable else None)


def _not_emulated(class_name: str, name: str):
    def method(self, *args, **kwargs):
        raise NotEmulated(f"{class_name}.{name} exists in Slicer but this stand-in does not emulate it")

    method.__name__ = name
    return method


@functools.cache
def build(class_name: str, behaviour: type | None = None, base: type | None = None) -> type:
    """The stand-in class for ``class_name``: ``behaviour``'s members over generated ones, on the real
    Qt base class (or ``base``, e.g. QObject for the application object). Built once per process: Qt's
    UI loader keeps the first class registered under a name.
    """
    real_base = qt_base(class_name)
    base = base or real_base
    real = members(class_name)
    if behaviour is not None:
        extra = {
            n for n, v in vars(behaviour).items()
            if not n.startswith("_") and not isinstance(v, QtCore.Signal)
        } - real["callables"] - real["properties"] - real["signals"] - set(dir(real_base))
        if extra:
            raise TypeError(
                f"behaviour of {class_name} defines {sorted(extra)}, which PythonQt does not expose of the real class "
                "(not a slot, Q_INVOKABLE method, decorator, signal or property)",
            )
    signals, mapping = _signals(class_name)
    attributes: dict = {"_signal_signatures": mapping, "__module__": "SlicerHarness.standins"}
    attributes.update(signals)
    for entry in reversed(chain(class_name)):
        for name, info in entry["properties"].items():
            if behaviour is None or name not in vars(behaviour):
                attributes[name] = _stored_property(name, info["type"], bool(info["write"]))
            setter = info["write"]
            if setter in real["callables"] and (behaviour is None or setter not in vars(behaviour)):
                attributes[setter] = lambda self, value, _n=name: self.setProperty(_n, value)
    defined = set(attributes) | set(dir(base)) | (set(dir(behaviour)) if behaviour else set())
    for name in real["callables"] - defined:
        attributes[name] = _not_emulated(class_name, name)
    if base is QtWidgets.QAbstractButton and not hasattr(behaviour, "paintEvent"):
        attributes["paintEvent"] = lambda self, event: None  # abstract in Qt
    bases = (behaviour, base) if behaviour is not None else (base,)
    return type(class_name, bases, attributes)


def python_module(name: str, implementations: dict | None = None) -> types.ModuleType:
    """A stand-in for one of Slicer's Python modules (``DICOMLib.DICOMUtils``, ``SampleData``, ...):
    its real functions, each checking its arguments against the real signature, doing what
    ``implementations`` gives for it or raising :class:`NotEmulated`.
    """
    entry = INVENTORY["python"][name]
    module = types.ModuleType(name, f"stand-in for {name} of {entry['repository']}")
    implementations = implementations or {}
    unknown = set(implementations) - set(entry.get("functions", {}))
    if unknown:
        raise TypeError(f"{name} has no functions {sorted(unknown)}")
    for function, signature in entry.get("functions", {}).items():
        setattr(module, function, checked(name, function, signature, implementations.get(function)))
    return module


def python_class(name: str, implementations: dict | None = None) -> type:
    """A stand-in for a Python class (``PyTorchUtils.PyTorchUtilsLogic``, ...): its real methods, argument
    checked; ``implementations`` (functions taking ``self``) or :class:`NotEmulated`.
    """
    entry = INVENTORY["python"][name]
    implementations = implementations or {}
    unknown = set(implementations) - set(entry.get("methods", {})) - set(entry.get("properties", []))
    if unknown:
        raise TypeError(f"{name} has no methods {sorted(unknown)}")
    attributes = {}
    for method, signature in entry.get("methods", {}).items():
        function = checked(name, method, signature, implementations.get(method))
        bound = signature.startswith(("(self", "(cls"))  # the inventory records a @staticmethod without self
        attributes[method] = function if bound else staticmethod(function)
    for prop in entry.get("properties", []):
        attributes[prop] = property(implementations.get(prop) or _not_emulated(name, prop))
    return type(name.rsplit(".", 1)[-1], (), attributes)


def _signature(text: str) -> inspect.Signature:
    """The parameters of a real function from its source text; default values become None (only
    which arguments a call may pass matters here).
    """
    tree = ast.parse(f"def f{text}: pass")
    function = tree.body[0]
    arguments = function.args
    function.returns = None
    for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg]:
        if argument is not None:
            argument.annotation = None
    arguments.defaults = [ast.Constant(None) for _ in arguments.defaults]
    arguments.kw_defaults = [None if d is None else ast.Constant(None) for d in arguments.kw_defaults]
    namespace: dict = {}
    exec(compile(ast.fix_missing_locations(tree), "<signature>", "exec"), namespace)
    return inspect.signature(namespace["f"])


def checked(owner: str, name: str, signature: str, implementation=None):
    """A function that binds its arguments to the real ``signature`` (a wrong call raises TypeError)
    and then runs ``implementation``.
    """
    real_signature = _signature(signature)
    body = implementation or _not_emulated(owner, name)

    def function(*args, **kwargs):
        real_signature.bind(*args, **kwargs)
        return body(*args, **kwargs)

    function.__name__ = name
    function.__signature__ = real_signature
    return function
