"""The explanation pipeline on a real radiograph with the bundled weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ChestXrayCounterfactualLib import Explainer, NoFindingError, read_radiograph
from ChestXrayCounterfactualLib.methods import COUNTERFACTUAL_METHODS, SALIENCY_METHODS
from ChestXrayCounterfactualLib.modelset.interface import AuditorModel
from ChestXrayCounterfactualLib.options import ExplainOptions
from conftest import MONOCHROME1, SAMPLE


@pytest.fixture(scope="module")
def sample():
    return read_radiograph(SAMPLE)


@pytest.fixture(scope="module")
def confident(explainer, sample):
    """The sample's most confident finding above its threshold (the model card's thresholds)."""
    probabilities = explainer.predict(sample)
    margins = {f: p - explainer.models.thresholds[f] for f, p in probabilities.items()}
    finding = max(margins, key=margins.get)
    assert margins[finding] > 0.1, f"the sample should have a confident finding, got {probabilities}"
    return finding


def test_predict_gives_a_probability_for_every_finding(explainer, sample):
    probabilities = explainer.predict(sample)
    assert list(probabilities) == explainer.findings
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    assert {"Cardiomegaly", "Effusion"} <= set(probabilities)


@pytest.mark.parametrize("method", COUNTERFACTUAL_METHODS)
def test_counterfactual_flips_a_confident_finding_on_the_original_grid(explainer, sample, confident, method):
    e = explainer.explain(sample, ExplainOptions(finding=confident, method=method))
    assert e.direction == "remove" and e.p_original >= e.threshold
    assert e.flipped and e.p_counterfactual < e.threshold
    for array in (e.counterfactual, e.saliency, e.difference):
        assert array.shape == sample.shape and array.dtype == np.float32
    np.testing.assert_allclose(e.counterfactual - sample.pixels, e.difference, atol=1e-4)
    untouched = e.difference == 0
    assert untouched.mean() > 0.2, "most of the image should keep its original pixels"
    np.testing.assert_array_equal(e.counterfactual[untouched], sample.pixels[untouched])
    assert set(e.seconds) >= {"model_space", "classify", "saliency", "counterfactual", "original_grid", "total"}
    assert len(e.model_frame_changes) >= 2
    frames = [e.frame_on_grid(k) for k in range(len(e.model_frame_changes))]
    assert all(sample.pixels.min() <= f.min() and f.max() <= sample.pixels.max() for f in frames), "in pixel range"
    np.testing.assert_array_equal(frames[0], sample.pixels)
    if method == "manifold":  # its last frame is the result the search delivered
        np.testing.assert_array_equal(frames[-1], e.counterfactual)


def test_the_same_input_gives_the_same_output(explainer, sample, confident):
    first = explainer.explain(sample, ExplainOptions(finding=confident, method="local"))
    second = explainer.explain(sample, ExplainOptions(finding=confident, method="local"))
    np.testing.assert_array_equal(first.counterfactual, second.counterfactual)
    np.testing.assert_array_equal(first.saliency, second.saliency)
    assert first.counterfactual_probabilities == second.counterfactual_probabilities


@pytest.mark.parametrize("method", SALIENCY_METHODS)
def test_every_saliency_method_gives_a_map_for_the_chosen_class(explainer, sample, method):
    from ChestXrayCounterfactualLib.explain.saliency import saliency_map

    x, _geometry = explainer.model_input(sample)
    maps = [
        saliency_map(explainer.models.classifier, x, explainer.models.index(f), method)
        for f in ("Cardiomegaly", "Effusion")
    ]
    for m in maps:
        assert m.shape == (224, 224) and float(m.min()) >= 0 and float(m.max()) <= 1 and float(m.max()) > 0
    assert not np.allclose(maps[0].numpy(), maps[1].numpy()), "a map must depend on the chosen finding"


def test_monochrome1_input_is_explained_on_its_own_grid(explainer):
    image = read_radiograph(MONOCHROME1)
    e = explainer.explain(image, ExplainOptions(finding="Cardiomegaly", direction="add", method="latent-shift"))
    assert e.counterfactual.shape == image.shape == (1955, 1841)
    assert e.direction == "add"


def test_inverted_display_gives_the_same_findings(explainer, sample):
    """A MONOCHROME1-sense volume (as Slicer holds it) with ``inverted`` set reads like the original."""
    from dataclasses import replace

    low, high = sample.window
    mirrored = replace(sample, pixels=(low + high) - sample.pixels, inverted=True)
    assert explainer.predict(mirrored) == pytest.approx(explainer.predict(sample), abs=1e-5)


def test_no_finding_above_threshold_says_so(explainer, sample):
    probabilities = dict.fromkeys(explainer.findings, 0.0)
    with pytest.raises(NoFindingError, match="no finding is above its decision threshold"):
        explainer.choose_finding(probabilities)


class NoiseAuditor(torch.nn.Module):
    """An auditor that judges nothing: random logits for every image, a fresh draw each call."""

    def __init__(self, findings: list[str]) -> None:
        super().__init__()
        self.findings = list(findings)
        self.generator = torch.Generator().manual_seed(1234)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape[0], len(self.findings), generator=self.generator) * 5


@pytest.mark.parametrize("method", COUNTERFACTUAL_METHODS)
def test_auditors_that_output_noise_change_no_counterfactual(explainer, sample, confident, method):
    """Auditors judge; they never steer, stop, choose a region or a default: every output but the verdict is
    bit-identical when they are replaced by noise.
    """
    noisy = Explainer(
        dataclasses.replace(
            explainer.models,
            auditors=[
                AuditorModel(a.name, NoiseAuditor(explainer.findings), a.thresholds) for a in explainer.models.auditors
            ],
        ),
    )
    assert explainer.models.auditors, "the bundled model set ships auditors"
    options = ExplainOptions(finding=confident, method=method)
    real, noise = explainer.explain(sample, options), noisy.explain(sample, options)
    for name in ("counterfactual", "saliency", "difference", "model_change"):
        np.testing.assert_array_equal(getattr(real, name), getattr(noise, name), err_msg=name)
    assert [c.tobytes() for c in real.model_frame_changes] == [c.tobytes() for c in noise.model_frame_changes]
    assert real.counterfactual_probabilities == noise.counterfactual_probabilities
    assert (real.strength, real.strength_reason, real.details) == (noise.strength, noise.strength_reason, noise.details)
    assert real.audit != noise.audit, "the noise auditors should disagree with the real ones somewhere"
