"""The Qt test harness holds up in any test order. The suite runs the panel's tests before the scene's (file
order); this runs the scene's first, then the panel's, in one pytest process of their own: the order in which
a panel whose widgets were freed by Python's cycle collector at an arbitrary later moment once crashed the run.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from conftest import ROOT

pytest.importorskip("PySide6", reason="needs PySide6 (pip install pyside6-essentials)")
pytest.importorskip("slicer", reason="needs slicer-core")


def test_scene_tests_then_panel_tests_in_one_process():
    files = ["Testing/Python/test_scene.py", "Testing/Python/test_panel.py"]
    command = [sys.executable, "-X", "faulthandler", "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    ending = (result.stdout + result.stderr)[-4000:]
    if result.returncode < 0:
        pytest.fail(f"the run crashed ({signal.Signals(-result.returncode).name}):\n{ending}")
    assert result.returncode == 0, ending
