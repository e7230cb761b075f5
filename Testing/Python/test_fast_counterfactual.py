"""The threshold search on toy models: regula falsi, ``line_search``, ``latent_shift``, ``along_directions`` and the
projected descent of ``manifold_counterfactual``.

The toy's first finding reads only the top-left quadrant's mean intensity, so brightening that quadrant adds
the finding, darkening it removes it, and a step anywhere else cannot cross the threshold.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
import torch

from ChestXrayCounterfactualLib.explain import counterfactual as cf
from ChestXrayCounterfactualLib.modelset import CompanionModel
from toy_models import (
    SIZE,
    QuadrantClassifier,
    latent_direction,
    quadrant_mask,
    toy_image,
    toy_model_set,
    toy_problem,
)

pytestmark = pytest.mark.fast

#: Quadrant intensity of an image with the finding (p above 0.5), and of one without it.
PRESENT, ABSENT = 0.65, 0.3
#: sign: -1 removes the finding, +1 adds it (as ``LatentProblem.sign``); the image starts on the other side.
CASES = {"remove": (-1, PRESENT), "add": (1, ABSENT)}


def toward(sign: int) -> torch.Tensor:
    """The latent direction that moves the first finding's logit toward ``sign``."""
    return sign * latent_direction(quadrant_mask())


def elsewhere() -> torch.Tensor:
    """A latent direction the first finding does not read: it brightens the bottom-right quadrant only."""
    return latent_direction(quadrant_mask().flip(0, 1))


def side(problem: cf.LatentProblem, logits: torch.Tensor) -> float:
    """Signed distance of the target logit past the threshold on the problem's side (> 0: crossed)."""
    return problem.sign * (float(logits[problem.target]) - cf.logit(problem.threshold))


def regula_falsi_root(h: Callable[[float], float], lo: float, hi: float, steps: int = 60) -> tuple[float, list]:
    """Iterate the engine's regula falsi step on ``h`` (h(lo) < 0 < h(hi)), keeping the bracket; returns
    (last step, [(lo, a, hi), ...] per iteration) so tests can check every step stayed bracketed.
    """
    trail = []
    for _ in range(steps):
        a = cf._regula_falsi(lo, h(lo), hi, h(hi))
        trail.append((lo, a, hi))
        if abs(h(a)) < 1e-9:
            break
        lo, hi = (a, hi) if h(a) < 0 else (lo, a)
    return a, trail


def test_regula_falsi_is_exact_on_a_line():
    """A root well inside the bracket of a linear function is found in one step (the secant is the line)."""
    assert cf._regula_falsi(0.0, -3.0, 1.0, 1.0) == pytest.approx(0.75)
    assert cf._regula_falsi(0.2, -0.5, 0.6, 1.5) == pytest.approx(0.3)


def test_regula_falsi_never_leaves_the_bracket():
    """Whatever the values (flat, reversed, far off), the step lies inside the bracket, 10% clear of either end,
    so a line search always makes progress and never steps past a known crossing.
    """
    rng = random.Random(0)
    for _ in range(500):
        lo_a = rng.uniform(0, 2)
        hi_a = lo_a + rng.uniform(1e-3, 2)
        lo_h, hi_h = rng.choice([rng.uniform(-5, 0), 0.0]), rng.choice([rng.uniform(-5, 5), 0.0, -1e-9, 1e3])
        a = cf._regula_falsi(lo_a, lo_h, hi_a, hi_h)
        width = hi_a - lo_a
        assert lo_a + 0.1 * width - 1e-12 <= a <= hi_a - 0.1 * width + 1e-12, (lo_a, lo_h, hi_a, hi_h, a)


@pytest.mark.parametrize(
    "h, root",
    [
        (lambda a: a**3 - 0.5, 0.5 ** (1 / 3)),
        (lambda a: math.exp(a) - 2, math.log(2)),
        (lambda a: math.tanh(4 * (a - 0.7)), 0.7),
        (lambda a: 1 / (1 + math.exp(-20 * (a - 1.3))) - 0.5, 1.3),
    ],
    ids=["cubic", "exponential", "tanh", "steep-logistic"],
)
def test_regula_falsi_converges_bracketed_on_monotone_functions(h, root):
    """On increasing functions with a known root the iteration converges to it, every step inside its bracket."""
    a, trail = regula_falsi_root(h, 0.0, 2.0)
    assert a == pytest.approx(root, abs=1e-6)
    assert len(trail) < 40
    assert all(lo < step < hi and h(lo) < 0 < h(hi) for lo, step, hi in trail)


@pytest.mark.parametrize("direction", CASES)
def test_line_search_crosses_the_threshold_and_stops_near_the_goal(direction):
    """remove: p from above to below the threshold; add: from below to above; the target logit ends past the
    threshold and within half a logit of the goal (threshold + margin), in at most the evaluations allowed.
    """
    sign, quadrant = CASES[direction]
    problem = toy_problem(toy_model_set(), toy_image(quadrant), sign)
    assert side(problem, problem.logits) < -1, "the toy image should start well on the other side"
    result = cf.run(cf.line_search(problem, toward(sign), max_evaluations=8))
    assert result.crossed and side(problem, result.logits) > 0
    assert abs(float(result.logits[0]) - problem.goal) <= 0.5
    assert problem.evaluations <= 8
    _, judged = cf.run(problem.evaluate(result.latent))
    assert torch.equal(judged, result.logits), "the logits reported must be those of the latent returned"


@pytest.mark.parametrize("direction", CASES)
def test_line_search_reports_no_crossing_along_a_direction_the_finding_ignores(direction):
    """A direction that cannot move the finding ends within its reach (a step of at most 3 |z0|), uncrossed."""
    sign, quadrant = CASES[direction]
    problem = toy_problem(toy_model_set(), toy_image(quadrant), sign)
    result = cf.run(cf.line_search(problem, elsewhere(), max_evaluations=8))
    assert not result.crossed and side(problem, result.logits) < 0
    assert 0 < result.details["step"] <= 3.0


def test_uncrossed_line_search_stays_within_the_image_change_budget():
    """``MAX_MEAN_CHANGE`` is the largest mean change a search may reach: an uncrossed result keeps to it too."""
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
    result = cf.run(cf.line_search(problem, elsewhere()))
    assert float((result.image - problem.x).abs().mean()) <= cf.MAX_MEAN_CHANGE


def test_line_search_reports_no_crossing_beyond_the_display_range():
    """Adding a finding that would need the quadrant brighter than white cannot cross: reported, not faked."""
    problem = toy_problem(toy_model_set(), toy_image(1.0), sign=1, threshold=0.999)
    result = cf.run(cf.line_search(problem, toward(1)))
    assert not result.crossed and side(problem, result.logits) < 0
    assert float(result.image.max()) <= 1.0


@pytest.mark.parametrize("budget", [1, 2, 3, 4])
def test_line_search_respects_its_evaluation_budget(budget):
    """At most ``max_evaluations`` decoder+classifier passes, whether or not the threshold is reached (this
    far threshold takes the search 4 passes, so smaller budgets stop it early).
    """
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1, threshold=0.3)
    cf.run(cf.line_search(problem, toward(-1), max_evaluations=budget))
    assert problem.evaluations <= budget


@pytest.mark.parametrize("frames", [2, 5])
def test_latent_shift_path_runs_from_the_input_to_the_result(frames):
    """The animation has ``frames`` latents, the first the input's, the last the counterfactual's."""
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
    result = cf.run(cf.latent_shift(problem, frames))
    assert result.crossed
    assert len(result.path) == frames
    assert torch.equal(result.path[0], problem.latent)
    assert torch.allclose(result.path[-1], result.latent)


def test_latent_shift_with_a_zero_gradient_returns_the_input_and_the_reason():
    """A finding the latent cannot move (no valid area to change) gives the input back, uncrossed, with a reason."""
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
    problem.valid = torch.zeros(SIZE, SIZE)
    result = cf.run(cf.latent_shift(problem))
    assert not result.crossed and torch.equal(result.image, problem.x)
    assert "zero" in result.details["reason"]


def test_latent_shift_holding_others_keeps_the_other_finding():
    """``hold_others`` removes the other findings' gradients from the step: the other logit stays put, while the
    plain step (whose quadrant edge also feeds the other finding through the toy's blur) moves it.
    """
    drifts = {}
    for hold in (False, True):
        problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
        result = cf.run(cf.latent_shift(problem, hold_others=hold))
        assert result.crossed
        drifts[hold] = abs(float(result.logits[1] - problem.logits[1]))
    assert drifts[True] < 0.01 < drifts[False]


def test_along_directions_takes_the_first_stored_direction_that_crosses():
    """Stored directions are tried in rank order: one the finding ignores fails, the next one crosses."""
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
    stored = torch.stack([elsewhere().flatten(), latent_direction(quadrant_mask()).flatten()])
    result = cf.run(cf.along_directions(problem, stored, frames=4))
    assert result.crossed and result.details["direction_rank"] == 1
    assert len(result.path) == 4 and side(problem, result.logits) > 0


def test_along_directions_without_a_crossing_direction_says_so():
    """No stored direction at all, or none that crosses: the result is uncrossed and explains why."""
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
    assert "no stored directions" in cf.run(cf.along_directions(problem, torch.empty(0, 64))).details["reason"]
    result = cf.run(cf.along_directions(problem, elsewhere().flatten()[None]))
    assert not result.crossed and result.details["direction_rank"] == 0


def quadrant_saliency() -> torch.Tensor:
    """A saliency map that points at the toy finding's quadrant."""
    return quadrant_mask().float() + 0.01 * torch.rand(SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_projection_keeps_only_the_basis_span():
    """``project`` keeps a gradient's component in the span of the basis rows and drops the rest."""
    basis = torch.linalg.qr(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)))[0].T
    inside, outside = basis.T @ torch.tensor([1.0, -2.0, 0.5]), torch.randn(64)
    outside -= basis.T @ (basis @ outside)
    projected = cf.project((inside + outside).view(1, 1, 8, 8), basis)
    assert projected.shape == (1, 1, 8, 8)
    torch.testing.assert_close(projected.flatten(), inside)
    assert cf.project(outside, None) is outside


@pytest.mark.parametrize("direction", CASES)
def test_manifold_descent_reaches_the_goal_inside_the_salient_region(direction):
    """The descent crosses the threshold and passes the goal (threshold + margin) with the change confined to the
    salient quadrant; its path runs from the input's latent to the result's, the crossing step is recorded.
    """
    sign, quadrant = CASES[direction]
    problem = toy_problem(toy_model_set(), toy_image(quadrant), sign)
    result = cf.run(cf.manifold_counterfactual(problem, quadrant_saliency(), None, frames=4))
    assert result.crossed and sign * (float(result.logits[0]) - problem.goal) >= 0
    change = (result.image - problem.x)[0, 0]
    assert float(change[~quadrant_mask()].abs().max()) == 0, "nothing changes outside the salient quadrant"
    assert len(result.path) == 4 and torch.equal(result.path[0], problem.latent)
    assert result.details["crossing_step"] is not None and result.details["region_quantile"] == 0.75


def test_manifold_descent_moves_only_within_the_basis():
    """With a basis that spans one latent direction, every step and so the result's latent lies along it."""
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
    direction = latent_direction(quadrant_mask())
    result = cf.run(cf.manifold_counterfactual(problem, quadrant_saliency(), direction.flatten()[None], frames=3))
    assert result.crossed and result.details["manifold_dimensions"] == 1
    moved = (result.latent - problem.latent).flatten()
    torch.testing.assert_close(moved, (moved @ direction.flatten()) * direction.flatten())


def test_manifold_descent_widens_to_the_whole_image_when_the_region_cannot_flip():
    """A saliency map pointing away from the finding: the descent cannot cross there, so it runs again on the whole
    image, and says so (region quantile 0).
    """
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
    away = quadrant_mask().flip(0, 1).float()
    result = cf.run(cf.manifold_counterfactual(problem, away, None))
    assert result.crossed and result.details["region_quantile"] == 0.0


def test_manifold_descent_stays_within_the_image_change_budget():
    """A goal out of reach (the quadrant cannot get brighter than white): the descent stops at its last step within
    ``MAX_MEAN_CHANGE``, uncrossed.
    """
    problem = toy_problem(toy_model_set(), toy_image(1.0), sign=1, threshold=0.999)
    result = cf.run(cf.manifold_counterfactual(problem, quadrant_saliency(), None))
    assert not result.crossed
    assert float((result.image - problem.x).abs().mean()) <= cf.MAX_MEAN_CHANGE


@pytest.mark.parametrize("direction", CASES)
def test_manifold_frames_are_the_search_own_steps_from_the_input_to_the_result(direction):
    """The manifold method's animation is the path its search took: the first frame is the input unchanged, the last
    the delivered result, and the first frame across the threshold is the step the search first crossed at.
    """
    sign, quadrant = CASES[direction]
    problem = toy_problem(toy_model_set(), toy_image(quadrant), sign)
    result = cf.run(cf.manifold_counterfactual(problem, quadrant_saliency(), None, frames=4))
    assert result.frames is not None and len(result.frames) == 4
    (first, _), (last, last_logits) = result.frames[0], result.frames[-1]
    torch.testing.assert_close(first, problem.x)
    assert torch.equal(last, result.image) and torch.equal(last_logits, result.logits)
    crossed = [side(problem, logits) > 0 for _, logits in result.frames]
    assert crossed[-1] and crossed == sorted(crossed), "once across the threshold, the animation stays across"


def test_trajectory_frames_keep_the_crossing_step_and_every_step_of_a_short_search():
    """Evenly spaced frames over the steps, the crossing step swapped in where spacing missed it; no more steps than
    frames: every step (a shorter animation, never an extra network pass).
    """
    seen = [(torch.full((1,), float(k)), torch.zeros(1)) for k in range(11)]
    steps = [int(image) for image, _ in cf.trajectory_frames(seen, None, 3)]
    assert steps == [0, 5, 10]
    assert [int(image) for image, _ in cf.trajectory_frames(seen, 7, 3)] == [0, 7, 10]
    assert [int(image) for image, _ in cf.trajectory_frames(seen, 10, 3)] == [0, 5, 10]
    assert cf.trajectory_frames(seen[:2], None, 3) == seen[:2]


def test_manifold_steps_lengthen_while_the_path_runs_straight():
    """On the toy the gradient's direction never changes, so each step is one base step longer than the last, up to
    ``MAX_STRIDE`` of them; a long step that would pass the change budget is taken again as one base step, and the walk
    ends within the budget. The refinement then lands past the goal by at most twice its aim.
    """
    problem = toy_problem(toy_model_set(), toy_image(0.9), sign=-1)
    result = cf.run(cf._descend(problem, None, 0.03, 40))
    base = 0.03 * float(problem.latent.norm())
    lengths = [float((b - a).norm()) / base for a, b in zip(result.path, result.path[1:], strict=False)]
    assert lengths[: cf.MAX_STRIDE] == pytest.approx(list(range(1, cf.MAX_STRIDE + 1)), rel=1e-4)
    assert max(lengths) <= cf.MAX_STRIDE * (1 + 1e-4)
    assert not problem.at_goal(result.answer.logits), "the toy's goal lies beyond the change budget"
    assert lengths[-1] == pytest.approx(1, rel=1e-4), "the last step before the budget is a base step"
    assert float((result.answer.image - problem.x).abs().mean()) <= cf.MAX_MEAN_CHANGE
    problem = toy_problem(toy_model_set(), toy_image(PRESENT), sign=-1)
    refined = cf.run(cf.manifold_counterfactual(problem, quadrant_saliency(), None))
    assert refined.crossed and 0 <= -(float(refined.logits[0]) - problem.goal) <= 2 * cf.OVERSHOOT + 1e-6


def test_steering_companions_pull_the_change_toward_what_they_read():
    """A companion whose first finding reads the bottom-right quadrant: steered with it, the descent darkens that
    quadrant too (both pull equally at the start); without it, only the classifier's quadrant changes. The
    explained classifier alone decides when the goal is reached.
    """
    companion = QuadrantClassifier(SIZE)
    companion.features.masks = companion.features.masks.flip(-2, -1)
    elsewhere_mask = quadrant_mask().flip(0, 1)
    changes = {}
    for steered in (False, True):
        models = toy_model_set()
        if steered:
            models.companions = [CompanionModel("companion-toy", companion)]
        problem = toy_problem(models, toy_image(0.55), sign=-1)
        descent = cf.run(cf._descend(problem, None, 0.03, 40))
        assert problem.at_goal(descent.answer.logits)
        changes[steered] = (descent.answer.image - problem.x)[0, 0]
    assert float(changes[False][elsewhere_mask].abs().max()) < cf.DEADBAND
    assert float(changes[True][elsewhere_mask].mean()) < -cf.DEADBAND


def test_a_companion_that_blocks_the_crossing_gives_way_to_the_classifier_alone():
    """A companion that reads the classifier's quadrant the other way round pulls exactly against it, so steered
    together nothing moves; the search then runs steered by the classifier alone, crosses, and says so.
    """
    against = QuadrantClassifier(SIZE)
    with torch.no_grad():
        against.head.weight.neg_()
        against.head.bias.neg_()
    models = toy_model_set()
    models.companions = [CompanionModel("companion-against", against)]
    problem = toy_problem(models, toy_image(PRESENT), sign=-1)
    result = cf.run(cf.manifold_counterfactual(problem, quadrant_saliency(), None))
    assert result.crossed and result.details["steering_companions"] == []
    steered = toy_model_set()
    steered.companions = [CompanionModel("companion-toy", QuadrantClassifier(SIZE))]
    problem = toy_problem(steered, toy_image(PRESENT), sign=-1)
    result = cf.run(cf.manifold_counterfactual(problem, quadrant_saliency(), None))
    assert result.crossed and result.details["steering_companions"] == ["companion-toy"]
