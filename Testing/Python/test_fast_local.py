"""The local method on toy models: the saliency region, confinement of the change to it, widening when the
region cannot flip the finding, and the bounded refinement that follows the crossing.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ChestXrayCounterfactualLib.explain import counterfactual as cf
from toy_models import SIZE, quadrant_mask, toy_image, toy_model_set, toy_problem

pytestmark = pytest.mark.fast

PRESENT = 0.65  # quadrant intensity with the finding present (p above the toy's 0.5 threshold)
VALID = torch.ones(SIZE, SIZE)


def bump_on_quadrant() -> torch.Tensor:
    """Saliency as Grad-CAM would give it for the toy finding: a smooth bump on the top-left quadrant, 0 elsewhere."""
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    bump = torch.exp(-((rows - SIZE / 4) ** 2 + (cols - SIZE / 4) ** 2) / (2 * (SIZE / 4) ** 2))
    return bump * quadrant_mask()


def corner() -> torch.Tensor:
    """Saliency on the bottom-right quadrant only, an area the toy finding does not read."""
    return quadrant_mask().flip(0, 1).float()


#: Saliency -> the region quantile the local method should settle on: the first of 0.6, 0.3, 0 (whole image)
#: whose region can flip the finding.
WIDENING = {
    "on-the-quadrant": (bump_on_quadrant, 0.6),
    "quadrant-second": (lambda: corner() + 0.5 * quadrant_mask(), 0.3),
    "off-the-quadrant": (corner, 0.0),
}


def cost(problem: cf.LatentProblem, result: cf.Counterfactual, others_weight: float, proximity: float) -> float:
    """What the refinement minimises: drift of the other finding's logit plus the mean change of the image."""
    held = float((result.logits[1] - problem.logits[1]) ** 2)
    return others_weight * held + proximity * float((result.image - problem.x).abs().mean())


def test_saliency_region_ramps_from_the_low_to_the_high_quantile_on_the_valid_area():
    """0 below the low quantile of the valid area's saliency, 1 above the high one, rising in between, 0 off it."""
    saliency = torch.arange(SIZE * SIZE, dtype=torch.float32).view(SIZE, SIZE).flip(0)
    valid = torch.zeros(SIZE, SIZE)
    valid[SIZE // 2 :] = 1
    region = cf.saliency_region(saliency, valid, low=0.8, high=0.95)
    inside = region[valid > 0]
    assert float(region[valid == 0].abs().max()) == 0
    assert float((inside == 0).float().mean()) == pytest.approx(0.8, abs=2 / inside.numel())
    assert float((inside == 1).float().mean()) == pytest.approx(0.05, abs=2 / inside.numel())
    order = saliency[valid > 0].argsort()
    assert bool((inside[order].diff() >= 0).all()), "the region must grow with the saliency"


def test_local_change_is_confined_to_the_saliency_region():
    """Outside the region the local method settles on, the delivered image keeps every input value exactly."""
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
    result = cf.run(cf.local_counterfactual(problem, bump_on_quadrant()))
    assert result.crossed and result.details["region_quantile"] == 0.6
    region = cf.saliency_region(bump_on_quadrant(), VALID, 0.6)
    assert torch.equal(result.weight, region)
    outside = region == 0
    assert 0 < float(outside.float().mean()) < 1
    assert torch.equal(result.image[0, 0][outside], problem.x[0, 0][outside])
    assert float((result.image - problem.x).abs().max()) > cf.DEADBAND, "the region itself should change"


@pytest.mark.parametrize("saliency, quantile", WIDENING.values(), ids=WIDENING.keys())
def test_local_widens_the_region_until_the_finding_flips(saliency, quantile):
    """A region that cannot flip the finding is widened (quantile 0.6, then 0.3), and lifted (the whole valid
    area) as a last resort; the result records which region it used, and that region is its change weight.
    """
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
    result = cf.run(cf.local_counterfactual(problem, saliency()))
    assert result.crossed and result.details["region_quantile"] == quantile
    expected = cf.saliency_region(saliency(), VALID, quantile) if quantile else VALID
    assert torch.equal(result.weight, expected)
    assert result.details["region_area"] == pytest.approx(float(expected.mean()), abs=1e-4)


def test_local_that_cannot_flip_anywhere_reports_it_without_refining():
    """Adding a finding beyond the display range fails in every region: uncrossed, no refinement steps."""
    problem = toy_problem(toy_model_set(), toy_image(1.0), sign=1, threshold=0.999)
    result = cf.run(cf.local_counterfactual(problem, bump_on_quadrant()))
    assert not result.crossed and not problem.crossed(result.logits)
    assert result.details["region_quantile"] == 0.0 and result.details["optimisation_steps"] == 0


@pytest.mark.parametrize("quadrant, overshoots", [(0.65, False), (0.8, True)])
def test_local_refinement_never_raises_the_cost_of_its_start_and_stays_crossed(quadrant, overshoots):
    """The Adam refinement starts from the latent shift in the region and returns a crossing result whose cost
    (other finding's drift + change) is at most the start's, and below it when the start overshot the goal.
    """
    weights = {"others_weight": 1.0, "proximity_weight": 20.0}
    problem = toy_problem(toy_model_set(), toy_image(quadrant), sign=-1)
    region = cf.saliency_region(bump_on_quadrant(), VALID, 0.6)
    start = cf.run(cf.latent_shift(replace(problem, region=region), hold_others=True))
    result = cf.run(cf.local_counterfactual(problem, bump_on_quadrant(), **weights))
    assert start.crossed and result.crossed and problem.crossed(result.logits)
    assert (problem.sign * (float(start.logits[0]) - problem.goal) > 0) == overshoots
    before, after = cost(problem, start, *weights.values()), cost(problem, result, *weights.values())
    assert after < before if overshoots else after <= before


@pytest.mark.parametrize("max_steps", [0, 3])
def test_local_refinement_takes_at_most_its_steps(max_steps):
    """``max_steps`` bounds the refinement; the animation has ``frames`` latents from the input to the result."""
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
    result = cf.run(cf.local_counterfactual(problem, bump_on_quadrant(), frames=4, max_steps=max_steps))
    assert result.crossed and result.details["optimisation_steps"] == max_steps
    assert len(result.path) == 4 and torch.equal(result.path[0], problem.latent)
    assert torch.allclose(result.path[-1], result.latent)


def test_local_reports_the_evaluations_it_made():
    """``details["evaluations"]`` is the number of decoder+classifier passes the method made."""
    models = toy_model_set()
    problem = toy_problem(models, toy_image(PRESENT), sign=-1)
    decode, calls = models.autoencoder.decode, []
    models.autoencoder.decode = lambda z: calls.append(1) or decode(z)
    result = cf.run(cf.local_counterfactual(problem, bump_on_quadrant(), max_steps=3))
    assert result.details["evaluations"] == len(calls)
