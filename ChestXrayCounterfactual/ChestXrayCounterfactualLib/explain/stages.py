"""The stages of an explanation, each a function of what the stages before it returned, for a batch of images at
once: model space, the plan (which finding, which way, how far), the reconstruction, the counterfactual as
delivered on each input's grid, the independent auditors' view of it, and the animation's frames.

Every stage shares its autoencoder and classifier passes among the images of the batch while each image keeps its
own finding, direction, threshold search, stopping rule and refinement. :class:`.pipeline.Explainer` runs them in
order and times them (:class:`Stopwatch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import methods
from ..errors import CancelledError, ExplainerError, NoFindingError
from ..inputs.radiograph import Radiograph
from ..modelset import ModelSet
from ..options import ExplainOptions
from . import counterfactual as cf
from .explanation import pixel_difference
from .gate import OodReference, OodScore, ood_score
from .geometry import ModelSpaceMap
from .precision import autocast

#: An auditor "moved" when its probability changed the intended way by more than this.
MOVED = 0.01
#: ``progress(stage, fraction)`` is called as each stage starts; returning False cancels the run.
ProgressCallback = Callable[[str, float], bool]
STAGES = ("model_space", "classify", "saliency", "counterfactual", "original_grid", "audit", "frames")


class Stopwatch:
    """Seconds spent in each stage (a stage entered again adds up), and the caller's progress callback told."""

    def __init__(self, progress: ProgressCallback | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.progress is not None and self.progress(name, STAGES.index(name) / len(STAGES)) is False:
            raise CancelledError("the explanation was cancelled")
        start = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


@dataclass(frozen=True)
class Batch:
    """The radiographs to explain in model space: ``x`` (B, 1, S, S), ``valid`` (B, S, S) 1 on the image and 0 on
    the padding, each one's map to its own grid, and the classifier's logits on them (B, K).
    """

    radiographs: Sequence[Radiograph]
    x: torch.Tensor
    valid: torch.Tensor
    geometries: list[ModelSpaceMap]
    logits: torch.Tensor


@dataclass(frozen=True)
class Plan:
    """What one image's explanation aims for, fixed before the counterfactual is searched: image ``index`` of the
    batch, finding ``target`` (its index) across ``threshold``, ``direction`` "remove" or "add", the ``strength``
    used, the probability the "typical" strength aims for (None for "threshold"), and why that strength (a sentence).
    """

    index: int
    target: int
    threshold: float
    direction: str
    typical: float | None
    strength: str
    strength_reason: str


@dataclass(frozen=True)
class Reconstruction:
    """The autoencoder's view of the planned images, in plan order: latents, decoded images, the classifier's
    probabilities on them, and each input's out-of-distribution score (None without a reference).
    """

    latent: torch.Tensor
    images: torch.Tensor
    probabilities: list[dict[str, float]]
    ood: list[OodScore | None]


@dataclass(frozen=True)
class Delivered:
    """One counterfactual as delivered: the method's ``result`` at ``margin``, its model-space ``change``, the
    signed ``difference`` and the ``counterfactual`` on the input's grid (pixel units), that image back in model
    space (``shown``, (1, 1, S, S)) and the classifier's logits on it (the reported probabilities are theirs).
    """

    result: cf.Counterfactual
    margin: float
    change: np.ndarray
    difference: np.ndarray
    counterfactual: np.ndarray
    shown: torch.Tensor
    logits: torch.Tensor


def probabilities(models: ModelSet, logits: torch.Tensor) -> dict[str, float]:
    """The probability of each finding of the model set from its logit."""
    p = torch.sigmoid(logits)
    return {f: float(p[i]) for i, f in enumerate(models.findings)}


def model_space(models: ModelSet, radiographs: Sequence[Radiograph]) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(x, valid, geometries) of a batch: each radiograph's display image padded and resized into model space, on
    the model set's device.
    """
    geometries = [ModelSpaceMap(*r.shape, size=models.size) for r in radiographs]
    x = torch.cat([geometry.to_model(r.display()) for r, geometry in zip(radiographs, geometries, strict=True)])
    valid = torch.stack([geometry.valid_mask().float() for geometry in geometries])
    return x.to(models.device), valid.to(models.device), geometries


def choose_finding(models: ModelSet, p: dict[str, float]) -> str:
    """The most probable finding above its threshold; :class:`NoFindingError` if there is none."""
    above = [f for f, value in p.items() if value >= models.thresholds[f]]
    if not above:
        summary = ", ".join(f"{f} {value:.2f} < {models.thresholds[f]:.2f}" for f, value in p.items())
        raise NoFindingError(
            f"no finding is above its decision threshold ({summary}); name one with --finding to explain it anyway",
            p,
        )
    return max(above, key=lambda f: p[f])


def nearest_absent_finding(models: ModelSet, p: dict[str, float]) -> str:
    """The finding below its threshold that is nearest to it (in logits): the one to add when none is named;
    :class:`NoFindingError` if every finding is above its threshold.
    """
    below = [f for f, value in p.items() if value < models.thresholds[f]]
    if not below:
        raise NoFindingError("every finding is above its decision threshold; name one with --finding to add it", p)
    return max(below, key=lambda f: cf.logit(p[f]) - cf.logit(models.thresholds[f]))


def plan(models: ModelSet, index: int, p: dict[str, float], options: ExplainOptions) -> Plan:
    """Image ``index``'s plan from the classifier's probabilities ``p``: the finding asked for (else, to add, the absent
    finding nearest its threshold; otherwise the most probable above its threshold), removed if present and added if
    absent unless the options say which.
    """
    named = options.finding
    if named is None:
        named = nearest_absent_finding(models, p) if options.direction == "add" else choose_finding(models, p)
    target = models.index(named)
    finding = models.findings[target]
    threshold = models.thresholds[finding]
    direction = options.direction or ("remove" if p[finding] >= threshold else "add")
    strength, typical, reason = how_far(models, finding, direction, options.strength)
    return Plan(index, target, threshold, direction, typical, strength, reason)


def how_far(models: ModelSet, finding: str, direction: str, asked: str | None) -> tuple[str, float | None, str]:
    """The strength a counterfactual of ``finding`` goes to (``asked``, else the default), the probability it aims
    for (None: just across the threshold) and a sentence saying why.
    """
    threshold = models.thresholds[finding]
    side = {"remove": "absent", "add": "present"}[direction]
    typical = models.typical.get(side, {}).get(finding)
    just_across = f"just across the decision threshold ({threshold:.2f}), the smallest change that flips the decision"
    chosen, prefix = asked or methods.DEFAULT_STRENGTH, "asked for" if asked else "the default"
    if chosen == "threshold":
        return "threshold", None, f"{prefix}: {just_across}"
    if typical is None:
        if asked:
            raise ExplainerError(
                f"model set {models.name} has no typical probability for {finding}; use strength threshold",
            )
        return "threshold", None, f"model set {models.name} stores no typical probabilities, so {just_across}"
    images = f"validation images {'without' if side == 'absent' else 'with'} {finding}"
    why = "" if asked else "; a change just across the threshold convinces few independent models"
    return "typical", typical, f"{prefix}: to {typical:.2f}, the median probability of {images}{why}"


def reconstruct(
    models: ModelSet, clock: Stopwatch, batch: Batch, plans: list[Plan], reference: OodReference | None,
) -> Reconstruction:
    """Encode and decode every planned image; score how usual each input is against ``reference``."""
    rows = [p.index for p in plans]
    with clock.stage("counterfactual"):
        latent = models.autoencoder.encode(batch.x[rows])
        images = models.autoencoder.decode(latent)
    logits = models.classifier(images)
    ood = [
        ood_score(batch.x[i : i + 1], images[k : k + 1], batch.valid[i], reference) if reference else None
        for k, i in enumerate(rows)
    ]
    return Reconstruction(latent, images, [probabilities(models, row) for row in logits], ood)


def counterfactuals(
    models: ModelSet,
    clock: Stopwatch,
    batch: Batch,
    plans: list[Plan],
    saliency: torch.Tensor,
    reconstruction: Reconstruction,
    options: ExplainOptions,
    precision: torch.dtype | None = None,
) -> list[Delivered]:
    """Each planned image's counterfactual, as delivered on its own grid, its search's network passes autocast to
    ``precision`` (None: float32). Where the delivered image falls back across the threshold although the method's
    crossed it, the search is run again with a wider margin (``cf.MARGINS``), for those images only.
    """
    delivered: list[Delivered | None] = [None] * len(plans)
    open_plans = list(range(len(plans)))
    with clock.stage("counterfactual"):
        start = _search_start(models, reconstruction, precision)
    for margin in cf.MARGINS:
        with clock.stage("counterfactual"):
            problems = [
                _problem(models, batch, plans[k], reconstruction.latent[k : k + 1], start[k : k + 1], margin, precision)
                for k in open_plans
            ]
            courses = [cf.COUNTERFACTUALS[options.method](p, saliency[k], options.frames)
                       for p, k in zip(problems, open_plans, strict=True)]
            results = cf.solve(courses)
        with clock.stage("original_grid"):
            attempt = _deliver(models, batch, [plans[k] for k in open_plans], results, margin)
        for k, outcome in zip(open_plans, attempt, strict=True):
            delivered[k] = outcome
        open_plans = [
            k for k, problem, outcome in zip(open_plans, problems, attempt, strict=True)
            if outcome.result.crossed and not problem.crossed(outcome.logits)
        ]
        if not open_plans:
            break
    return [outcome for outcome in delivered if outcome is not None]


def _search_start(models: ModelSet, reconstruction: Reconstruction, precision: torch.dtype | None) -> torch.Tensor:
    """The decoded latents the searches measure their change from, decoded as their own passes decode: at float32
    the reconstruction itself; at a reduced precision decoded again at it, so that an unchanged latent is no change.
    """
    if precision is None:
        return reconstruction.images
    with autocast(models.device, precision):
        return models.autoencoder.decode(reconstruction.latent).float()


def _problem(
    models: ModelSet,
    batch: Batch,
    plan: Plan,
    latent: torch.Tensor,
    start: torch.Tensor,
    margin: float,
    precision: torch.dtype | None,
) -> cf.LatentProblem:
    """The latent search of one planned image (image ``plan.index`` of the batch) from ``latent`` (1, C, h, w),
    decoded as ``start`` (1, 1, S, S), at ``margin`` and ``precision``.
    """
    i = plan.index
    return cf.LatentProblem(
        models,
        batch.x[i : i + 1],
        batch.valid[i],
        latent,
        start,
        batch.logits[i],
        plan.target,
        plan.threshold,
        -1 if plan.direction == "remove" else 1,
        margin=margin,
        typical=plan.typical,
        precision=precision,
    )


def _deliver(
    models: ModelSet, batch: Batch, plans: list[Plan], results: list[cf.Counterfactual], margin: float,
) -> list[Delivered]:
    """Each result on its input's grid as original + visible change, within the input's own pixel range
    (:func:`.explanation.pixel_difference`), and the classifier on exactly that image (re-mapped to model space), in
    one pass.
    """
    grids = []
    for plan, result in zip(plans, results, strict=True):
        radiograph, geometry = batch.radiographs[plan.index], batch.geometries[plan.index]
        change = (result.image - batch.x[plan.index : plan.index + 1])[0, 0].cpu().numpy()
        difference = pixel_difference(radiograph, geometry, change)
        counterfactual = (radiograph.pixels + difference).astype(np.float32)
        shown = geometry.to_model(replace(radiograph, pixels=counterfactual).display()).to(models.device)
        grids.append((change, difference, counterfactual, shown))
    verified = models.classifier(torch.cat([shown for *_, shown in grids]))
    return [
        Delivered(result, margin, change, difference, counterfactual, shown, logits)
        for result, (change, difference, counterfactual, shown), logits in zip(results, grids, verified, strict=True)
    ]


def saliency_on_grid(batch: Batch, plans: list[Plan], saliency: torch.Tensor) -> list[np.ndarray]:
    """Each planned image's saliency map on its own grid, in [0, 1]."""
    return [
        batch.geometries[plan.index].to_original(sal.cpu().numpy()).clip(0, 1).astype(np.float32)
        for plan, sal in zip(plans, saliency, strict=True)
    ]


def audit_entry(before: float, after: float, threshold: float, direction: str) -> dict:
    """One auditor's verdict on a counterfactual from its probabilities of the finding on the input (``before``)
    and on the counterfactual (``after``): whether it ``saw`` what the explained model saw (on the same side of its
    own threshold), whether p ``moved`` the intended way (by more than ``MOVED``), and whether it ``agrees``: it saw
    the input as the model did and the counterfactual across its threshold, i.e. it changed its mind too.
    """
    wanted = -1 if direction == "remove" else 1
    saw = wanted * (before - threshold) <= 0
    return {
        "p_original": before,
        "p_counterfactual": after,
        "threshold": float(threshold),
        "saw": saw,
        "moved": wanted * (after - before) > MOVED,
        "agrees": saw and wanted * (after - threshold) > 0,
    }


def audit(models: ModelSet, batch: Batch, plans: list[Plan], delivered: list[Delivered]) -> list[dict[str, dict]]:
    """Per planned image, every auditor's :func:`audit_entry` for its finding on its input and on its delivered
    counterfactual, in one pass per auditor.
    """
    audits: list[dict[str, dict]] = [{} for _ in plans]
    rows = [p.index for p in plans]
    for auditor in models.auditors:
        p = torch.sigmoid(auditor.network(torch.cat([batch.x[rows], *(d.shown for d in delivered)])))
        for k, plan in enumerate(plans):
            finding = models.findings[plan.target]
            column = auditor.network.findings.index(finding)
            before, after = float(p[k, column]), float(p[len(plans) + k, column])
            audits[k][auditor.name] = audit_entry(before, after, auditor.thresholds[finding], plan.direction)
    return audits


def frames(
    models: ModelSet, batch: Batch, plan: Plan, result: cf.Counterfactual,
) -> tuple[list[np.ndarray], list[float]]:
    """The animation of one counterfactual: the model-space change of each frame from the input, inside the
    region change is allowed in, and the finding's probability on each frame. Frames the search already judged
    (``result.frames``: the manifold method's own steps) are taken as they are; otherwise every latent on the
    result's path is decoded and classified, in one batch.
    """
    i = plan.index
    if result.frames is not None:
        changes = torch.cat([image for image, _ in result.frames])[:, 0] - batch.x[i, 0]
        p = torch.sigmoid(torch.stack([logits[plan.target] for _, logits in result.frames]))
    else:
        decoded = models.autoencoder.decode(torch.cat(result.path))
        weight = result.weight if result.weight is not None else batch.valid[i]
        changes = (decoded - decoded[:1])[:, 0] * weight
        p = torch.sigmoid(models.classifier((batch.x[i, 0] + changes).clamp(0, 1)[:, None])[:, plan.target])
    return [change.cpu().numpy() for change in changes], [float(v) for v in p]
