"""The command-line contract: JSON fields, files on the input's grid, exit codes, errors, atomic outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageSequence
import SimpleITK as sitk
import torch

from ChestXrayCounterfactualLib import read_radiograph
from ChestXrayCounterfactualLib.outputs.folder import FILES
from conftest import SAMPLE


def run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "ChestXrayCounterfactualLib", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_predict_json_lists_every_finding(tmp_path):
    result = run("predict", SAMPLE, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document[0]["input"] == str(SAMPLE)
    assert {"Cardiomegaly", "Effusion"} <= set(document[0]["findings"])


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain")
    bad = out / "broken.dcm"
    bad.write_bytes(SAMPLE.read_bytes()[:5000])
    result = run("explain", SAMPLE, bad, "--out", out / "results", cwd=out)
    return out, bad, result


def test_explain_writes_every_file_on_the_input_grid(explained):
    out, _, _result = explained
    folder = out / "results" / SAMPLE.stem
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    original = read_radiograph(SAMPLE)
    for name in ("counterfactual.nrrd", "saliency.nrrd", "difference.nrrd"):
        image = sitk.ReadImage(str(folder / name))
        assert image.GetSize() == (original.shape[1], original.shape[0])
        assert image.GetSpacing() == pytest.approx(original.spacing)
    record = json.loads((folder / "explanation.json").read_text())
    for key in (
        "input",
        "finding",
        "method",
        "saliency",
        "p_original",
        "p_counterfactual",
        "threshold",
        "flipped",
        "seconds",
        "files",
    ):
        assert key in record
    assert record["method"] == "manifold" and record["saliency"] == "grad-cam"
    assert record["strength"] == "typical" and record["strength_reason"].startswith("the default: to ")
    with Image.open(folder / "frames.gif") as gif:
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert len(durations) == record["frames"] and durations[record["crossing_frame"]] >= 600, (
        "the first frame across the threshold is held longer"
    )
    assert record["seconds"]["total"] > 0 and "counterfactual" in record["seconds"]
    counterfactual = read_radiograph(folder / "counterfactual.nrrd")
    assert counterfactual.window == original.window  # read back in, displayed like the input
    difference = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "difference.nrrd")))
    np.testing.assert_allclose(counterfactual.pixels - original.pixels, difference, atol=1e-3)


def test_a_bad_file_gets_one_stderr_line_and_no_output(explained):
    out, bad, result = explained
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0]
    assert "Traceback" not in result.stderr
    assert not (out / "results" / "broken").exists()
    assert [p.name for p in (out / "results").iterdir()] == [SAMPLE.stem], "no partial or temporary folder"


def test_rerun_skips_finished_outputs(explained):
    out, _, _ = explained
    folder = out / "results" / SAMPLE.stem
    before = (folder / "explanation.json").read_text()
    result = run("explain", SAMPLE, "--out", out / "results", cwd=out)
    assert result.returncode == 0 and "skipped" in result.stderr
    assert (folder / "explanation.json").read_text() == before


def test_unknown_finding_is_a_clear_error(tmp_path):
    result = run("explain", SAMPLE, "--out", tmp_path / "o", "--finding", "Fracture", cwd=tmp_path)
    assert result.returncode == 1
    assert "unknown finding 'Fracture'" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_option_is_a_usage_error_before_any_model_loads(tmp_path):
    """``--frames 1`` cannot make an animation: one usage line and exit 2, no traceback, nothing written."""
    result = run("explain", SAMPLE, "--out", tmp_path / "o", "--frames", "1", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "frames must be a whole number of at least 2, not 1" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA card here")
def test_a_device_this_machine_lacks_is_one_warning_and_the_cpu(tmp_path):
    """``--device cuda`` without a usable card: the sentence on stderr, the CPU's probabilities, exit 0."""
    on_cpu = run("predict", SAMPLE, "--json", cwd=tmp_path)
    asked = run("predict", SAMPLE, "--json", "--device", "cuda", cwd=tmp_path)
    assert asked.returncode == 0 and "Traceback" not in asked.stderr
    assert asked.stderr.count("warning: cuda was asked for but this ") == 1
    assert "running on the CPU instead" in asked.stderr
    assert json.loads(asked.stdout) == json.loads(on_cpu.stdout)


def test_a_device_that_is_no_device_is_a_usage_error(tmp_path):
    result = run("explain", SAMPLE, "--out", tmp_path / "o", "--device", "gpu", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "device must be auto" in result.stderr and not (tmp_path / "o").exists()


def test_explain_dicom_writes_objects_in_the_input_study(tmp_path):
    import pydicom

    from conftest import MONOCHROME1

    out = tmp_path / "out"
    result = run("explain", SAMPLE, MONOCHROME1, "--out", out, "--finding", "Cardiomegaly", "--method", "latent-shift",
                 "--dicom", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for source in (SAMPLE, MONOCHROME1):
        folder = tmp_path / "out" / source.stem
        record = json.loads((folder / "explanation.json").read_text())
        written = sorted((folder / "dicom").glob("*.dcm"))
        assert {f"dicom/{p.name}" for p in written} <= set(record["files"]) and len(written) == 4
        study = pydicom.dcmread(source, stop_before_pixels=True).StudyInstanceUID
        assert {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in written} == {study}
        counterfactual = folder / "dicom" / "counterfactual.dcm"
        assert sitk.ReadImage(str(counterfactual)).GetSize()[:2] == sitk.ReadImage(str(source)).GetSize()[:2]
        expected = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "counterfactual.nrrd")))
        np.testing.assert_allclose(read_radiograph(counterfactual).pixels, expected.reshape(-1, expected.shape[-1]),
                                   atol=0.5 + 1e-3)
