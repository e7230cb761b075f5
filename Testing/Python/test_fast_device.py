"""Where the models run: a device request resolved to a torch device, a request this machine cannot meet answered
with one sentence and the CPU (never an exception), and the pipeline on a resolved device giving what the plain CPU
run gives, as numpy arrays on the input's grid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ChestXrayCounterfactualLib.explain.pipeline import Explainer
from ChestXrayCounterfactualLib.modelset import AuditorModel, resolve_device
from ChestXrayCounterfactualLib.modelset.device import _runs
from ChestXrayCounterfactualLib.options import ExplainOptions
from test_fast_explainer import START, radiograph
from toy_models import FINDINGS, QuadrantClassifier, latent_direction, quadrant_mask, toy_model_set

pytestmark = pytest.mark.fast

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA card here")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="torch sees an Apple GPU here")


def test_cpu_is_the_default_and_needs_no_warning():
    assert resolve_device(None) == resolve_device("cpu") == resolve_device(" CPU ")
    assert resolve_device("cpu").device == torch.device("cpu") and resolve_device("cpu").warning is None


def test_auto_takes_the_best_device_torch_sees_without_a_warning():
    choice = resolve_device("auto")
    if torch.cuda.is_available():
        expected = "cuda"
    elif torch.backends.mps.is_available():
        expected = "mps"
    else:
        expected = "cpu"
    assert choice.device.type == expected and choice.warning is None


@NO_CUDA
@pytest.mark.parametrize("request_", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_one_sentence_and_the_cpu(request_):
    choice = resolve_device(request_)
    assert choice.device == torch.device("cpu")
    assert choice.warning is not None and choice.warning.startswith(f"{request_} was asked for but this ")
    if torch.version.cuda is None:
        assert "was built without CUDA; install a CUDA build of torch" in choice.warning
    else:
        assert f"this CUDA {torch.version.cuda} build of torch sees no usable NVIDIA card" in choice.warning
    assert choice.warning.endswith("running on the CPU instead") and "\n" not in choice.warning


@NO_MPS
def test_mps_without_an_apple_gpu_is_one_sentence_and_the_cpu():
    choice = resolve_device("mps")
    assert choice.device == torch.device("cpu")
    assert choice.warning is not None and "sees no Apple GPU" in choice.warning


@pytest.mark.parametrize("request_", ["gpu", "cuda:", "cuda:x", "cuda0", ""])
def test_a_request_that_names_no_device_is_a_bad_option(request_):
    with pytest.raises(ValueError, match="device must be auto"):
        resolve_device(request_)


@pytest.mark.parametrize(
    ("arch", "capability", "runs"),
    [
        ("sm_80", (8, 6), True),  # same major architecture, older minor
        ("sm_86", (8, 0), False),
        ("sm_90", (10, 0), False),  # binary code does not run on another major architecture
        ("compute_70", (9, 0), True),  # PTX is compiled by the driver for newer cards
        ("compute_90", (8, 6), False),
        ("sm_90a", (9, 0), False),
    ],
)
def test_which_built_architectures_run_on_a_card(arch, capability, runs):
    assert _runs(arch, *capability) is runs


def models_with_an_auditor():
    """The toys, with a stored direction (for "directions") and an auditor, so every device path runs."""
    models = toy_model_set(directions={FINDINGS[0]: latent_direction(quadrant_mask()).flatten()[None]})
    models.auditors = [AuditorModel("reader", QuadrantClassifier(gain=8.0), {FINDINGS[0]: 0.5})]
    return models


@pytest.mark.parametrize("method", ["local", "latent-shift", "directions"])
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda"])
def test_a_device_gives_what_the_plain_cpu_run_gives(method, device):
    """Explained on the resolved device (the CPU with a warning, if this machine cannot run on it) and handed back
    as numpy on the input's grid, equal to the run of an Explainer that was never given a device: to the last bit
    on the CPU, within float rounding on an accelerator.
    """
    options = ExplainOptions(finding=FINDINGS[0], method=method, saliency="integrated-gradients", frames=3)
    images = [radiograph(START["remove"]), radiograph(START["add"])]
    plain = Explainer(models_with_an_auditor()).explain_batch(images, options)
    explainer = Explainer(models_with_an_auditor(), device=device)
    choice = resolve_device(device)
    assert explainer.device == choice.device and explainer.device_warning == choice.warning
    assert next(explainer.models.classifier.parameters()).device.type == choice.device.type
    moved = explainer.explain_batch(images, options)
    tolerance = 0 if choice.device.type == "cpu" else 1e-4
    for a, b in zip(plain, moved, strict=True):
        assert isinstance(b.counterfactual, np.ndarray) and b.counterfactual.shape == a.radiograph.shape
        for name in ("counterfactual", "saliency", "difference", "model_change", "model_saliency"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), atol=tolerance * 4095, err_msg=name)
        assert b.flipped == a.flipped and b.audit.keys() == a.audit.keys()
        assert b.counterfactual_probabilities == pytest.approx(a.counterfactual_probabilities, abs=tolerance)
