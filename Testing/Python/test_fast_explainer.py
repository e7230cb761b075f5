"""The whole pipeline, ``Explainer(ModelSet(...))``, on the toy models and a small non-square radiograph: every
counterfactual method flips the toy finding both ways on the original grid, leaves untouched pixels exactly as
they were, and gives the same result twice.
"""

from __future__ import annotations

import numpy as np
import pytest

from ChestXrayCounterfactualLib.counterfactual import DEADBAND
from ChestXrayCounterfactualLib.engine import Explainer
from ChestXrayCounterfactualLib.methods import COUNTERFACTUAL_METHODS
from ChestXrayCounterfactualLib.reader import Radiograph
from toy_models import FINDINGS, latent_direction, quadrant_mask, toy_model_set

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
    e = explainer.explain(image, finding=FINDINGS[0], method=method, frames=5)
    assert e.direction == direction and e.flipped
    present = direction == "remove"
    assert (e.p_original >= e.threshold) == present and (e.p_counterfactual >= e.threshold) != present
    assert e.counterfactual.shape == e.difference.shape == e.saliency.shape == (ROWS, COLS)
    assert len(e.path) == 5
    np.testing.assert_array_equal(e.counterfactual[e.difference == 0], image.pixels[e.difference == 0])
    np.testing.assert_array_equal(e.counterfactual[FAR], image.pixels[FAR])
    assert np.abs(e.difference[e.difference != 0]).min() >= DEADBAND * WHITE * (1 - 1e-4)
    assert np.abs(e.difference[QUADRANT]).max() > 0.1 * WHITE
    assert float(np.abs(e.model_change[~e.geometry.valid_mask().numpy()]).max()) == 0


def test_the_same_input_gives_the_same_explanation(explainer):
    """Seeded inside ``explain``: even with the noisy saliency method, two runs agree to the last bit."""
    first, second = (
        explainer.explain(radiograph(START["remove"]), finding=FINDINGS[0], saliency="smoothgrad") for _ in range(2)
    )
    np.testing.assert_array_equal(first.saliency, second.saliency)
    np.testing.assert_array_equal(first.counterfactual, second.counterfactual)
    assert first.counterfactual_probabilities == second.counterfactual_probabilities


def test_public_names_are_the_lazy_exports_and_all_resolve():
    """``__all__`` is spelled out for linters; it must name exactly the lazily imported exports."""
    import ChestXrayCounterfactualLib as engine

    assert engine.__all__ == sorted(engine._EXPORTS)
    for name in engine.__all__:
        assert getattr(engine, name).__name__ == name
