"""Counterfactuals in the autoencoder's latent space: change the image just enough for the
classifier to cross its decision threshold for one finding.

* ``latent_shift`` (Cohen et al., "Gifsplanation via Latent Shift", arXiv:2102.09475): one gradient
  of the finding's logit w.r.t. the latent; move along it. Improved: a secant search stops at the
  calibrated threshold instead of a fixed lambda schedule, in either direction (remove or add).
* ``local`` (saliency-guided local counterfactuals, the seed paper, improved): the change is
  confined to the classifier's saliency region, a latent shift inside it finds the crossing, and a
  bounded Adam refinement holds the other findings and shrinks the change (``local_counterfactual``).
* ``directions`` (EigenFind idea, "CheXplaining in Style", arXiv:2207.07553): a few global latent
  directions per finding, computed once per model (``Training/ChestXrayCounterfactualTraining/directions.py``);
  move along the best.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .errors import ExplainerError
from .modelset import ModelSet
#: Logit margin past the threshold a counterfactual aims for, so it does not sit on the boundary.
MARGIN = 0.2
#: Margins tried in turn when a counterfactual that crossed in model space does not cross once put
#: back on the original grid (resampling and the grey-level deadband can take a little away).
MARGINS = (MARGIN, 0.6, 1.5)
#: Display-intensity changes below this are no change (one grey level of 256): they are dropped from
#: the delivered image, so untouched pixels keep their original values and the classifier is never
#: flipped by changes nobody could see.
DEADBAND = 1.0 / 255
#: The largest mean absolute change of the image (display range 0-1) a search may reach.
MAX_MEAN_CHANGE = 0.08


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


@dataclass
class LatentProblem:
    """One image in latent space, one finding, one direction: what every method shares.

    The classifier always judges the image the user is shown: the input plus the change the
    autoencoder makes, ``x + (D(z) - D(z0))`` on the valid (unpadded) area, never the blurred
    decoded image itself, so a counterfactual cannot flip the model with changes that the
    delivered image does not contain.
    """

    models: ModelSet
    x: torch.Tensor  # the input in model space, (1, 1, S, S)
    valid: torch.Tensor  # 1 on the image, 0 on model-space padding, (S, S)
    latent: torch.Tensor  # z0
    reconstruction: torch.Tensor  # D(z0), (1, 1, S, S)
    logits: torch.Tensor  # classifier logits on the input, (K,)
    target: int
    threshold: float
    sign: int  # -1: remove the finding (go below the threshold); +1: add it
    evaluations: int = 0
    region: torch.Tensor | None = None  # optional (S, S) weight confining the change (local method)
    margin: float = MARGIN

    @property
    def goal(self) -> float:
        """The target logit: just past the threshold, on the chosen side."""
        return logit(self.threshold) + self.sign * self.margin

    def crossed(self, logits: torch.Tensor) -> bool:
        return self.sign * (float(logits[self.target]) - logit(self.threshold)) > 0

    def delivered(self, decoded: torch.Tensor) -> torch.Tensor:
        """The image shown to the user for a decoded latent: input + visible change, in [0, 1].

        Changes below ``DEADBAND`` are dropped in the forward pass; the gradient passes straight
        through, so optimisation still sees where small changes would grow.
        """
        change = (decoded - self.reconstruction) * (self.valid if self.region is None else self.region)
        invisible = change * (change.abs() < DEADBAND)
        return (self.x + change - invisible.detach()).clamp(0, 1)

    def judge(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(delivered image, logits) for latent ``z``; differentiable."""
        self.evaluations += 1
        image = self.delivered(self.models.autoencoder.decode(z))
        return image, self.models.classifier(image)[0]

    @torch.no_grad()
    def evaluate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.judge(z)


@dataclass
class Counterfactual:
    latent: torch.Tensor
    image: torch.Tensor  # the delivered image (input + change), (1, 1, S, S)
    logits: torch.Tensor
    crossed: bool
    path: list[torch.Tensor] = field(default_factory=list)  # latents from z0 to the result, for animation
    details: dict = field(default_factory=dict)
    weight: torch.Tensor | None = None  # the (S, S) weight applied to changes, when not the valid area


def _regula_falsi(lo_a: float, lo_h: float, hi_a: float, hi_h: float) -> float:
    """Where the line through (lo_a, lo_h) and (hi_a, hi_h) crosses zero, kept inside the bracket."""
    a = lo_a + (hi_a - lo_a) * (-lo_h) / max(hi_h - lo_h, 1e-6)
    return min(max(a, lo_a + 0.1 * (hi_a - lo_a)), hi_a - 0.1 * (hi_a - lo_a))


def line_search(problem: LatentProblem, direction: torch.Tensor, max_evaluations: int = 8) -> Counterfactual:
    """Smallest step ``a`` along unit ``direction`` (in units of |z0|) whose image crosses the threshold.

    The target logit is nearly linear in ``a``: secant steps extrapolate until the threshold is
    bracketed, then regula falsi refines until the result is within half a logit of the goal.
    At most ``max_evaluations`` decoder+classifier passes; the image-change budget bounds the reach.
    """
    z0, scale = problem.latent, float(problem.latent.norm())

    def past_goal(logits: torch.Tensor) -> float:  # > 0: beyond the goal on the chosen side
        return problem.sign * (float(logits[problem.target]) - problem.goal)

    h0 = past_goal(problem.logits)
    lo_a, lo_h = 0.0, h0
    hi = None  # (a, h, z, image, logits) of the smallest crossing step found
    a = 0.05
    for _ in range(max_evaluations):
        z = z0 + a * scale * direction
        image, logits = problem.evaluate(z)
        h = past_goal(logits)
        if problem.crossed(logits):
            if hi is None or a < hi[0]:
                hi = (a, h, z, image, logits)
            if h <= 0.5:
                break
            a = _regula_falsi(lo_a, lo_h, hi[0], hi[1])
        else:
            lo_a, lo_h = a, h
            if float((image - problem.x).abs().mean()) > MAX_MEAN_CHANGE:
                break
            if hi is not None:
                a = _regula_falsi(lo_a, lo_h, hi[0], hi[1])
            else:
                slope = (lo_h - h0) / lo_a
                a = lo_a + (-lo_h) / slope * 1.2 if slope > 1e-6 else 4 * lo_a
                a = min(max(a, 1.5 * lo_a), 4 * lo_a)
                if a > 3.0:
                    break
    if hi is None:
        z = z0 + lo_a * scale * direction
        image, logits = problem.evaluate(z) if lo_a > 0 else (problem.x, problem.logits)
        return Counterfactual(z, image, logits, False, details={"step": lo_a, "evaluations": problem.evaluations})
    a, _, z, image, logits = hi
    return Counterfactual(z, image, logits, True, details={"step": a, "evaluations": problem.evaluations})


def path_between(start: torch.Tensor, end: torch.Tensor, frames: int) -> list[torch.Tensor]:
    return [start + (end - start) * t for t in torch.linspace(0, 1, frames).tolist()]


def latent_shift(problem: LatentProblem, frames: int = 8, hold_others: bool = False) -> Counterfactual:
    """One gradient of the finding's logit w.r.t. the latent, then a line search along it.

    With ``hold_others`` the gradient is first projected orthogonal to the other findings' logit
    gradients, so to first order the step moves only the chosen finding (one more backward pass
    per finding).
    """
    z = problem.latent.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = problem.judge(z)[1]
        if hold_others:
            rows = [torch.autograd.grad(logits[i], z, retain_graph=True)[0].flatten() for i in range(len(logits))]
            gradient = rows.pop(problem.target)
            if rows:
                others = torch.stack(rows, 1)
                coefficients = torch.linalg.lstsq(others, gradient[:, None]).solution
                gradient = gradient - (others @ coefficients)[:, 0]
            gradient = gradient.view_as(z)
        else:
            logits[problem.target].backward()
            assert z.grad is not None  # backward() has just filled the gradient of this leaf
            gradient = z.grad.detach()
    norm = gradient.norm()
    if norm == 0:
        return Counterfactual(
            problem.latent,
            problem.x,
            problem.logits,
            False,
            details={"reason": "the classifier's gradient is zero on this image"},
        )
    result = line_search(problem, problem.sign * gradient / norm)
    result.path = path_between(problem.latent, result.latent, frames)
    return result


def saliency_region(saliency: torch.Tensor, valid: torch.Tensor, low: float = 0.8, high: float = 0.95) -> torch.Tensor:
    """Soft mask of the most salient part of the image: 0 below the ``low`` quantile of the saliency
    on the valid area, 1 above the ``high`` quantile, a linear ramp between (no hard edges).
    """
    values = saliency[valid > 0.5]
    lo, hi = torch.quantile(values, low), torch.quantile(values, high)
    return ((saliency - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1) * valid


def local_counterfactual(
    problem: LatentProblem,
    saliency: torch.Tensor,
    frames: int = 8,
    max_steps: int = 8,
    lr: float = 0.02,
    others_weight: float = 1.0,
    proximity_weight: float = 20.0,
) -> Counterfactual:
    """Saliency-guided local counterfactual (the seed paper's idea, with the penalty made a constraint).

    The seed paper penalises change outside the saliency mask 1e5 times more than inside; here the
    change is confined to the salient region outright (a soft mask, widened if the finding
    cannot be flipped there, and lifted as a last resort), a latent shift within it finds the threshold
    crossing in a few evaluations, and a bounded Adam refinement then holds the other findings near
    their values and shrinks the change while the threshold stays crossed.
    """
    evaluations = problem.evaluations
    for low in (0.6, 0.3, 0.0):  # widened until the finding can be flipped; 0: anywhere in the image
        region = saliency_region(saliency, problem.valid, low) if low else problem.valid
        local = replace(problem, region=region, evaluations=0)
        start = latent_shift(local, frames, hold_others=True)
        evaluations += local.evaluations
        if start.crossed:
            break
    others = torch.ones_like(problem.logits, dtype=torch.bool)
    others[problem.target] = False

    def cost(image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        held = ((logits[others] - problem.logits[others]) ** 2).mean() if others.any() else logits.sum() * 0
        return others_weight * held + proximity_weight * (image - problem.x).abs().mean()

    best, best_cost, steps = start, float(cost(start.image, start.logits)) if start.crossed else math.inf, 0
    if start.crossed:
        z = start.latent.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr)
        for steps in range(1, max_steps + 1):
            with torch.enable_grad():
                image, logits = local.judge(z)
                validity = torch.relu(problem.sign * (problem.goal - logits[problem.target]))
                current = cost(image, logits)
                loss = validity + current
            if local.crossed(logits.detach()) and float(current) < best_cost:
                best = Counterfactual(z.detach().clone(), image.detach(), logits.detach(), True)
                best_cost = float(current)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        evaluations += local.evaluations
    best.weight = local.region
    best.path = path_between(problem.latent, best.latent, frames)
    best.details = {
        **start.details,
        "optimisation_steps": steps,
        "evaluations": evaluations,
        "region_quantile": low,
        "region_area": round(float(region.mean()), 4),
    }
    return best


def along_directions(problem: LatentProblem, directions: torch.Tensor, frames: int = 8) -> Counterfactual:
    """Try the finding's stored directions in rank order; the first that crosses is the answer."""
    attempt = None
    for rank, direction in enumerate(directions):
        unit = problem.sign * direction.view_as(problem.latent) / direction.norm()
        attempt = line_search(problem, unit, max_evaluations=6)
        attempt.details["direction_rank"] = rank
        if attempt.crossed:
            break
    if attempt is None:
        return Counterfactual(
            problem.latent,
            problem.x,
            problem.logits,
            False,
            details={"reason": "no stored directions for this finding"},
        )
    attempt.path = path_between(problem.latent, attempt.latent, frames)
    attempt.details["evaluations"] = problem.evaluations
    return attempt


def _local(problem: LatentProblem, saliency: torch.Tensor, frames: int) -> Counterfactual:
    return local_counterfactual(problem, saliency, frames)


def _latent_shift(problem: LatentProblem, saliency: torch.Tensor, frames: int) -> Counterfactual:
    return latent_shift(problem, frames)


def _directions(problem: LatentProblem, saliency: torch.Tensor, frames: int) -> Counterfactual:
    finding = problem.models.findings[problem.target]
    stored = problem.models.directions.get(finding)
    if stored is None:
        raise ExplainerError(f"the model set has no latent directions for {finding}")
    return along_directions(problem, stored, frames)


#: The counterfactual methods by name (``methods.COUNTERFACTUAL_METHODS``), one signature each:
#: (problem, saliency map in model space, animation frames) -> Counterfactual.
COUNTERFACTUALS: dict[str, Callable[[LatentProblem, torch.Tensor, int], Counterfactual]] = {
    "local": _local,
    "latent-shift": _latent_shift,
    "directions": _directions,
}
