"""Reduced precision on the bundled models and held-out NIH images: bf16 (the one reduced precision the CPU runs)
gives float32's decisions. The default explanation of one test-split positive per finding, at fp32 and at bf16:
the same flip, the same number of auditors changing their mind, and p after within ``P_AFTER_TOLERANCE``.

The figures on more images, and the time bf16 takes, are in Testing/benchmarks/README.md ("Reduced precision").
"""

from __future__ import annotations

import csv

import pytest

from ChestXrayCounterfactualLib import read_radiograph
from ChestXrayCounterfactualLib.inputs.radiograph import Radiograph
from ChestXrayCounterfactualLib.options import ExplainOptions
from conftest import ROOT, shared

#: How far p after may move at bf16: over ten times the largest difference measured on 4 test positives (0.004,
#: Testing/benchmarks/README.md), and far below a change that would move a decision (thresholds 0.3-0.6).
P_AFTER_TOLERANCE = 0.05


def first_positive(explainer, finding: str) -> Radiograph:
    """The first test-split NIH image (by file name) labelled with ``finding`` that the model calls positive."""
    with (ROOT / "weights" / "splits.csv").open(newline="") as file:
        test = {row["file"] for row in csv.DictReader(file) if row["split"] == "test"}
    with shared("nih", "labels.csv").open(newline="") as file:
        labelled = sorted(row["file"] for row in csv.DictReader(file) if row["file"] in test and row[finding] == "1")
    for name in labelled:
        image = read_radiograph(shared("nih", "images", name))
        if explainer.predict(image)[finding] >= explainer.models.thresholds[finding]:
            return image
    raise AssertionError(f"no test-split image the model calls positive for {finding}")


@pytest.mark.parametrize("finding", ["Cardiomegaly", "Effusion"])
def test_bf16_gives_the_float32_decisions_on_a_held_out_positive(explainer, finding):
    image = first_positive(explainer, finding)
    fp32 = explainer.explain(image, ExplainOptions(finding=finding))
    bf16 = explainer.explain(image, ExplainOptions(finding=finding, precision="bf16"))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.flipped == fp32.flipped
    assert bf16.verdict == fp32.verdict
    assert bf16.p_counterfactual == pytest.approx(fp32.p_counterfactual, abs=P_AFTER_TOLERANCE)
    assert bf16.p_original == fp32.p_original  # the input's classification is float32 at every precision
