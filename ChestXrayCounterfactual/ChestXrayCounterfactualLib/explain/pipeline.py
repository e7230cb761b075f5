"""The explanation pipeline: radiograph -> model space -> findings -> saliency -> counterfactual ->
back on the original pixel grid, with the time each stage took.

On the original grid the counterfactual is the original plus the upsampled change the
autoencoder made (decoded counterfactual minus decoded reconstruction), so the autoencoder's
blur never reaches the result; changes smaller than one grey level of an 8-bit display
(``DEADBAND``) are dropped, so untouched regions keep every original pixel exactly.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import counterfactual as cf
from .. import methods
from .counterfactual import DEADBAND
from ..errors import CancelledError, ExplainerError, NoFindingError, NotExplainableError
from .gate import OodScore, check_header, ood_score, reference_for
from .geometry import ModelSpaceMap
from ..modelset import ModelSet, load_model_set
from ..inputs.reader import Radiograph
from .records import INTENDED_USE, outcome_line
from .saliency import saliency_maps


def visible_change_on_grid(geometry: ModelSpaceMap, change: np.ndarray | torch.Tensor) -> np.ndarray:
    """A model-space change of display intensity on the original grid, changes below ``DEADBAND`` dropped."""
    on_grid = geometry.to_original(change)
    on_grid[np.abs(on_grid) < DEADBAND] = 0.0
    return on_grid


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


#: An auditor "moved" when its probability changed the intended way by more than this.
MOVED = 0.01
#: ``progress(stage, fraction)`` is called as each stage starts; returning False cancels the run.
ProgressCallback = Callable[[str, float], bool]
STAGES = ("model_space", "classify", "saliency", "counterfactual", "original_grid", "audit", "frames")


@dataclass
class Explanation:
    """Everything one explanation produced, complete: writers (files, MRML, DICOM) only read it.

    Arrays named ``model_*`` are (S, S) model space, the others lie on the input's own pixel grid
    (``radiograph.shape``). The animation from the input to the counterfactual is held as model-space
    changes, one per frame; :meth:`model_frames` and :meth:`frame_on_grid` give it on either grid.
    """

    radiograph: Radiograph
    finding: str
    method: str
    saliency_method: str
    direction: str
    strength: str
    threshold: float
    probabilities: dict[str, float]
    reconstruction_probabilities: dict[str, float]
    counterfactual_probabilities: dict[str, float]
    flipped: bool
    saliency: np.ndarray
    counterfactual: np.ndarray
    difference: np.ndarray
    model_original: np.ndarray
    model_reconstruction: np.ndarray
    model_counterfactual: np.ndarray  # input + change: the image the classifier judged
    model_change: np.ndarray
    model_change_weight: np.ndarray  # where change is allowed: the valid area, or the local method's region
    model_saliency: np.ndarray
    model_frame_changes: list[np.ndarray]  # per frame, the change from the input (the first is zero)
    frame_probabilities: list[float]  # the finding's probability on each model-space frame
    geometry: ModelSpaceMap
    model_set: dict  # the model set's identity: name, sha256 of every file, thresholds
    #: Per independent auditor: ``audit_entry`` (p before and after, its threshold, saw, moved, agrees).
    audit: dict[str, dict]
    #: How unlike the training radiographs the input is (``gate.OodScore.as_dict``); None without a reference.
    out_of_distribution: dict | None
    #: Everything a user should know about the input: the reader's notes, then the gate's.
    warnings: list[str]
    seconds: dict[str, float]  # per stage, and "total": their sum (see record_time)
    details: dict = field(default_factory=dict)

    @property
    def p_original(self) -> float:
        return self.probabilities[self.finding]

    @property
    def p_counterfactual(self) -> float:
        return self.counterfactual_probabilities[self.finding]

    @property
    def verdict(self) -> str:
        """Whether the independent auditors agree the finding changed: "2 of 2 independent models agree", "only
        the explained model changed its mind", or "" when the model set has no auditors.
        """
        if not self.audit:
            return ""
        agree = sum(entry["agrees"] for entry in self.audit.values())
        if agree == 0 and self.flipped:
            return f"only the explained model changed its mind: 0 of {len(self.audit)} independent models agree"
        return f"{agree} of {len(self.audit)} independent models agree"

    def record_time(self, stage: str, seconds: float) -> None:
        """Add a stage done outside the engine (reading the file, writing outputs) and keep the total."""
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + seconds, 4)
        self.seconds["total"] = round(sum(v for k, v in self.seconds.items() if k != "total"), 4)

    def model_frames(self) -> list[tuple[np.ndarray, float]]:
        """The animation in model space: (image, the finding's probability) per frame."""
        return [
            (np.clip(self.model_original + change, 0, 1), p)
            for change, p in zip(self.model_frame_changes, self.frame_probabilities, strict=True)
        ]

    def frame_on_grid(self, index: int) -> np.ndarray:
        """Frame ``index`` of the animation on the original grid, as original + change (pixel units)."""
        change = visible_change_on_grid(self.geometry, self.model_frame_changes[index])
        return (self.radiograph.pixels + self.radiograph.display_change_to_pixels(change)).astype(np.float32)

    def record(self, anonymize: bool = False) -> dict:
        """What an output records of this explanation (JSON-ready); ``anonymize`` keeps no DICOM UID and
        only the input's file name.
        """
        r = self.radiograph
        metadata = {k: v for k, v in r.metadata.items() if not (anonymize and k.endswith("_uid"))}
        return {
            "input": Path(r.source).name if anonymize else r.source,
            "finding": self.finding,
            "method": self.method,
            "saliency": self.saliency_method,
            "direction": self.direction,
            "strength": self.strength,
            "p_original": self.p_original,
            "p_reconstruction": self.reconstruction_probabilities[self.finding],
            "p_counterfactual": self.p_counterfactual,
            "threshold": self.threshold,
            "flipped": self.flipped,
            "auditors": self.audit,
            "verdict": self.verdict,
            "probabilities_original": self.probabilities,
            "probabilities_counterfactual": self.counterfactual_probabilities,
            "seconds": self.seconds,
            "geometry": {
                "rows": r.shape[0],
                "columns": r.shape[1],
                "spacing_mm": list(r.spacing),
                "origin_lps": list(r.origin),
                "direction": np.asarray(r.direction).tolist(),
                "window": list(r.window),
            },
            "details": self.details,
            "out_of_distribution": self.out_of_distribution,
            "warnings": self.warnings,
            "source_metadata": metadata,
            "model_set": self.model_set,
            "intended_use": INTENDED_USE,
        }

    def summary(self) -> str:
        """One line: "Cardiomegaly p 0.880 -> 0.410 (threshold 0.460, flipped) in 2.3 s"."""
        return outcome_line(self.record())


@dataclass
class _Task:
    """One image's explanation as :meth:`Explainer.explain_batch` builds it, stage by stage."""

    target: int
    threshold: float
    direction: str
    typical: float | None  # the probability the "typical" strength aims for
    saliency: torch.Tensor = field(init=False)
    saliency_on_grid: np.ndarray = field(init=False)
    reconstruction: np.ndarray = field(init=False)
    reconstruction_probabilities: dict[str, float] = field(init=False)
    problem: cf.LatentProblem = field(init=False)
    margin: float = field(init=False)
    result: cf.Counterfactual = field(init=False)
    change: np.ndarray = field(init=False)
    difference: np.ndarray = field(init=False)
    counterfactual: np.ndarray = field(init=False)
    counterfactual_probabilities: dict[str, float] = field(init=False)
    frame_changes: list[np.ndarray] = field(init=False)
    frame_probabilities: list[float] = field(init=False)
    ood: OodScore | None = field(init=False)
    shown: torch.Tensor = field(init=False)  # the delivered counterfactual in model space, (1, 1, S, S)
    audit: dict[str, dict] = field(init=False)


class _Stopwatch:
    def __init__(self, progress: ProgressCallback | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress

    @contextmanager
    def stage(self, name: str):
        if self.progress is not None and self.progress(name, STAGES.index(name) / len(STAGES)) is False:
            raise CancelledError("the explanation was cancelled")
        start = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


class Explainer:
    """Findings, saliency and counterfactuals for radiographs, with one model set.

    >>> explainer = Explainer()                      # the bundled weights, verified
    >>> explanation = explainer.explain(read_radiograph("cxr.dcm"), finding="Cardiomegaly")
    """

    def __init__(self, models: ModelSet | None = None) -> None:
        self.models = models or load_model_set()
        self.ood_reference = reference_for(self.models)

    @property
    def findings(self) -> list[str]:
        return self.models.findings

    def model_input(self, radiograph: Radiograph) -> tuple[torch.Tensor, ModelSpaceMap]:
        geometry = ModelSpaceMap(*radiograph.shape, size=self.models.size)
        return geometry.to_model(radiograph.display()), geometry

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> dict[str, float]:
        """Probability of every finding for one (1, 1, S, S) model-space image."""
        return self._named(self.models.classifier(x)[0])

    def predict(self, radiograph: Radiograph) -> dict[str, float]:
        """Probability of every finding of the model set; refuses what is not a frontal chest radiograph by its
        header (:func:`.gate.check_header`).
        """
        check_header(radiograph)
        return self.probabilities(self.model_input(radiograph)[0])

    def choose_finding(self, probabilities: dict[str, float]) -> str:
        above = [f for f, p in probabilities.items() if p >= self.models.thresholds[f]]
        if not above:
            summary = ", ".join(f"{f} {p:.2f} < {self.models.thresholds[f]:.2f}" for f, p in probabilities.items())
            raise NoFindingError(
                f"no finding is above its decision threshold ({summary}); name one with --finding to explain it anyway",
            )
        return max(above, key=lambda f: probabilities[f])

    def explain(
        self,
        radiograph: Radiograph,
        finding: str | None = None,
        method: str = methods.DEFAULT_COUNTERFACTUAL,
        saliency: str = methods.DEFAULT_SALIENCY,
        direction: str | None = None,
        frames: int = 8,
        progress: ProgressCallback | None = None,
        strength: str = methods.DEFAULT_STRENGTH,
    ) -> Explanation:
        """Explain one finding of one radiograph.

        ``direction`` is "remove" (push the probability below the threshold) or "add"; by default
        the finding is removed when the model calls it present and added otherwise. ``strength`` is how far
        (``methods.STRENGTHS``). ``progress`` is told each stage as it starts and may cancel by returning False.
        """
        (outcome,) = self.explain_batch([radiograph], finding, method, saliency, direction, frames, progress, strength)
        if isinstance(outcome, ExplainerError):
            raise outcome
        return outcome

    def explain_batch(
        self,
        radiographs: Sequence[Radiograph],
        finding: str | None = None,
        method: str = methods.DEFAULT_COUNTERFACTUAL,
        saliency: str = methods.DEFAULT_SALIENCY,
        direction: str | None = None,
        frames: int = 8,
        progress: ProgressCallback | None = None,
        strength: str = methods.DEFAULT_STRENGTH,
    ) -> list[Explanation | ExplainerError]:
        """Explain a batch of radiographs at once, as :meth:`explain` explains one: every decoder and
        classifier pass is shared by the batch, while each image keeps its own finding, direction,
        threshold search, stopping rule and refinement. An image that cannot be explained (not a frontal chest
        radiograph by its header, see :mod:`.gate`, or no finding above its threshold) gets its error in its
        place; the others go on.

        Each explanation's ``seconds`` are its share of the batch's time per stage.
        """
        methods.check(method, saliency, direction, strength)
        if strength == "typical" and not self.models.typical:
            raise ExplainerError(f"model set {self.models.name} has no typical probabilities; use strength threshold")
        torch.manual_seed(0)
        clock = _Stopwatch(progress)
        models = self.models
        target = models.index(finding) if finding else None
        with clock.stage("model_space"):
            inputs = [self.model_input(r) for r in radiographs]
            geometries = [geometry for _, geometry in inputs]
            x = torch.cat([image for image, _ in inputs])
            valid = torch.stack([geometry.valid_mask().float() for geometry in geometries])
        with clock.stage("classify"), torch.no_grad():
            x_logits = models.classifier(x)
        probabilities = [self._named(logits) for logits in x_logits]
        outcomes: dict[int, Explanation | ExplainerError] = {}
        tasks: dict[int, _Task] = {}
        notes: dict[int, list[str]] = {}
        for i, p in enumerate(probabilities):
            try:
                notes[i] = check_header(radiographs[i])
                index = models.index(self.choose_finding(p)) if target is None else target
            except (NotExplainableError, NoFindingError) as error:
                outcomes[i] = error
                continue
            threshold = models.thresholds[self.findings[index]]
            present = p[self.findings[index]] >= threshold
            side = direction or ("remove" if present else "add")
            typical = self.models.typical[{"remove": "absent", "add": "present"}[side]] if strength == "typical" else {}
            tasks[i] = _Task(index, threshold, side, typical.get(self.findings[index]))
        order = list(tasks)
        if order:
            self._counterfactuals(clock, radiographs, x, x_logits, valid, geometries, tasks, method, saliency, frames)
        share = {stage: round(seconds / max(len(order), 1), 4) for stage, seconds in clock.seconds.items()}
        share["total"] = round(sum(share.values()), 4)
        for i in order:
            task = tasks[i]
            finding_name = self.findings[task.target]
            unusual = [task.ood.warning] if task.ood and task.ood.warning else []
            outcomes[i] = Explanation(
                radiograph=radiographs[i],
                finding=finding_name,
                method=method,
                saliency_method=saliency,
                direction=task.direction,
                strength=strength,
                threshold=task.threshold,
                probabilities=probabilities[i],
                reconstruction_probabilities=task.reconstruction_probabilities,
                counterfactual_probabilities=task.counterfactual_probabilities,
                flipped=(probabilities[i][finding_name] >= task.threshold)
                != (task.counterfactual_probabilities[finding_name] >= task.threshold),
                saliency=task.saliency_on_grid,
                counterfactual=task.counterfactual,
                difference=task.difference,
                model_original=x[i, 0].numpy(),
                model_reconstruction=task.reconstruction,
                model_counterfactual=task.result.image[0, 0].numpy(),
                model_change=task.change,
                model_change_weight=(task.result.weight if task.result.weight is not None else valid[i]).numpy(),
                model_saliency=task.saliency.numpy(),
                model_frame_changes=task.frame_changes,
                frame_probabilities=task.frame_probabilities,
                geometry=geometries[i],
                model_set=models.identity(),
                audit=task.audit,
                out_of_distribution=task.ood.as_dict() if task.ood else None,
                warnings=[*radiographs[i].warnings, *notes[i], *unusual],
                seconds=dict(share),
                details={**task.result.details, "margin_logit": task.margin, "batch_size": len(order)},
            )
        return [outcomes[i] for i in range(len(radiographs))]

    def _named(self, logits: torch.Tensor) -> dict[str, float]:
        """The probability of each finding from its logit."""
        p = torch.sigmoid(logits)
        return {f: float(p[i]) for i, f in enumerate(self.findings)}

    @torch.no_grad()
    def _counterfactuals(
        self,
        clock: _Stopwatch,
        radiographs: Sequence[Radiograph],
        x: torch.Tensor,
        x_logits: torch.Tensor,
        valid: torch.Tensor,
        geometries: list[ModelSpaceMap],
        tasks: dict[int, _Task],
        method: str,
        saliency: str,
        frames: int,
    ) -> None:
        """Fill every task: saliency, the counterfactual (retried with a wider margin where the image as
        delivered on the original grid falls back across the threshold), frames and probabilities.
        """
        models = self.models
        order = list(tasks)
        with clock.stage("saliency"):
            maps = saliency_maps(models.classifier, x[order], [tasks[i].target for i in order], saliency, valid[order])
        for i, sal in zip(order, maps, strict=True):
            tasks[i].saliency = sal
        with clock.stage("counterfactual"):
            z0 = models.autoencoder.encode(x[order])
            reconstruction = models.autoencoder.decode(z0)
        reconstruction_logits = models.classifier(reconstruction)
        for k, i in enumerate(order):
            tasks[i].ood = self._ood(x[i : i + 1], reconstruction[k : k + 1], valid[i])
            tasks[i].reconstruction = reconstruction[k, 0].numpy()
            tasks[i].reconstruction_probabilities = self._named(reconstruction_logits[k])
        open_tasks = list(range(len(order)))
        for margin in cf.MARGINS:
            with clock.stage("counterfactual"):
                courses = []
                for k in open_tasks:
                    i, task = order[k], tasks[order[k]]
                    problem = cf.LatentProblem(
                        models,
                        x[i : i + 1],
                        valid[i],
                        z0[k : k + 1],
                        reconstruction[k : k + 1],
                        x_logits[i],
                        task.target,
                        task.threshold,
                        -1 if task.direction == "remove" else 1,
                        margin=margin,
                        typical=task.typical,
                    )
                    task.problem, task.margin = problem, margin
                    courses.append(cf.COUNTERFACTUALS[method](problem, task.saliency, frames))
                for k, result in zip(open_tasks, cf.solve(courses), strict=True):
                    tasks[order[k]].result = result
            with clock.stage("original_grid"):
                shown = []
                for k in open_tasks:
                    i, task = order[k], tasks[order[k]]
                    radiograph, geometry = radiographs[i], geometries[i]
                    task.change = (task.result.image - x[i : i + 1])[0, 0].numpy()
                    task.difference = radiograph.display_change_to_pixels(visible_change_on_grid(geometry, task.change))
                    task.counterfactual = (radiograph.pixels + task.difference).astype(np.float32)
                    shown.append(geometry.to_model(replace(radiograph, pixels=task.counterfactual).display()))
                verified = models.classifier(torch.cat(shown))  # the classifier on exactly what is delivered
            still_open = []
            for k, logits, image in zip(open_tasks, verified, shown, strict=True):
                task = tasks[order[k]]
                task.shown = image
                task.counterfactual_probabilities = self._named(logits)
                if task.result.crossed and not task.problem.crossed(logits):
                    still_open.append(k)
            open_tasks = still_open
            if not open_tasks:
                break
        with clock.stage("original_grid"):
            for i in order:
                on_grid = geometries[i].to_original(tasks[i].saliency.numpy()).clip(0, 1)
                tasks[i].saliency_on_grid = on_grid.astype(np.float32)
        with clock.stage("audit"):
            self._audit(x, tasks)
        with clock.stage("frames"):
            for i in order:
                task = tasks[i]
                task.frame_changes, task.frame_probabilities = self._frames(
                    x[i : i + 1], task.result.path, task.result.weight, valid[i], task.target,
                )

    def _ood(self, x: torch.Tensor, reconstruction: torch.Tensor, valid: torch.Tensor) -> OodScore | None:
        return ood_score(x, reconstruction, valid, self.ood_reference) if self.ood_reference else None

    @torch.no_grad()
    def _audit(self, x: torch.Tensor, tasks: dict[int, _Task]) -> None:
        """Every auditor's probability of each task's finding on its input and on its delivered counterfactual,
        in one pass per auditor.
        """
        order = list(tasks)
        for task in tasks.values():
            task.audit = {}
        for auditor in self.models.auditors:
            p = torch.sigmoid(auditor.network(torch.cat([x[order], *(tasks[i].shown for i in order)])))
            for k, i in enumerate(order):
                task = tasks[i]
                finding = self.findings[task.target]
                column = auditor.network.findings.index(finding)
                before, after = float(p[k, column]), float(p[len(order) + k, column])
                task.audit[auditor.name] = audit_entry(before, after, auditor.thresholds[finding], task.direction)

    @torch.no_grad()
    def _frames(
        self,
        x: torch.Tensor,
        path: list[torch.Tensor],
        weight: torch.Tensor | None,
        valid: torch.Tensor,
        target: int,
    ) -> tuple[list[np.ndarray], list[float]]:
        """Model-space change of every latent on ``path`` relative to the first (the input's latent), inside
        the region change is allowed in, and the finding's probability on each frame, in one batch.
        """
        decoded = self.models.autoencoder.decode(torch.cat(path))
        changes = (decoded - decoded[:1])[:, 0] * (weight if weight is not None else valid)
        p = torch.sigmoid(self.models.classifier((x[0, 0] + changes).clamp(0, 1)[:, None])[:, target])
        return [change.numpy() for change in changes], [float(v) for v in p]
