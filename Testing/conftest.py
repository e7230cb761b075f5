"""Shared fixtures: the committed sample files, the shared data folder (optional), the bundled models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The module folder, as Slicer puts it on sys.path: the Slicer-side package and the module file import
# from here (the engine package is also installed, editable, by `make`).
sys.path.insert(0, str(ROOT / "ChestXrayCounterfactual"))
DATA = ROOT / "Testing" / "data"
SHARED = ROOT.parent / "shared" / "data"
SAMPLE_DATA = ROOT / "ChestXrayCounterfactual" / "Resources" / "SampleData"
#: The demo radiograph: an NIH test-split patient with cardiomegaly, as CR DICOM.
SAMPLE = SAMPLE_DATA / "nih_chest_pa_cardiomegaly.dcm"
#: An NIH image wrapped by SIIM-ACR: CR, 8-bit, JPEG baseline.
JPEG_BASELINE = SAMPLE_DATA / "chest_pa_cr_jpeg_baseline.dcm"
MONOCHROME1 = DATA / "chest_pa_cr_monochrome1_15bit_j2k_lossless.dcm"
FALSE_MONOCHROME1 = DATA / "chest_pa_cr_false_monochrome1.dcm"
DX = DATA / "thorax_dx_monochrome1_8bit.dcm"


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the development data at {path} (not part of a user's clone)")
    return path


@pytest.fixture(scope="session")
def explainer():
    from ChestXrayCounterfactualLib import Explainer

    return Explainer()


def pytest_configure(config):
    config.addinivalue_line("markers", "fast: unit tests on toy models, seconds")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Run ``fast`` tests on one torch thread: on tensors this small, handing work to a second thread on a busy
    2-core machine costs milliseconds a call, 10x the work itself; other tests keep their thread count.
    """
    if item.get_closest_marker("fast") is None:
        return (yield)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return (yield)
    finally:
        torch.set_num_threads(threads)
