"""The DICOM outputs of every input kind, checked by the outside validators: dciodvfy (each object against its IOD),
dcentvfy (the outputs with their input: one patient, one study) and PixelMed's DicomSRValidator (the report against
TID 1500 and its context groups). Each test skips, naming the Debian package, where its validator is not installed.
"""

from __future__ import annotations

import pydicom
import pytest

from ChestXrayCounterfactualLib import ExplainOptions, read_radiograph
from ChestXrayCounterfactualLib.outputs.dicom import write_dicom
from conftest import MONOCHROME1, SAMPLE
from dicom_inputs import KINDS, make_input
from dicom_validators import dcentvfy, dciodvfy, require, sr_validator

INPUT_KINDS = ["sample", "cr-monochrome1-15bit-j2k", *KINDS, "png"]


@pytest.fixture(scope="module")
def written(explainer, tmp_path_factory):
    """Input kind -> (input path, the DicomOutputs written for its latent-shift explanation of Cardiomegaly)."""
    folder = tmp_path_factory.mktemp("validated")
    paths = {"sample": SAMPLE, "cr-monochrome1-15bit-j2k": MONOCHROME1}
    results = {}
    for kind in INPUT_KINDS:
        path = paths.get(kind) or make_input(kind, folder / "inputs")
        options = ExplainOptions(finding="Cardiomegaly", method="latent-shift")
        explanation = explainer.explain(read_radiograph(path), options)
        results[kind] = path, write_dicom(folder / kind, explanation)
    return results


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_dciodvfy_finds_no_error_in_any_output(written, kind):
    require("dciodvfy")
    _, outputs = written[kind]
    for file in outputs.files:
        verdict = dciodvfy(file)
        assert not verdict.errors, f"{kind} {file.name}:\n{verdict}"


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_dcentvfy_finds_the_outputs_consistent_with_their_input(written, kind):
    require("dcentvfy")
    path, outputs = written[kind]
    together = [*outputs.files, *([path] if path.suffix == ".dcm" else [])]
    verdict = dcentvfy(together)
    assert not verdict.errors, f"{kind}:\n{verdict}"


def test_pixelmed_finds_no_error_in_any_report(written):
    require("pixelmed")
    for kind, (_, outputs) in written.items():
        report = next(file for file in outputs.files if file.name == "report.dcm")
        verdict = sr_validator(report)
        assert not verdict.errors, f"{kind} report:\n{verdict}"


def test_a_dx_without_its_acquisition_attributes_gives_a_secondary_capture_counterfactual(written):
    _, outputs = written["dx-jpeg2000-sparse"]
    counterfactual = pydicom.dcmread(outputs.files[0], stop_before_pixels=True)
    assert counterfactual.SOPClassUID.name == "Secondary Capture Image Storage"
    assert any("lacks DX attributes (PatientOrientation, ImageLaterality" in note for note in outputs.notes)


def test_a_complete_dx_for_processing_input_keeps_its_class_without_a_window(written):
    _, outputs = written["dx-for-processing"]
    counterfactual = pydicom.dcmread(outputs.files[0], stop_before_pixels=True)
    assert counterfactual.SOPClassUID.name == "Digital X-Ray Image Storage - For Processing"
    assert counterfactual.PresentationIntentType == "FOR PROCESSING" and "WindowCenter" not in counterfactual
    assert list(counterfactual.ImageType) == ["DERIVED", "SECONDARY"]


def test_type2_attributes_the_input_lacked_are_present_and_empty(written):
    _, outputs = written["cr-monochrome1-sparse"]
    for file in outputs.files[:3]:
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        assert (ds.BodyPartExamined, ds.ViewPosition, ds.Laterality) == ("", "", "")
