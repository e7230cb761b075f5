"""The input gate on real files: chest radiographs pass, what the models were not made for is refused or warned.

Refused: what the DICOM header says is not a frontal projection radiograph (CT, MR, US, NM, lateral views, ...).
Warned: what the out-of-distribution score finds unlike every validation radiograph (the veterinary thorax, a
chest film shown inverted, photographs, synthetic test patterns, an extremity radiograph).
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import DATA_ROOT, get_testdata_file
from pydicom.data.data_manager import external_data_sources

from ChestXrayCounterfactualLib import Radiograph, read_radiograph
from ChestXrayCounterfactualLib.errors import InputError, NotExplainableError, UnsupportedImageError, WeightsError
from ChestXrayCounterfactualLib.explain.gate import (
    REFERENCE_NAME,
    TRAINED_ON,
    OodScore,
    check_header,
    load_ood_reference,
    ood_score,
    reference_for,
)
from ChestXrayCounterfactualLib.modelset import CARD_NAME, default_weights_dir
from conftest import DX, FALSE_MONOCHROME1, JPEG_BASELINE, MONOCHROME1, ROOT, SAMPLE, shared

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
#: The chest radiographs among pydicom's test files and pydicom-data: the NEMA WG04 chest PA in its encodings.
CORPUS_CHEST = "RG1_"


@pytest.fixture(scope="module")
def reference(explainer):
    found = reference_for(explainer.models)
    assert found is not None, "the bundled reference was computed with another autoencoder"
    return found


def score(explainer, reference, path: Path) -> tuple[list[str], OodScore]:
    """The gate on one file: the header's sentences (or its refusal) and the out-of-distribution score."""
    radiograph = read_radiograph(path)
    notes = check_header(radiograph)
    x, geometry = explainer.model_input(radiograph)
    return notes, ood_score(x, explainer.models.autoencoder(x), geometry.valid_mask(), reference)


def pydicom_file(name: str) -> Path:
    """One of pydicom's test files or pydicom-data's (never downloaded), or skip the test with the reason."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"needs {name} from pydicom-data (pip install pydicom-data)")
    return Path(path)


@pytest.mark.parametrize("path", [SAMPLE, JPEG_BASELINE, MONOCHROME1], ids=lambda p: p.name)
def test_committed_chest_radiographs_pass(explainer, reference, path):
    notes, ood = score(explainer, reference, path)
    assert notes == [] and not ood.unusual and ood.warning is None, ood


def test_a_png_of_a_chest_radiograph_passes(explainer, reference, tmp_path):
    png = tmp_path / "chest.png"
    Image.fromarray((read_radiograph(SAMPLE).display() * 255).round().astype(np.uint8)).save(png)
    notes, ood = score(explainer, reference, png)
    assert notes == [] and not ood.unusual


def test_the_veterinary_lateral_thorax_is_warned(explainer, reference):
    # DX, body part THORAX and no ViewPosition: nothing in the header says "dog" or "lateral"; the pixels do.
    notes, ood = score(explainer, reference, DX)
    assert notes == []
    assert ood.unusual and ood.percentile == 100.0
    assert ood.warning.startswith("unlike the training radiographs: out-of-distribution score")
    assert "above 100% of the 294 validation radiographs" in ood.warning


def test_a_chest_film_shown_inverted_is_warned(explainer, reference):
    """The file that claims MONOCHROME1 over MONOCHROME2 pixels is shown inverted, as the standard says: lungs
    bright, bones dark. Nothing like a training radiograph, and the gate says so.
    """
    assert score(explainer, reference, FALSE_MONOCHROME1)[1].unusual


@pytest.mark.parametrize(
    "name,what",
    [
        ("CT_small.dcm", "a CT image (Modality CT)"),
        ("MR_small.dcm", "an MR image (Modality MR)"),
        ("examples_ybr_color.dcm", "an ultrasound image (Modality US)"),
        ("JPGExtended.dcm", "a nuclear medicine image (Modality NM)"),
        ("US1_UNCR.dcm", "an ultrasound image (Modality US)"),
        ("MR2_UNCR.dcm", "an MR image (Modality MR)"),
        ("693_UNCR.dcm", "a CT image (Modality CT)"),
        ("eCT_Supplemental.dcm", "a CT image (Modality CT)"),
    ],
)
def test_cross_sectional_and_ultrasound_images_are_refused_by_name(name, what):
    radiograph = read_radiograph(pydicom_file(name))  # reading is not explaining: the reader reads them
    with pytest.raises(NotExplainableError) as refusal:
        check_header(radiograph)
    assert refusal.value.reason == f"{what}, not a projection radiograph of the chest: {TRAINED_ON}"


def test_a_segmentation_is_refused_by_the_reader_already():
    with pytest.raises(UnsupportedImageError, match="a DICOM Segmentation"):
        read_radiograph(pydicom_file("liver.dcm"))


@pytest.mark.parametrize(
    "name", ["OT-PAL-8-face.dcm", "SC_rgb_jpeg.dcm", "image_dfl.dcm", "GDCMJ2K_TextGBR.dcm", "mlut_18.dcm"],
)
def test_images_whose_header_says_nothing_are_judged_by_their_pixels(explainer, reference, name):
    notes, ood = score(explainer, reference, pydicom_file(name))
    assert notes == [] and ood.unusual, ood


def test_an_extremity_radiograph_gets_both_warnings(explainer, reference):
    notes, ood = score(explainer, reference, pydicom_file("RG3_UNCR.dcm"))
    assert notes == ["the header says the body part examined is EXTREMITY, not the chest"] and ood.unusual


def _corpus() -> list[Path]:
    sources = external_data_sources()
    if "pydicom-data" not in sources:
        pytest.skip("needs pydicom-data (pip install pydicom-data)")
    roots = [Path(DATA_ROOT) / "test_files", Path(sources["pydicom-data"].data_path)]
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc"))


def test_every_image_of_pydicoms_corpus_is_refused_or_warned_but_the_chest_films(explainer, reference):
    """pydicom's test files and pydicom-data: of what the reader reads, the chest PA passes in every encoding and
    everything else (CT, MR, US, NM, photographs, test patterns, an extremity) is refused by its header or warned.
    """
    slipped, stopped = [], []
    for path in _corpus():
        try:
            radiograph = read_radiograph(path)
        except InputError:
            continue
        try:
            check_header(radiograph)
            refused = False
        except NotExplainableError:
            refused = True
        x, geometry = explainer.model_input(radiograph)
        flagged = refused or ood_score(x, explainer.models.autoencoder(x), geometry.valid_mask(), reference).unusual
        if path.name.startswith(CORPUS_CHEST) and flagged:
            stopped.append(path.name)
        elif not path.name.startswith(CORPUS_CHEST) and not flagged:
            slipped.append(path.name)
    assert not slipped and not stopped, (slipped, stopped)


def _sample_with(tmp_path: Path, **attributes: str) -> Path:
    ds = pydicom.dcmread(SAMPLE)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    path = tmp_path / "changed.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    "attributes,reason",
    [
        ({"ViewPosition": "LL"}, "a lateral view (ViewPosition LL), not a frontal one"),
        ({"ViewPosition": "LATERAL"}, "a lateral view (ViewPosition LATERAL), not a frontal one"),
        ({"ViewPosition": "RAO"}, "an oblique view (ViewPosition RAO), not a frontal one"),
        ({"Modality": "XA"}, "an X-ray angiography image (Modality XA), not a projection radiograph of the chest"),
        ({"Modality": "RF"}, "a fluoroscopy image (Modality RF), not a projection radiograph of the chest"),
        ({"Modality": "MG"}, "a mammogram (Modality MG), not a projection radiograph of the chest"),
        ({"Modality": "RTIMAGE"}, "a radiotherapy portal image (Modality RTIMAGE), not a projection radiograph"),
        ({"Modality": "ZZ"}, "an image of another kind (Modality ZZ), not a projection radiograph"),
        (
            {"Modality": "OT", "SOPClassUID": CT_IMAGE_STORAGE},
            f"a CT Image Storage object (SOP class {CT_IMAGE_STORAGE}), not a projection radiograph",
        ),
    ],
)
def test_headers_that_rule_the_image_out_are_refused(tmp_path, attributes, reason):
    with pytest.raises(NotExplainableError, match="trained on frontal chest radiographs only") as refusal:
        check_header(read_radiograph(_sample_with(tmp_path, **attributes)))
    assert refusal.value.reason.startswith(reason)


@pytest.mark.parametrize(
    "attributes,notes",
    [
        ({"ViewPosition": "AP"}, []),
        ({"Modality": "OT"}, []),
        ({"BodyPartExamined": "THORAX"}, []),
        ({"ViewPosition": "LLD"}, ["a decubitus view (ViewPosition LLD): the patient lay on one side"]),
        ({"ViewPosition": "ERECT"}, ["view position ERECT is neither PA nor AP"]),
        ({"BodyPartExamined": "HAND"}, ["the header says the body part examined is HAND, not the chest"]),
        ({"Modality": "DX", "SOPClassUID": DX_FOR_PROCESSING}, ["a DX image 'for processing': raw detector data"]),
    ],
)
def test_headers_that_are_unusual_but_allowed_give_sentences(tmp_path, attributes, notes):
    found = check_header(read_radiograph(_sample_with(tmp_path, **attributes)))
    assert len(found) == len(notes) and all(f.startswith(n) for f, n in zip(found, notes, strict=True))


def test_the_reference_records_how_it_was_made(reference):
    data = json.loads((default_weights_dir() / REFERENCE_NAME).read_text())
    card = json.loads((default_weights_dir() / CARD_NAME).read_text())
    assert data["autoencoder_sha256"] == card["files"]["autoencoder"]["sha256"] == reference.autoencoder_sha256
    assert data["splits_sha256"] == card["files"]["splits"]["sha256"]
    validation = data["validation"]
    assert validation["split"] == "validation" and data["fit"]["split"] == "train"
    assert validation["images"] == {"nih": 284, "mhh_covid19": 10} == {
        "nih": card["training_data"]["nih"]["validation"]["images"],
        "mhh_covid19": card["training_data"]["autoencoder_extra"]["validation"],
    }
    assert len(reference.validation_scores) == 294 and reference.cut == pytest.approx(reference.validation_scores[-1])


def test_no_reference_for_another_autoencoder(explainer):
    own = replace(explainer.models, file_hashes={**explainer.models.file_hashes, "autoencoder": "0" * 64})
    assert reference_for(own) is None


def test_a_missing_reference_is_named(tmp_path):
    with pytest.raises(WeightsError, match="no out-of-distribution reference"):
        load_ood_reference(tmp_path / REFERENCE_NAME)


def _unusual(explainer, reference, paths: list[Path]) -> list[str]:
    return [f"{p.name} ({s.score:.2f})" for p in paths if (s := score(explainer, reference, p)[1]).unusual]


def test_every_nih_test_image_passes(explainer, reference):
    images = shared("nih", "images")
    with open(ROOT / "weights" / "splits.csv", newline="") as handle:
        test = [images / row["file"] for row in csv.DictReader(handle) if row["split"] == "test"]
    assert len(test) == 300 and _unusual(explainer, reference, test) == []


def test_every_hannover_test_image_passes(explainer, reference):
    from ChestXrayCounterfactualTraining.__main__ import DEFAULT_FINDINGS, by_split, unlabelled_records

    test = by_split(unlabelled_records(shared("mhh_covid19").parent, len(DEFAULT_FINDINGS)), seed=0)["test"]
    assert len(test) == 23 and _unusual(explainer, reference, [r.path for r in test]) == []


@pytest.mark.parametrize(
    "name,unusual",
    [("dx_image.dcm", True), ("Fake_MONOHR1.dcm", True), ("RG1_UNCR.dcm", False), ("RG1_JLSN.dcm", False)],
)
def test_the_shared_dicom_files(explainer, reference, name, unusual):
    assert score(explainer, reference, shared("dicom", name))[1].unusual is unusual


def test_a_strip_too_narrow_for_any_block_is_warned(explainer, reference):
    rng = np.random.default_rng(0)
    strip = Radiograph(rng.uniform(0, 255, (64, 4096)).astype(np.float32), (0.0, 255.0))
    x, geometry = explainer.model_input(strip)
    ood = ood_score(x, explainer.models.autoencoder(x), geometry.valid_mask(), reference)
    assert np.isfinite(ood.score) and ood.unusual
