"""The explanation pipeline: radiographs -> model space -> findings -> saliency -> counterfactual -> back on each
original pixel grid -> the independent auditors' view -> the animation, with the time each stage took. The
stages are in :mod:`.stages`; the result, :class:`.explanation.Explanation`, is complete when it is made.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ExplainerError, NoFindingError, NotExplainableError
from ..inputs.radiograph import Radiograph
from ..modelset import ModelSet, load_model_set, resolve_device
from ..options import ExplainOptions
from . import stages
from .explanation import Explanation
from .gate import check_header, reference_for
from .geometry import ModelSpaceMap
from .precision import PrecisionChoice, resolve_precision
from .saliency import saliency_maps
from .stages import Batch, Delivered, Plan, ProgressCallback, Reconstruction, Stopwatch


class Explainer:
    """Findings, saliency and counterfactuals for radiographs, with one model set.

    >>> explainer = Explainer()                      # the bundled weights, verified
    >>> explanation = explainer.explain(read_radiograph("cxr.dcm"), ExplainOptions(finding="Cardiomegaly"))
    >>> Explainer(device="auto")                     # the first CUDA card torch sees, else Apple mps, else the CPU

    Every network, latent, saliency map and search runs on the model set's device; results come back as numpy
    arrays on each input's own grid, whatever the device.
    """

    def __init__(self, models: ModelSet | None = None, device: str | None = None) -> None:
        """``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``; None: where ``models`` are, the CPU for the
        bundled set) moves the model set there, in place. When this machine cannot run on it the models go to the
        CPU and :attr:`device_warning` says why in a sentence (so does the model set's, if it was loaded so).
        """
        self.models = models or load_model_set()
        self.device_warning = self.models.device_warning
        if device is not None:
            choice = resolve_device(device)
            self.models.to(choice.device)
            self.device_warning = self.models.device_warning = choice.warning
        self.ood_reference = reference_for(self.models)

    @property
    def device(self) -> torch.device:
        """Where the models run."""
        return self.models.device

    @property
    def findings(self) -> list[str]:
        return self.models.findings

    def model_input(self, radiograph: Radiograph) -> tuple[torch.Tensor, ModelSpaceMap]:
        """One radiograph in model space, (1, 1, S, S), and its map back to its own grid."""
        geometry = ModelSpaceMap(*radiograph.shape, size=self.models.size)
        return geometry.to_model(radiograph.display()).to(self.device), geometry

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> dict[str, float]:
        """Probability of every finding for one (1, 1, S, S) model-space image."""
        return stages.probabilities(self.models, self.models.classifier(x.to(self.device))[0])

    def predict(self, radiograph: Radiograph) -> dict[str, float]:
        """Probability of every finding of the model set; refuses what is not a frontal chest radiograph by its
        header (:func:`.gate.check_header`).
        """
        check_header(radiograph)
        return self.probabilities(self.model_input(radiograph)[0])

    def choose_finding(self, probabilities: dict[str, float]) -> str:
        """The most probable finding above its threshold; :class:`NoFindingError` if there is none."""
        return stages.choose_finding(self.models, probabilities)

    def explain(
        self,
        radiograph: Radiograph,
        options: ExplainOptions = ExplainOptions(),
        progress: ProgressCallback | None = None,
    ) -> Explanation:
        """Explain one finding of one radiograph, as ``options`` say (the finding, method, saliency, direction,
        strength and frames; the defaults explain the most probable finding above its threshold, removing it).
        ``progress`` is told each stage as it starts and may cancel by returning False.
        """
        (outcome,) = self.explain_batch([radiograph], options, progress)
        if isinstance(outcome, ExplainerError):
            raise outcome
        return outcome

    def explain_batch(
        self,
        radiographs: Sequence[Radiograph],
        options: ExplainOptions = ExplainOptions(),
        progress: ProgressCallback | None = None,
    ) -> list[Explanation | ExplainerError]:
        """Explain a batch of radiographs at once, as :meth:`explain` explains one: every decoder and
        classifier pass is shared by the batch, while each image keeps its own finding, direction,
        threshold search, stopping rule and refinement. An image that cannot be explained (not a frontal chest
        radiograph by its header, see :mod:`.gate`, or no finding above its threshold) gets its error in its
        place; the others go on.

        Each explanation's ``seconds`` are its share of the batch's time per stage. ``options.precision`` is the
        arithmetic of the counterfactual search (:mod:`.precision`); every reported figure is measured in float32.
        """
        if options.finding:
            self.models.index(options.finding)  # an unknown finding stops the whole batch, before any work
        if options.strength == "typical" and not self.models.typical:
            raise ExplainerError(f"model set {self.models.name} has no typical probabilities; use strength threshold")
        torch.manual_seed(0)
        clock = Stopwatch(progress)
        with clock.stage("model_space"):
            x, valid, geometries = stages.model_space(self.models, radiographs)
        with clock.stage("classify"), torch.no_grad():
            logits = self.models.classifier(x)
        batch = Batch(radiographs, x, valid, geometries, logits)
        outcomes: dict[int, Explanation | ExplainerError] = {}
        plans, notes = [], {}
        for i, row in enumerate(logits):
            try:
                notes[i] = check_header(radiographs[i])
                plans.append(stages.plan(self.models, i, stages.probabilities(self.models, row), options))
            except (NotExplainableError, NoFindingError) as error:
                outcomes[i] = error
        if plans:
            with torch.no_grad():
                explained = self._explain_plans(clock, batch, plans, notes, options)
            outcomes.update(zip((plan.index for plan in plans), explained, strict=True))
        return [outcomes[i] for i in range(len(radiographs))]

    def _explain_plans(
        self, clock: Stopwatch, batch: Batch, plans: list[Plan], notes: dict[int, list[str]], options: ExplainOptions,
    ) -> list[Explanation]:
        """Run the stages after the plan for every planned image; their explanations, in plan order."""
        models = self.models
        precision = resolve_precision(options.precision, self.device)
        rows = [plan.index for plan in plans]
        with clock.stage("saliency"):
            targets = [plan.target for plan in plans]
            saliency = saliency_maps(models.classifier, batch.x[rows], targets, options.saliency, batch.valid[rows])
        reconstruction = stages.reconstruct(models, clock, batch, plans, self.ood_reference)
        delivered = stages.counterfactuals(
            models, clock, batch, plans, saliency, reconstruction, options, precision.dtype,
        )
        with clock.stage("original_grid"):
            on_grid = stages.saliency_on_grid(batch, plans, saliency)
        with clock.stage("audit"):
            audits = stages.audit(models, batch, plans, delivered)
        with clock.stage("frames"):
            frames = [stages.frames(models, batch, plan, d.result) for plan, d in zip(plans, delivered, strict=True)]
        seconds = {stage: round(spent / len(plans), 4) for stage, spent in clock.seconds.items()}
        seconds["total"] = round(sum(seconds.values()), 4)
        return [
            _explanation(
                models, batch, options, plan, notes[plan.index], reconstruction, k,
                (saliency[k], on_grid[k], delivered[k], audits[k], frames[k]), seconds, precision,
            )
            for k, plan in enumerate(plans)
        ]


def _explanation(
    models: ModelSet,
    batch: Batch,
    options: ExplainOptions,
    plan: Plan,
    notes: list[str],
    reconstruction: Reconstruction,
    k: int,
    parts: tuple[torch.Tensor, np.ndarray, Delivered, dict[str, dict], tuple[list[np.ndarray], list[float]]],
    seconds: dict[str, float],
    precision: PrecisionChoice,
) -> Explanation:
    """Planned image ``k``'s explanation from what the stages returned for it (``parts``: its saliency in model space
    and on its grid, the delivered counterfactual, the auditors' view, the frames), its share of ``seconds`` and the
    ``precision`` its search ran at.
    """
    saliency, on_grid, delivered, audit, (frame_changes, frame_probabilities) = parts
    i, finding = plan.index, models.findings[plan.target]
    radiograph, before = batch.radiographs[i], stages.probabilities(models, batch.logits[i])
    after = stages.probabilities(models, delivered.logits)
    ood = reconstruction.ood[k]
    return Explanation(
        radiograph=radiograph,
        finding=finding,
        method=options.method,
        saliency_method=options.saliency,
        direction=plan.direction,
        strength=plan.strength,
        strength_reason=plan.strength_reason,
        device=str(models.device),
        precision=precision.name,
        threshold=plan.threshold,
        probabilities=before,
        reconstruction_probabilities=reconstruction.probabilities[k],
        counterfactual_probabilities=after,
        flipped=(before[finding] >= plan.threshold) != (after[finding] >= plan.threshold),
        saliency=on_grid,
        counterfactual=delivered.counterfactual,
        difference=delivered.difference,
        model_original=batch.x[i, 0].cpu().numpy(),
        model_reconstruction=reconstruction.images[k, 0].cpu().numpy(),
        model_change=delivered.change,
        model_saliency=saliency.cpu().numpy(),
        model_frame_changes=frame_changes,
        frame_probabilities=frame_probabilities,
        geometry=batch.geometries[i],
        model_set=models.identity(),
        audit=audit,
        out_of_distribution=ood.as_dict() if ood else None,
        warnings=[
            *radiograph.warnings,
            *notes,
            *([ood.warning] if ood and ood.warning else []),
            *([models.device_warning] if models.device_warning else []),
            *([precision.warning] if precision.warning else []),
        ],
        seconds=dict(seconds),
        details={**delivered.result.details, "margin_logit": delivered.margin,
                 "batch_size": len(reconstruction.probabilities)},
    )
