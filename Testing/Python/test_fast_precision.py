"""Reduced precision on the toy models: the counterfactual search's network passes run under autocast to the dtype
asked for, every reported pass (the input's classification, the check of the delivered image, the auditors) in
float32, the results come back as float32 numpy, and float16 on the CPU is float32 with one sentence.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ChestXrayCounterfactualLib.explain.pipeline import Explainer
from ChestXrayCounterfactualLib.explain.precision import resolve_precision
from ChestXrayCounterfactualLib.modelset import AuditorModel
from ChestXrayCounterfactualLib.options import ExplainOptions
from test_fast_explainer import START, radiograph
from toy_models import FINDINGS, QuadrantClassifier, toy_model_set

pytestmark = pytest.mark.fast

CPU = torch.device("cpu")


class RecordingClassifier(QuadrantClassifier):
    """The toy classifier, noting for every pass the dtype autocast ran it at on the CPU (None: not autocast)."""

    def __init__(self, gain: float = 10.0) -> None:
        super().__init__(gain=gain)
        self.passes: list[torch.dtype | None] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return super().forward(x)


def recording_explainer() -> Explainer:
    """The toys with a recording classifier and a recording auditor."""
    models = toy_model_set()
    models.classifier = RecordingClassifier()
    models.auditors = [AuditorModel("reader", RecordingClassifier(gain=8.0), {FINDINGS[0]: 0.5})]
    return Explainer(models)


def test_each_precision_resolves_to_its_autocast_dtype_and_fp16_on_the_cpu_to_float32_with_a_sentence():
    assert resolve_precision("fp32", CPU).dtype is None and resolve_precision("fp32", CPU).warning is None
    assert resolve_precision("bf16", CPU).dtype == torch.bfloat16 and resolve_precision("bf16", CPU).warning is None
    assert resolve_precision("fp16", torch.device("cuda", 0)).dtype == torch.float16
    on_cpu = resolve_precision("fp16", CPU)
    assert (on_cpu.name, on_cpu.dtype) == ("fp32", None)
    assert on_cpu.warning is not None and on_cpu.warning.startswith("fp16 was asked for but it is offered on GPUs only")
    assert "\n" not in on_cpu.warning


@pytest.mark.parametrize("method", ["manifold", "local", "latent-shift"])
def test_bf16_runs_the_search_reduced_and_reports_in_float32(method):
    """At bf16 the search's classifier passes are autocast to bfloat16; the auditors and at least the input's
    classification and the check of the delivered image are not; the finding still flips, and every array comes
    back float32.
    """
    explainer = recording_explainer()
    options = ExplainOptions(finding=FINDINGS[0], method=method, frames=3, precision="bf16")
    e = explainer.explain(radiograph(START["remove"]), options)
    classifier, auditor = explainer.models.classifier, explainer.models.auditors[0].network
    assert isinstance(classifier, RecordingClassifier) and isinstance(auditor, RecordingClassifier)
    assert torch.bfloat16 in classifier.passes and classifier.passes.count(None) >= 2
    assert set(classifier.passes) == {torch.bfloat16, None}
    assert auditor.passes and set(auditor.passes) == {None}
    assert e.flipped and e.precision == "bf16" and e.record()["precision"] == "bf16"
    for name in ("counterfactual", "difference", "saliency", "model_change", "model_saliency", "model_reconstruction"):
        array = getattr(e, name)
        assert isinstance(array, np.ndarray) and array.dtype == np.float32, name
    assert all(change.dtype == np.float32 for change in e.model_frame_changes)


def test_fp32_runs_nothing_under_autocast():
    explainer = recording_explainer()
    e = explainer.explain(radiograph(START["add"]), ExplainOptions(finding=FINDINGS[0]))
    assert e.precision == "fp32" and e.flipped
    assert isinstance(explainer.models.classifier, RecordingClassifier)
    assert set(explainer.models.classifier.passes) == {None}


def test_fp16_on_the_cpu_is_the_float32_run_with_the_sentence_among_the_warnings():
    options = ExplainOptions(finding=FINDINGS[0], frames=3)
    image = radiograph(START["remove"])
    plain = recording_explainer().explain(image, options)
    explainer = recording_explainer()
    asked = explainer.explain(image, ExplainOptions(finding=FINDINGS[0], frames=3, precision="fp16"))
    assert asked.precision == "fp32"
    assert [w for w in asked.warnings if w not in plain.warnings] == [resolve_precision("fp16", CPU).warning]
    np.testing.assert_array_equal(asked.counterfactual, plain.counterfactual)
    assert asked.counterfactual_probabilities == plain.counterfactual_probabilities
    assert isinstance(explainer.models.classifier, RecordingClassifier)
    assert set(explainer.models.classifier.passes) == {None}
