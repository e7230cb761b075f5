"""Bring your own models: spec validation, TorchScript round trip, torchxrayvision architectures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ChestXrayCounterfactualLib import read_radiograph
from ChestXrayCounterfactualLib.explain.pipeline import Explainer
from ChestXrayCounterfactualLib.modelset import SpecError, export_torchscript, load_model_set
from ChestXrayCounterfactualLib.options import ExplainOptions
from conftest import SAMPLE


@pytest.fixture(scope="module")
def torchscript_spec(tmp_path_factory, explainer):
    return export_torchscript(explainer.models, tmp_path_factory.mktemp("torchscript"))


def test_torchscript_export_gives_the_same_probabilities(explainer, torchscript_spec):
    exported = Explainer(load_model_set(torchscript_spec))
    image = read_radiograph(SAMPLE)
    ours, theirs = explainer.predict(image), exported.predict(image)
    assert list(ours) == list(theirs)
    assert max(abs(ours[f] - theirs[f]) for f in ours) <= 1e-4
    x, _ = explainer.model_input(image)
    with torch.no_grad():
        z = explainer.models.autoencoder.encode(x)
        assert torch.allclose(exported.models.autoencoder.decode(z), explainer.models.autoencoder.decode(z), atol=1e-4)
    assert exported.models.file_hashes["classifier"] and exported.models.file_hashes["spec"]


def test_cli_explains_with_a_torchscript_model_set(torchscript_spec, tmp_path):
    command = [
        sys.executable,
        "-m",
        "ChestXrayCounterfactualLib",
        "--models",
        str(torchscript_spec),
        "explain",
        str(SAMPLE),
        "--out",
        str(tmp_path),
        "--saliency",
        "integrated-gradients",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / SAMPLE.stem / "explanation.json").read_text())
    assert record["flipped"] and record["model_set"]["name"] == "bundled-nih-224-torchscript"
    assert set(record["model_set"]["sha256"]) >= {"spec", "classifier", "autoencoder"}


def test_grad_cam_on_a_torchscript_classifier_says_why_not(torchscript_spec):
    from ChestXrayCounterfactualLib.errors import ExplainerError

    explainer = Explainer(load_model_set(torchscript_spec))
    with pytest.raises(ExplainerError, match="names no Grad-CAM layer"):
        explainer.explain(read_radiograph(SAMPLE), ExplainOptions(finding="Cardiomegaly"))


def _write(tmp_path, spec: dict):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(
    "change,message",
    [
        ({"resolution": 20}, "'resolution' must be between 64 and 1024"),
        ({"normalisation": "hounsfield"}, "'normalisation' must be one of unit, xrv, imagenet"),
        ({"classifier": {"kind": "onnx"}}, "classifier field 'kind' must be one of"),
        ({"classifier": {"kind": "torchscript", "path": "missing.pt"}}, "classifier file .*missing.pt does not exist"),
        ({"thresholds": {"Cardiomegaly": 2}}, "'thresholds' must be"),
        ({"name": None}, "field 'name' must be str"),
    ],
)
def test_bad_spec_gets_one_clear_sentence(tmp_path, change, message):
    spec = {"name": "s", "resolution": 224, "classifier": {"kind": "bundled"}, "autoencoder": {"kind": "bundled"}}
    spec.update(change)
    with pytest.raises(SpecError, match=message) as error:
        load_model_set(_write(tmp_path, spec))
    assert "\n" not in str(error.value)


def test_not_json_and_missing_xrv_weights_are_clear(tmp_path):
    (tmp_path / "broken.json").write_text("{name: ")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_model_set(tmp_path / "broken.json")
    pytest.importorskip("torchxrayvision")
    spec = {
        "name": "x",
        "resolution": 224,
        "normalisation": "xrv",
        "classifier": {"kind": "torchxrayvision", "weights": "densenet121-res224-all"},
        "autoencoder": {"kind": "bundled"},
    }
    with pytest.raises(SpecError, match="not in its local cache; nothing is downloaded"):
        load_model_set(_write(tmp_path, spec))


@pytest.mark.parametrize("resolution", [224, 512])
def test_torchxrayvision_architecture_explains_end_to_end(tmp_path, resolution):
    pytest.importorskip("torchxrayvision", reason="optional dependency")
    torch.manual_seed(0)
    spec = {
        "name": f"xrv-densenet-{resolution}",
        "resolution": resolution,
        "normalisation": "xrv",
        "classifier": {"kind": "torchxrayvision", "architecture": "densenet"},
        "autoencoder": {"kind": "bundled"},
        "findings": ["Cardiomegaly", "Effusion"],
        "thresholds": "logit-0.5",
    }
    models = load_model_set(_write(tmp_path, spec))
    assert models.size == resolution and models.findings == ["Cardiomegaly", "Effusion"]
    explainer = Explainer(models)
    image = read_radiograph(SAMPLE)
    x, _ = explainer.model_input(image)
    assert x.shape[-1] == resolution
    assert models.classifier.gradcam_layer is models.classifier.net.features.denseblock4
    e = explainer.explain(image, ExplainOptions(finding="Cardiomegaly", method="latent-shift"))
    assert e.counterfactual.shape == image.shape and e.model_saliency.shape == (resolution, resolution)
    assert np.isfinite(e.counterfactual).all()
