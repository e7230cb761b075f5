"""The whole pipeline, ``Explainer(ModelSet(...))``, on the toy models and a small non-square radiograph: every
counterfactual method flips the toy finding both ways on the original grid, leaves untouched pixels exactly as
they were, and gives the same result twice.
"""

from __future__ import annotations

import numpy as np
import pytest

from ChestXrayCounterfactualLib.explain.counterfactual import DEADBAND
from ChestXrayCounterfactualLib.errors import NoFindingError
from ChestXrayCounterfactualLib.explain.pipeline import Explainer
from ChestXrayCounterfactualLib.errors import ExplainerError
from ChestXrayCounterfactualLib.modelset import AuditorModel
from ChestXrayCounterfactualLib.methods import COUNTERFACTUAL_METHODS
from ChestXrayCounterfactualLib.explain.records import strength_line
from ChestXrayCounterfactualLib.options import ExplainOptions
from ChestXrayCounterfactualLib.inputs.radiograph import Radiograph
from toy_models import FINDINGS, QuadrantClassifier, latent_direction, quadrant_mask, toy_model_set

pytestmark = pytest.mark.fast

ROWS, COLS = 48, 64  # padded to 64 x 64, then halved to the toy's 32 x 32 model space (4 rows of padding on top)
#: The part of the radiograph that lands in the toy finding's model-space quadrant.
QUADRANT = (slice(0, 24), slice(0, 32))
#: The part the search must leave alone: clear of the quadrant by more than a latent block and a resampling tap.
FAR = np.zeros((ROWS, COLS), bool)
FAR[36:] = FAR[:, 48:] = True
WHITE = 4095.0  # a 12-bit radiograph, window 0-4095: one grey level of display is 16 pixel values
#: direction -> the quadrant's display intensity that puts the toy finding on the other side of its 0.5 threshold.
START = {"remove": 0.85, "add": 0.45}


def radiograph(quadrant: float) -> Radiograph:
    """A seeded textured 12-bit radiograph whose toy-finding area has display intensity near ``quadrant``."""
    rng = np.random.default_rng(0)
    display = rng.uniform(0.2, 0.8, (ROWS, COLS))
    display[QUADRANT] = quadrant + rng.uniform(-0.05, 0.05, display[QUADRANT].shape)
    return Radiograph((display * WHITE).astype(np.float32), window=(0.0, WHITE))


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    """The toys as a model set, with one stored latent direction for the toy finding (for "directions")."""
    return Explainer(toy_model_set(directions={FINDINGS[0]: latent_direction(quadrant_mask()).flatten()[None]}))


@pytest.mark.parametrize("direction", START)
@pytest.mark.parametrize("method", COUNTERFACTUAL_METHODS)
def test_every_method_flips_the_finding_on_the_original_grid(explainer, method, direction):
    """The default direction follows the probability; the delivered image crosses the threshold; the change is
    visible (at least one grey level) or absent, never on the padding, and pixels away from it are untouched.
    """
    image = radiograph(START[direction])
    e = explainer.explain(image, ExplainOptions(finding=FINDINGS[0], method=method, frames=5))
    assert e.direction == direction and e.flipped
    present = direction == "remove"
    assert (e.p_original >= e.threshold) == present and (e.p_counterfactual >= e.threshold) != present
    assert e.counterfactual.shape == e.difference.shape == e.saliency.shape == (ROWS, COLS)
    frames = len(e.model_frame_changes)
    assert frames == len(e.frame_probabilities) and (frames == 5 or (method == "manifold" and 2 <= frames < 5)), (
        "as many frames as asked, or (the manifold search's own steps) every step of a shorter search"
    )
    np.testing.assert_array_equal(e.counterfactual[e.difference == 0], image.pixels[e.difference == 0])
    np.testing.assert_array_equal(e.counterfactual[FAR], image.pixels[FAR])
    assert np.abs(e.difference[e.difference != 0]).min() >= DEADBAND * WHITE * (1 - 1e-4)
    assert np.abs(e.difference[QUADRANT]).max() > 0.1 * WHITE
    assert float(np.abs(e.model_change[~e.geometry.valid_mask().numpy()]).max()) == 0


def test_the_same_input_gives_the_same_explanation(explainer):
    """Seeded inside ``explain``: even with the noisy saliency method, two runs agree to the last bit."""
    options = ExplainOptions(finding=FINDINGS[0], saliency="smoothgrad")
    first, second = (explainer.explain(radiograph(START["remove"]), options) for _ in range(2))
    np.testing.assert_array_equal(first.saliency, second.saliency)
    np.testing.assert_array_equal(first.counterfactual, second.counterfactual)
    assert first.counterfactual_probabilities == second.counterfactual_probabilities


def test_public_names_are_the_lazy_exports_and_all_resolve():
    """``__all__`` is spelled out for linters; it must name exactly the lazily imported exports."""
    import ChestXrayCounterfactualLib as engine

    assert engine.__all__ == sorted(engine._EXPORTS)
    for name in engine.__all__:
        assert getattr(engine, name).__name__ == name


def test_the_explanation_is_complete_for_its_writers(explainer):
    """Frames on both grids from the result alone (the first is the input, the last the delivered change), the
    total kept by ``record_time``, and the record and summary line every writer uses.
    """
    image = radiograph(START["remove"])
    e = explainer.explain(image, ExplainOptions(finding=FINDINGS[0], frames=4))
    frames = e.model_frames()
    assert len(frames) == 4 and [p for _, p in frames] == e.frame_probabilities
    np.testing.assert_array_equal(frames[0][0], e.model_original)
    np.testing.assert_array_equal(e.frame_on_grid(0), image.pixels)
    assert frames[0][1] >= e.threshold > frames[-1][1]
    assert e.frame_on_grid(3).shape == image.shape and not np.array_equal(e.frame_on_grid(3), image.pixels)
    engine_total = e.seconds["total"]
    e.record_time("write", 0.5)
    assert e.seconds["total"] == pytest.approx(engine_total + 0.5, abs=1e-3)
    record = e.record()
    assert record["model_set"] == explainer.models.identity() and record["seconds"] is e.seconds
    assert e.summary().startswith(f"{FINDINGS[0]} p {e.p_original:.3f} -> {e.p_counterfactual:.3f} ")
    assert e.summary().endswith(f"flipped) in {e.seconds['total']:.1f} s on cpu")
    anonymous = e.record(anonymize=True)
    assert not any(key.endswith("_uid") for key in anonymous["source_metadata"])


@pytest.mark.parametrize("method", COUNTERFACTUAL_METHODS)
def test_a_batch_gives_what_one_by_one_gives(explainer, method):
    """Images explained together share every pass yet each keeps its own search: the finding removed from one
    and added to the other, results equal to explaining them one at a time (to float rounding of batched
    convolutions), and an image with no finding above threshold gets its error in its place.
    """
    images = [radiograph(START["remove"]), radiograph(START["add"])]
    batch = explainer.explain_batch(images, ExplainOptions(finding=FINDINGS[0], method=method, frames=4))
    for image, together in zip(images, batch, strict=True):
        alone = explainer.explain(image, ExplainOptions(finding=FINDINGS[0], method=method, frames=4))
        assert isinstance(together, type(alone)) and together.direction == alone.direction
        assert together.p_counterfactual == pytest.approx(alone.p_counterfactual, abs=1e-5)
        np.testing.assert_allclose(together.counterfactual, alone.counterfactual, atol=WHITE * 1e-4)
        np.testing.assert_allclose(together.saliency, alone.saliency, atol=1e-5)
        assert together.details["batch_size"] == 2
    absent = explainer.explain_batch([images[1], images[0]], ExplainOptions(method=method, frames=4))
    assert isinstance(absent[0], NoFindingError) and absent[1].flipped


def test_independent_auditors_judge_the_delivered_counterfactual():
    """An auditor that reads the finding where the model does agrees; one that reads the finding elsewhere is not
    moved by a change confined to the model's region, and the verdict says who changed their mind.
    """
    reader, blind = QuadrantClassifier(gain=8.0), QuadrantClassifier()
    blind.findings = list(reversed(FINDINGS))  # its "Toy finding" reads everything but the quadrant
    models = toy_model_set()
    models.auditors = [
        AuditorModel("reader", reader, {FINDINGS[0]: 0.5}),
        AuditorModel("blind", blind, {FINDINGS[0]: 0.05}),
    ]
    e = Explainer(models).explain(radiograph(START["remove"]), ExplainOptions(finding=FINDINGS[0], method="local"))
    assert e.flipped and set(e.audit) == {"reader", "blind"}
    reader_says = e.audit["reader"]
    assert reader_says["saw"] and reader_says["agrees"]
    assert reader_says["p_counterfactual"] < 0.5 < reader_says["p_original"]
    assert not e.audit["blind"]["agrees"] and not e.audit["blind"]["moved"]
    assert e.verdict == "1 of 2 independent models agree" and e.verdict in e.summary()
    models.auditors = models.auditors[1:]
    alone = Explainer(models).explain(radiograph(START["remove"]), ExplainOptions(finding=FINDINGS[0], method="local"))
    assert alone.verdict.startswith("only the explained model changed its mind")
    assert alone.record()["auditors"]["blind"] == alone.audit["blind"]


@pytest.mark.parametrize("method", COUNTERFACTUAL_METHODS)
def test_typical_strength_goes_past_the_threshold_to_the_typical_probability(explainer, method):
    """"typical" aims at the stored median probability of images without the finding (with it, when adding), so it
    goes farther than "threshold"; a model set without typical probabilities refuses it with a sentence.
    """
    image = radiograph(START["remove"])
    just = explainer.explain(image, ExplainOptions(finding=FINDINGS[0], method=method, frames=3))
    explainer.models.typical = {"absent": {FINDINGS[0]: 0.1}, "present": {FINDINGS[0]: 0.9}}
    try:
        options = ExplainOptions(finding=FINDINGS[0], method=method, frames=3, strength="typical")
        typical = explainer.explain(image, options)
    finally:
        explainer.models.typical = {}
    assert typical.flipped and typical.strength == "typical" and typical.record()["strength"] == "typical"
    assert typical.p_counterfactual < min(0.2, just.p_counterfactual)
    with pytest.raises(ExplainerError, match="no typical probabilities"):
        explainer.explain(image, ExplainOptions(finding=FINDINGS[0], method=method, strength="typical"))


def test_the_default_strength_and_why_it_was_used_are_recorded(explainer):
    """No strength asked for: "typical" where the model set stores typical probabilities, "threshold" (saying why)
    where it does not; asked for: that strength, said so. The record, the summary's strength line and the first
    frame across the threshold agree with the frames' probabilities.
    """
    image = radiograph(START["remove"])
    plain = explainer.explain(image, ExplainOptions(finding=FINDINGS[0], frames=6))
    assert plain.strength == "threshold" and "stores no typical probabilities" in plain.strength_reason
    explainer.models.typical = {"absent": {FINDINGS[0]: 0.1}, "present": {FINDINGS[0]: 0.9}}
    try:
        default = explainer.explain(image, ExplainOptions(finding=FINDINGS[0], frames=6))
        asked = explainer.explain(image, ExplainOptions(finding=FINDINGS[0], frames=6, strength="threshold"))
    finally:
        explainer.models.typical = {}
    assert default.strength == "typical" and default.strength_reason.startswith("the default: to 0.10")
    assert asked.strength == "threshold" and asked.strength_reason.startswith("asked for: just across")
    record = default.record()
    assert (record["strength"], record["strength_reason"]) == (default.strength, default.strength_reason)
    crossing = record["crossing_frame"]
    p = default.frame_probabilities
    assert 0 < crossing < len(p) and p[crossing] < default.threshold <= p[crossing - 1]
    assert strength_line(record).endswith(f"crosses the threshold at frame {crossing + 1} of {len(p)}")
