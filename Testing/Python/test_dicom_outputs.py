"""DICOM outputs: derived images in the input's study and on its grid, read back by pydicom, GDCM, our reader and
Slicer's MRML; the report's findings; anonymization; a new study for a non-DICOM input; the atomic output folder.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.pixels import apply_modality_lut
from pydicom.sr.codedict import codes as sr_codes

from ChestXrayCounterfactualLib import read_radiograph
from ChestXrayCounterfactualLib.options import ExplainOptions
from ChestXrayCounterfactualLib.outputs import folder as outputs
from ChestXrayCounterfactualLib.outputs.dicom import FILES, write_dicom
from conftest import MONOCHROME1, SAMPLE

IMAGES = ("counterfactual.dcm", "difference.dcm", "saliency.dcm")


@pytest.fixture(scope="module")
def model_set(explainer):
    return explainer.models.identity()


@pytest.fixture(scope="module")
def explain(explainer):
    """The latent-shift explanation of Cardiomegaly for an input file, computed once per file."""
    explanations = {}

    def explanation_of(path):
        if path not in explanations:
            options = ExplainOptions(finding="Cardiomegaly", method="latent-shift")
            explanations[path] = explainer.explain(read_radiograph(path), options)
        return explanations[path]

    return explanation_of


@pytest.fixture(scope="module", params=[SAMPLE, MONOCHROME1], ids=["cr-monochrome2-8bit", "cr-monochrome1-15bit"])
def case(request, explain, tmp_path_factory):
    """(input path, its explanation, the written DicomOutputs) for one input."""
    explanation = explain(request.param)
    return request.param, explanation, write_dicom(tmp_path_factory.mktemp("dicom"), explanation)


@pytest.fixture(scope="module")
def sample_explanation(explain):
    return explain(SAMPLE)


def _by_name(written) -> dict:
    return {path.name: path for path in written.files}


def _content_items(items):
    """Every content item of an SR tree, depth first."""
    for item in items:
        yield item
        yield from _content_items(item.get("ContentSequence", []))


def _report_values(report) -> tuple[list[str], list[tuple[str, float]], list[tuple[str, str]]]:
    """The report's texts, its (concept, number) measurements and (concept, code) evaluations."""
    texts, numbers, codes = [], [], []
    for item in _content_items(report.ContentSequence):
        concept = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
        if item.ValueType == "TEXT":
            texts.append(item.TextValue)
        elif item.ValueType == "NUM":
            numbers.append((concept, float(item.MeasuredValueSequence[0].NumericValue)))
        elif item.ValueType == "CODE":
            codes.append((concept, item.ConceptCodeSequence[0].CodeMeaning))
    return texts, numbers, codes


def test_every_object_reads_in_pydicom_and_every_image_in_gdcm(case):
    path, explanation, written = case
    assert sorted(p.name for p in written.files) == sorted(FILES)
    rows, columns = explanation.radiograph.shape
    original = sitk.ReadImage(str(path))
    for name, file in _by_name(written).items():
        ds = pydicom.dcmread(file)
        if name == "report.dcm":
            assert ds.Modality == "SR" and "PixelData" not in ds
            continue
        assert ds.pixel_array.shape == (rows, columns)
        image = sitk.ReadImage(str(file))
        assert image.GetSize() == original.GetSize() == (columns, rows, 1)
        assert image.GetSpacing() == pytest.approx(original.GetSpacing())


def test_derived_images_join_the_input_study_on_its_grid_and_reference_it(case):
    path, _explanation, written = case
    source = pydicom.dcmread(path, stop_before_pixels=True)
    assert not written.new_study and written.study_instance_uid == source.StudyInstanceUID
    series = set()
    for name in IMAGES:
        ds = pydicom.dcmread(_by_name(written)[name], stop_before_pixels=True)
        assert (ds.StudyInstanceUID, ds.PatientID, ds.PatientName) == (
            source.StudyInstanceUID,
            source.PatientID,
            source.PatientName,
        )
        assert ds.SOPClassUID == source.SOPClassUID
        assert (ds.Rows, ds.Columns) == (source.Rows, source.Columns)
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            spacing = source.get(keyword)
            usable = spacing if spacing and all(float(v) for v in spacing) else None  # 0\0 is invalid: not copied
            assert ds.get(keyword) == usable, keyword
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"] and ds.DerivationDescription
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        series.add(ds.SeriesInstanceUID)
    counterfactual = pydicom.dcmread(_by_name(written)["counterfactual.dcm"], stop_before_pixels=True)
    assert counterfactual.PhotometricInterpretation == source.PhotometricInterpretation
    assert counterfactual.BitsStored == source.BitsStored
    assert len(series) == 3 and source.SeriesInstanceUID not in series


def test_our_reader_reads_the_counterfactual_back_within_the_stored_precision(case):
    _path, explanation, written = case
    files = _by_name(written)
    back = read_radiograph(files["counterfactual.dcm"])
    header = pydicom.dcmread(files["counterfactual.dcm"], stop_before_pixels=True)
    unit = float(header.get("RescaleSlope", 1))
    np.testing.assert_allclose(back.pixels, explanation.counterfactual, rtol=0, atol=unit)
    assert back.window == pytest.approx(explanation.radiograph.window)
    for name, expected in (("difference.dcm", explanation.difference), ("saliency.dcm", explanation.saliency)):
        ds = pydicom.dcmread(files[name])
        values = apply_modality_lut(ds.pixel_array, ds)
        np.testing.assert_allclose(values, expected, rtol=0, atol=float(ds.RescaleSlope))


def test_report_holds_every_finding_its_probabilities_and_the_verdict(case, model_set):
    path, explanation, written = case
    report = pydicom.dcmread(_by_name(written)["report.dcm"])
    source = pydicom.dcmread(path, stop_before_pixels=True)
    texts, numbers, codes = _report_values(report)
    for finding, p in explanation.probabilities.items():
        assert f"{finding} on the input image" in texts
        assert ("Probability", pytest.approx(p, abs=1e-9)) in numbers
        assert ("Probability", pytest.approx(explanation.counterfactual_probabilities[finding], abs=1e-9)) in numbers
        assert ("Threshold Value", pytest.approx(model_set["thresholds"][finding], abs=1e-9)) in numbers
    assert f"{explanation.finding} on the counterfactual (explained)" in texts
    assert f"direction: {explanation.direction}" in texts
    flipped = ("Decision flipped by the counterfactual", "Yes" if explanation.flipped else "No")
    assert flipped in codes
    assert f"counterfactual method: {explanation.method}" in texts and model_set["name"] in texts
    assert all(f"sha256 {part}: {digest}" in texts for part, digest in model_set["sha256"].items())
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert source.SOPInstanceUID in referenced and report.StudyInstanceUID == source.StudyInstanceUID


def test_report_is_comprehensive_3d_sr_that_slicer_and_highdicom_read_as_tid1500(case):
    """Slicer v5.12.3's DICOMTID1500Plugin (Modules/Scripted/DICOMPlugins) takes an SR as TID 1500 when its modality
    is SR, its class Enhanced, Comprehensive or Comprehensive 3D SR and its first template identifier 1500; it then
    reads it with highdicom's class for that SOP class and asks for planar ROI groups (none: it goes to dcmqi's
    tid1500reader). highdicom reads every measurement group back.
    """
    import highdicom as hd

    _path, explanation, written = case
    report = pydicom.dcmread(_by_name(written)["report.dcm"])
    assert report.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage and report.Modality == "SR"
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    sr = hd.sr.Comprehensive3DSR.from_dataset(report, copy=True)
    assert sr.content.get_planar_roi_measurement_groups() == []
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == len(explanation.probabilities) + len(explanation.counterfactual_probabilities)
    probabilities = [group.get_measurements(name=sr_codes.DCM.Probability)[0].value for group in groups]
    expected = [*explanation.probabilities.values(), *explanation.counterfactual_probabilities.values()]
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-9)


def test_slicer_loads_the_counterfactual_on_the_input_grid(case, tmp_path):
    pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
    from mrml_scene import load_dicom_file, new_scene

    path, _, written = case
    _, _, volumes, _, _ = new_scene(str(tmp_path / "cache"))
    original = load_dicom_file(volumes, path)
    for name in IMAGES:
        node = load_dicom_file(volumes, _by_name(written)[name])
        assert node.GetImageData().GetDimensions() == original.GetImageData().GetDimensions()
        assert node.GetSpacing() == pytest.approx(original.GetSpacing())


def test_anonymize_gives_a_new_study_without_the_input_identity(sample_explanation, tmp_path):
    source = pydicom.dcmread(SAMPLE, stop_before_pixels=True)
    written = write_dicom(tmp_path, sample_explanation, anonymize=True)
    assert written.new_study and any("anonymized" in note for note in written.notes)
    identity = [source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID, source.PatientID]
    studies = set()
    for file in written.files:
        content = file.read_bytes()
        assert not [value for value in identity if value.encode() in content], file.name
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        assert ds.PatientName == "" and ds.PatientID.startswith("CXRCF-") and ds.PatientIdentityRemoved == "YES"
        studies.add(ds.StudyInstanceUID)
    assert studies == {written.study_instance_uid}
    counterfactual, difference = (pydicom.dcmread(tmp_path / name) for name in IMAGES[:2])
    assert "SourceImageSequence" not in counterfactual
    assert difference.SourceImageSequence[0].ReferencedSOPInstanceUID == counterfactual.SOPInstanceUID


def test_a_png_input_gets_a_new_study(sample_explanation, tmp_path):
    from PIL import Image

    png = tmp_path / "sample.png"
    Image.fromarray(sample_explanation.radiograph.pixels.astype(np.uint8)).save(png)
    explanation = replace(sample_explanation, radiograph=read_radiograph(png))
    written = write_dicom(tmp_path / "dicom", explanation)
    assert written.new_study and any("not a DICOM file" in note for note in written.notes)
    counterfactual = pydicom.dcmread(tmp_path / "dicom" / "counterfactual.dcm")
    assert counterfactual.StudyInstanceUID == written.study_instance_uid
    assert counterfactual.SOPClassUID.name == "Secondary Capture Image Storage" and "PixelSpacing" not in counterfactual
    assert "SourceImageSequence" not in counterfactual and counterfactual.BitsStored == 8
    back = read_radiograph(tmp_path / "dicom" / "counterfactual.dcm")
    np.testing.assert_allclose(back.pixels, explanation.counterfactual, rtol=0, atol=1)


def test_write_explanation_puts_the_dicom_objects_inside_its_atomic_folder(
    sample_explanation, explainer, tmp_path, monkeypatch,
):
    folder = tmp_path / "sample"
    record = outputs.write_explanation(folder, sample_explanation, dicom=True)
    assert sorted(p.name for p in (folder / "dicom").iterdir()) == sorted(FILES)
    assert set(record["files"]) == set(outputs.FILES) | {f"dicom/{name}" for name in FILES}
    assert record["dicom"]["new_study"] is False and record["seconds"]["dicom"] > 0
    assert json.loads((folder / "explanation.json").read_text())["files"] == record["files"]

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("ChestXrayCounterfactualLib.outputs.dicom.write_dicom", broken)
    with pytest.raises(RuntimeError):
        outputs.write_explanation(tmp_path / "again", sample_explanation, dicom=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample"]


def _voi_lut_monochrome1(tmp_path):
    """The sample as 12-bit MONOCHROME1 with a VOI LUT sequence: the reader gives the LUT's output, not modality
    values.
    """
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(SAMPLE)
    ds.PixelData = (ds.pixel_array.astype("<u2") * 16).tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PhotometricInterpretation = 16, 12, 11, "MONOCHROME1"
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.add_new("LUTData", "OW", np.arange(0, 65536, 16, dtype="<u2").tobytes())
    ds.VOILUTSequence = [lut]
    ds.save_as(tmp_path / "voi_lut.dcm")
    return tmp_path / "voi_lut.dcm"


def test_a_voi_lut_input_gets_an_encoding_for_the_values_the_reader_showed(sample_explanation, tmp_path):
    radiograph = read_radiograph(_voi_lut_monochrome1(tmp_path))
    assert radiograph.metadata["window_from"] == "VOI LUT sequence"
    pixels = radiograph.pixels
    counterfactual = np.clip(pixels + sample_explanation.difference * 256, pixels.min(), pixels.max())  # as delivered
    explanation = replace(
        sample_explanation, radiograph=radiograph, counterfactual=counterfactual, difference=counterfactual - pixels,
    )
    write_dicom(tmp_path / "dicom", explanation)
    header = pydicom.dcmread(tmp_path / "dicom" / "counterfactual.dcm", stop_before_pixels=True)
    assert header.PhotometricInterpretation == "MONOCHROME1" and "VOILUTSequence" not in header
    back = read_radiograph(tmp_path / "dicom" / "counterfactual.dcm")
    np.testing.assert_allclose(back.pixels, explanation.counterfactual, rtol=0, atol=1)
    assert back.window == pytest.approx(radiograph.window)


def test_a_slicer_volume_explanation_joins_its_source_files_study(sample_explanation, tmp_path):
    pytest.importorskip("slicer", reason="needs slicer-core (pip install slicer-core)")
    from ChestXrayCounterfactualSlicer.volumes import radiograph_from_volume
    from mrml_scene import load_dicom_file, new_scene

    _, _, volumes, _, _ = new_scene(str(tmp_path / "cache"))
    radiograph = radiograph_from_volume(load_dicom_file(volumes, SAMPLE))
    written = write_dicom(tmp_path / "dicom", replace(sample_explanation, radiograph=radiograph))
    source = pydicom.dcmread(SAMPLE, stop_before_pixels=True)
    assert not written.new_study and written.study_instance_uid == source.StudyInstanceUID
    back = read_radiograph(tmp_path / "dicom" / "counterfactual.dcm")
    np.testing.assert_allclose(back.pixels, sample_explanation.counterfactual, rtol=0, atol=1)
