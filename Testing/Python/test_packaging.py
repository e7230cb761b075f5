"""Static checks of the Slicer packaging: what the build farm and the Extensions Index would reject."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import ROOT

MODULE = ROOT / "ChestXrayCounterfactual"
#: Keys and types of Slicer's slicer-extension-catalog-entry-schema-v1.0.1.json.
SCHEMA = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,
    "build_dependencies": list,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,
}
ACCEPTED_CATEGORIES = {"Analysis", "Image Synthesis", "Quantification"}


def _cmake_list(text: str, variable: str) -> list[str]:
    block = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_every_module_script_and_resource_is_listed_in_the_module_cmakelists():
    text = (MODULE / "CMakeLists.txt").read_text()
    listed = {
        s.replace("${MODULE_NAME}", "ChestXrayCounterfactual") for s in _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    }
    present = {str(p.relative_to(MODULE)) for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts}
    assert present == listed
    resources = {
        s.replace("${MODULE_NAME}", "ChestXrayCounterfactual") for s in _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    }
    present = {str(p.relative_to(MODULE)) for p in (MODULE / "Resources").rglob("*") if p.is_file()}
    assert present == resources
    weights = set(_cmake_list(text, "MODEL_FILES"))
    assert weights == {p.name for p in (ROOT / "weights").iterdir() if p.is_file()}
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest" in text


def test_extension_metadata_and_index_entry_agree():
    top = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"project\(ChestXrayCounterfactual\)", top)
    depends = re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', top).group(1).split()
    category = re.search(r'set\(EXTENSION_CATEGORY "([^"]*)"\)', top).group(1)
    raw = (ROOT / "ChestXrayCounterfactual.json").read_bytes()
    assert b"\r\n" not in raw, "the index requires LF line endings"
    entry = json.loads(raw)
    # The index's prettier check (prettier-plugin-multiline-arrays, wrap threshold 0): two-space indent, every
    # non-empty array one element a line, a final newline; json.dumps(indent=2) writes exactly that.
    assert raw.decode() == json.dumps(entry, indent=2) + "\n", "format as the index's prettier would"
    assert {"$schema", "category", "scm_url"} <= set(entry) and set(entry) <= set(SCHEMA)
    for key, value in entry.items():
        assert isinstance(value, SCHEMA[key]), key
    assert entry["build_dependencies"] == depends == ["PyTorch"]
    assert entry["category"] == category and category in ACCEPTED_CATEGORIES
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        url = re.search(rf'set\({key} "([^"]*)"\)', top).group(1)
        assert url.startswith("https://raw.githubusercontent.com/") and "?" not in url


#: The bundled weights' budget. They are stored in fp16 (39.0 MB in weights/ today), and a full clone
#: counts each of their bytes about twice (work tree and pack): at this budget a clone stays under the index's limit.
WEIGHTS_BUDGET_MB = 45
#: The Extensions Index's check_repository_size: every file of a fresh clone, .git included.
INDEX_LIMIT_MB = 100


def _tracked_bytes(*paths: str) -> int:
    names = subprocess.run(["git", "ls-files", "-z", *paths], cwd=ROOT, capture_output=True, check=True).stdout
    files = [ROOT / name.decode() for name in names.split(b"\0") if name]
    return sum(path.stat().st_size for path in files if path.exists())


def test_icon_and_licence():
    from PIL import Image

    with Image.open(ROOT / "ChestXrayCounterfactual.png") as icon:
        assert icon.size == (128, 128)
    assert (ROOT / "LICENSE").exists()


def test_weights_stay_within_their_budget():
    total = _tracked_bytes("weights")
    print(f"tracked weights: {total / 2**20:.1f} MB of a {WEIGHTS_BUDGET_MB} MB budget")
    assert total <= WEIGHTS_BUDGET_MB * 2**20, f"weights take {total / 2**20:.1f} MB, over {WEIGHTS_BUDGET_MB} MB"


def test_a_full_clone_fits_the_extension_index_size_limit(tmp_path):
    """Measured as the index measures it: a fresh clone of this branch, every file counted, .git included."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the clone size is measured on a repository")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-local", "--single-branch", str(ROOT), str(clone)], check=True)
    total = sum(path.stat().st_size for path in clone.rglob("*") if path.is_file())
    print(f"a full clone takes {total / 2**20:.1f} MB of the index's {INDEX_LIMIT_MB} MB")
    assert total <= INDEX_LIMIT_MB * 2**20, f"a full clone takes {total / 2**20:.1f} MB, over {INDEX_LIMIT_MB} MB"


def test_module_file_imports_nothing_third_party_at_file_scope():
    """Slicer imports the module file at start-up, before any requirement is installed."""
    import sys

    source = (MODULE / "ChestXrayCounterfactual.py").read_text()
    top_level = [line for line in source.splitlines() if re.match(r"(import|from) ", line)]
    allowed = set(sys.stdlib_module_names) | {"ctk", "qt", "slicer", "vtk", "ChestXrayCounterfactualSlicer"}
    for line in top_level:
        assert line.split()[1].split(".")[0] in allowed, line


def test_only_the_slicer_package_imports_the_engine():
    """The module file reaches the engine through ``ChestXrayCounterfactualSlicer`` (its modules, and the bridge's
    torch-free names, imported at file scope only), never by an import of its own.
    """
    source = (MODULE / "ChestXrayCounterfactual.py").read_text()
    assert not re.search(r"^\s*(import|from) ChestXrayCounterfactualLib\b", source, re.M)
    assert len(re.findall(r"^\s*(?:import|from) ChestXrayCounterfactualSlicer\b", source, re.M)) == 2
    assert not re.search(r"^[ \t]+(import|from) ChestXrayCounterfactualSlicer\b", source, re.M)


def test_the_slicer_package_loads_before_the_requirements_are_installed():
    """The module file imports the bridge at Slicer's start-up: none of the Python requirements may load with it
    (``database`` and ``requirements`` need the application's ``slicer.i18n``, which slicer-core lacks).
    """
    import sys

    pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
    code = (
        "import sys\n"
        "import ChestXrayCounterfactualSlicer.bridge\n"
        "loaded = {'torch', 'captum', 'pydicom', 'highdicom', 'SimpleITK', 'matplotlib'} & set(sys.modules)\n"
        "sys.exit(', '.join(sorted(loaded)) or None)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=MODULE, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_only_the_module_file_lies_beside_the_module():
    """Slicer's scripted-module factory loads every *.py beside the module file as a module at start-up."""
    beside = sorted(p.name for p in MODULE.glob("*.py"))
    assert beside == ["ChestXrayCounterfactual.py"]


def test_engine_imports_nothing_from_slicer():
    engine = MODULE / "ChestXrayCounterfactualLib"
    for path in engine.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from) (slicer|qt|ctk|vtk)\b", text, re.M), path


def test_training_stays_out_of_the_module_and_the_module_never_imports_it():
    """Training (and its metrics) is development code in Training/: it must not ship with the extension."""
    training = ROOT / "Training" / "ChestXrayCounterfactualTraining"
    assert (training / "__init__.py").exists() and (training / "metrics.py").exists()
    assert not (MODULE / "ChestXrayCounterfactualLib" / "training").exists()
    for path in MODULE.rglob("*.py"):
        assert not re.search(r"^\s*(import|from) ChestXrayCounterfactualTraining\b", path.read_text(), re.M), path


def test_every_widget_the_module_uses_is_in_the_ui_file_with_known_classes():
    """Static check of the GUI wiring (test_panel.py runs it)."""
    import xml.etree.ElementTree as ET

    ui = ET.parse(MODULE / "Resources" / "UI" / "ChestXrayCounterfactual.ui")
    widgets = {w.get("name"): w.get("class") for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "ChestXrayCounterfactual.py").read_text()))
    assert used <= set(widgets), f"missing in the .ui: {used - set(widgets)}"
    known = {
        "qMRMLWidget",
        "ctkCollapsibleButton",
        "qMRMLNodeComboBox",
        "ctkSliderWidget",
        "QPushButton",
        "QLabel",
        "QComboBox",
        "QTableWidget",
    }
    assert set(widgets.values()) <= known
    bound = {p.find("string").text for p in ui.iter("property") if p.get("name") == "SlicerParameterName"}
    module = (MODULE / "ChestXrayCounterfactual.py").read_text()
    wrapper = module[
        module.index("class ChestXrayCounterfactualParameterNode") : module.index("class ChestXrayCounterfactualWidget")
    ]
    assert bound <= set(re.findall(r"^    (\w+):", wrapper, re.M))
