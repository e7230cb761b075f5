"""The engine's layers, read from its import statements (those inside functions included): every import goes down
a layer or stays inside its own subpackage, the modules import each other without a cycle, and the torch-free
modules stay torch-free.

Layers, bottom to top: ``errors`` and ``methods``, then ``options`` (names and checks, no torch); ``inputs/`` (files to
radiographs, no model code) and ``modelset/`` (the networks); ``explain/`` (the science); ``outputs/`` (files
written from an explanation); ``runs/`` (the front ends). The package's ``__init__`` and ``__main__`` are entry
points and may name any layer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "ChestXrayCounterfactual" / "ChestXrayCounterfactualLib"
PACKAGE = ENGINE.name
#: Each top-level entry of the engine and its layer; a module may import a lower layer, or its own entry.
LAYERS = {
    "errors": 0,
    "methods": 0,
    "options": 1,
    "inputs": 2,
    "modelset": 2,
    "explain": 3,
    "outputs": 4,
    "runs": 5,
}
ENTRY_POINTS = {f"{PACKAGE}.__init__", f"{PACKAGE}.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The engine modules ``path`` imports, resolved to absolute names (``from . import x`` as ``package.x``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == PACKAGE and name in MODULES}


MODULES = {_module_name(path): path for path in ENGINE.rglob("*.py")}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _entry(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_entry_of_the_engine_has_a_layer():
    entries = {_entry(name) for name in MODULES} - {"", "__init__", "__main__"}
    assert entries == set(LAYERS)


@pytest.mark.parametrize("module", sorted(set(MODULES) - ENTRY_POINTS - {PACKAGE}))
def test_imports_go_down_a_layer_or_stay_in_their_subpackage(module):
    entry = _entry(module)
    upward = [
        imported
        for imported in GRAPH[module]
        if _entry(imported) != entry and imported != PACKAGE and LAYERS[_entry(imported)] >= LAYERS[entry]
    ]
    assert not upward, f"{module} (layer {LAYERS[entry]}) imports {upward}"


def test_the_engine_imports_have_no_cycle():
    graph = {name: GRAPH[name] - {name} for name in GRAPH if name not in ENTRY_POINTS | {PACKAGE}}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for imported in sorted(graph.get(name, ())):
            if state.get(imported) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(imported) :], imported]))
            if imported not in state:
                visit(imported, [*path, imported])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_inputs_import_no_model_code():
    for path in (ENGINE / "inputs").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {name.split(".")[0] for name in names} & {"torch", "torchvision", "captum"}, path
        assert not {_entry(name) for name in GRAPH[_module_name(path)]} & {"modelset", "explain"}, path


@pytest.mark.parametrize(
    "module",
    [f"{PACKAGE}.errors", f"{PACKAGE}.methods", f"{PACKAGE}.options", f"{PACKAGE}.explain.records"],
)
def test_the_names_and_wording_modules_import_no_torch(module):
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
