"""Counterfactuals in the autoencoder's latent space: change the image just enough for the
classifier to cross its decision threshold for one finding.

* ``latent_shift`` (Cohen et al., "Gifsplanation via Latent Shift", arXiv:2102.09475): one gradient
  of the finding's logit w.r.t. the latent; move along it. Improved: a secant search stops at the
  calibrated threshold instead of a fixed lambda schedule, in either direction (remove or add).
* ``local`` (saliency-guided local counterfactuals, the seed paper, improved): start from the
  latent-shift result and optimise the latent with Adam on a hinge loss on the chosen finding only,
  other findings held at their values, and change outside the saliency region penalised more than
  inside; stops as soon as the threshold is crossed, or once a crossed result stops getting more local.
* ``directions`` (EigenFind idea, "CheXplaining in Style", arXiv:2207.07553): a few global latent
  directions per finding, computed once per model (``training/directions.py``); move along the best.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .modelset import ModelSet

METHODS = ("latent-shift", "local", "directions")
#: Logit margin past the threshold a counterfactual aims for, so it does not sit on the boundary.
MARGIN = 0.1
#: The largest mean absolute change of the image (display range 0-1) a search may reach.
MAX_MEAN_CHANGE = 0.08


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


@dataclass
class LatentProblem:
    """One image in latent space, one finding, one direction: what every method shares."""

    models: ModelSet
    latent: torch.Tensor  # z0
    reconstruction: torch.Tensor  # D(z0), (1, 1, S, S)
    logits: torch.Tensor  # classifier logits on the reconstruction, (K,)
    target: int
    threshold: float
    sign: int  # -1: remove the finding (go below the threshold); +1: add it
    evaluations: int = 0

    @property
    def goal(self) -> float:
        """The target logit: just past the threshold, on the chosen side."""
        return logit(self.threshold) + self.sign * MARGIN

    def crossed(self, logits: torch.Tensor) -> bool:
        return self.sign * (float(logits[self.target]) - logit(self.threshold)) > 0

    @torch.no_grad()
    def evaluate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.evaluations += 1
        image = self.models.autoencoder.decode(z)
        return image, self.models.classifier(image)[0]


@dataclass
class Counterfactual:
    latent: torch.Tensor
    image: torch.Tensor
    logits: torch.Tensor
    crossed: bool
    path: list[torch.Tensor] = field(default_factory=list)  # latents from z0 to the result, for animation
    details: dict = field(default_factory=dict)


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
            a = lo_a + (hi[0] - lo_a) * (-lo_h) / max(hi[1] - lo_h, 1e-6)
            a = min(max(a, lo_a + 0.1 * (hi[0] - lo_a)), hi[0] - 0.1 * (hi[0] - lo_a))
        else:
            lo_a, lo_h = a, h
            if float((image - problem.reconstruction).abs().mean()) > MAX_MEAN_CHANGE:
                break
            if hi is not None:
                a = lo_a + (hi[0] - lo_a) * (-lo_h) / max(hi[1] - lo_h, 1e-6)
                a = min(max(a, lo_a + 0.1 * (hi[0] - lo_a)), hi[0] - 0.1 * (hi[0] - lo_a))
            else:
                slope = (lo_h - h0) / lo_a
                a = lo_a + (-lo_h) / slope * 1.2 if slope > 1e-6 else 4 * lo_a
                a = min(max(a, 1.5 * lo_a), 4 * lo_a)
                if a > 3.0:
                    break
    if hi is None:
        z = z0 + lo_a * scale * direction
        image, logits = problem.evaluate(z) if lo_a > 0 else (problem.reconstruction, problem.logits)
        return Counterfactual(z, image, logits, False, details={"step": lo_a, "evaluations": problem.evaluations})
    a, _, z, image, logits = hi
    return Counterfactual(z, image, logits, True, details={"step": a, "evaluations": problem.evaluations})


def path_between(start: torch.Tensor, end: torch.Tensor, frames: int) -> list[torch.Tensor]:
    return [start + (end - start) * t for t in torch.linspace(0, 1, frames).tolist()]


def latent_shift(problem: LatentProblem, frames: int = 8) -> Counterfactual:
    z = problem.latent.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        problem.models.classifier(problem.models.autoencoder.decode(z))[0, problem.target].backward()
    gradient = z.grad.detach()
    norm = gradient.norm()
    if norm == 0:
        return Counterfactual(problem.latent, problem.reconstruction, problem.logits, False,
                              details={"reason": "the classifier's gradient is zero on this image"})
    result = line_search(problem, problem.sign * gradient / norm)
    result.path = path_between(problem.latent, result.latent, frames)
    return result


def local_optimisation(problem: LatentProblem, saliency: torch.Tensor, start: Counterfactual, frames: int = 8,
                       max_steps: int = 30, lr: float = 0.05, outside_weight: float = 1.0,
                       inside_weight: float = 0.1, proximity_weight: float = 20.0,
                       others_weight: float = 0.5) -> Counterfactual:
    """Refine ``start`` so the change concentrates in the saliency region (soft weights ``saliency``)."""
    weights = outside_weight * (1 - saliency) + inside_weight * saliency
    others = torch.ones_like(problem.logits, dtype=torch.bool)
    others[problem.target] = False
    z = start.latent.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    started_crossed = start.crossed
    best = start if start.crossed else None
    best_outside = float(((start.image - problem.reconstruction).abs() * (1 - saliency)).mean()) if start.crossed else math.inf
    stale = 0
    steps = 0
    for steps in range(1, max_steps + 1):
        with torch.enable_grad():
            image = problem.models.autoencoder.decode(z)
            logits = problem.models.classifier(image)[0]
            problem.evaluations += 1
            change = (image - problem.reconstruction).abs()
            validity = torch.relu(problem.sign * (problem.goal - logits[problem.target]))
            held = ((logits[others] - problem.logits[others]) ** 2).mean() if others.any() else logits.sum() * 0
            loss = validity + others_weight * held + proximity_weight * (change * weights).mean()
        outside = float((change.detach() * (1 - saliency)).mean())
        if problem.crossed(logits.detach()):
            if outside < best_outside - 1e-5:
                best, best_outside, stale = Counterfactual(z.detach().clone(), image.detach(), logits.detach(), True), outside, 0
            else:
                stale += 1
            if not started_crossed or stale >= 5:
                break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if best is None:
        best = Counterfactual(z.detach().clone(), image.detach(), logits.detach(), False)
    best.path = start.path[:-1] + path_between(start.latent, best.latent, max(2, frames // 2)) if start.path else \
        path_between(problem.latent, best.latent, frames)
    best.details = {**start.details, "optimisation_steps": steps, "evaluations": problem.evaluations,
                    "started_from": "latent-shift (crossed)" if started_crossed else "latent-shift (not crossed)"}
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
        return Counterfactual(problem.latent, problem.reconstruction, problem.logits, False,
                              details={"reason": "no stored directions for this finding"})
    attempt.path = path_between(problem.latent, attempt.latent, frames)
    attempt.details["evaluations"] = problem.evaluations
    return attempt
