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
from dataclasses import dataclass, field, replace
from collections.abc import Callable

import numpy as np
import torch

from . import counterfactual as cf
from . import methods
from .counterfactual import DEADBAND
from .errors import ExplainerError
from .geometry import ModelSpaceMap
from .modelset import ModelSet, load_model_set
from .reader import Radiograph
from .saliency import saliency_map


def visible_change_on_grid(geometry: ModelSpaceMap, change: np.ndarray | torch.Tensor) -> np.ndarray:
    """A model-space change of display intensity on the original grid, changes below ``DEADBAND`` dropped."""
    on_grid = geometry.to_original(change)
    on_grid[np.abs(on_grid) < DEADBAND] = 0.0
    return on_grid


class NoFindingError(ExplainerError):
    """No finding is above its threshold and none was asked for."""


class CancelledError(ExplainerError):
    """The caller's progress callback asked to stop."""


#: ``progress(stage, fraction)`` is called as each stage starts; returning False cancels the run.
ProgressCallback = Callable[[str, float], bool]
STAGES = ("model_space", "classify", "saliency", "counterfactual", "original_grid")


@dataclass
class Explanation:
    """Everything one explanation produced; arrays named ``model_*`` are (S, S) model space, the
    others lie on the input's own pixel grid (``radiograph.shape``).
    """

    radiograph: Radiograph
    finding: str
    method: str
    saliency_method: str
    direction: str
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
    geometry: ModelSpaceMap
    seconds: dict[str, float]
    details: dict = field(default_factory=dict)
    path: list[torch.Tensor] = field(default_factory=list, repr=False)

    @property
    def p_original(self) -> float:
        return self.probabilities[self.finding]

    @property
    def p_counterfactual(self) -> float:
        return self.counterfactual_probabilities[self.finding]


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

    @property
    def findings(self) -> list[str]:
        return self.models.findings

    def model_input(self, radiograph: Radiograph) -> tuple[torch.Tensor, ModelSpaceMap]:
        geometry = ModelSpaceMap(*radiograph.shape, size=self.models.size)
        return geometry.to_model(radiograph.display()), geometry

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> dict[str, float]:
        p = torch.sigmoid(self.models.classifier(x)[0])
        return {f: float(p[i]) for i, f in enumerate(self.findings)}

    def predict(self, radiograph: Radiograph) -> dict[str, float]:
        """Probability of every finding of the model set."""
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
    ) -> Explanation:
        """Explain one finding of one radiograph.

        ``direction`` is "remove" (push the probability below the threshold) or "add"; by default
        the finding is removed when the model calls it present and added otherwise. ``progress``
        is told each stage as it starts and may cancel by returning False.
        """
        methods.check(method, saliency, direction)
        torch.manual_seed(0)
        clock = _Stopwatch(progress)
        models = self.models
        with clock.stage("model_space"):
            x, geometry = self.model_input(radiograph)
            valid = geometry.valid_mask().float()
        with clock.stage("classify"):
            probabilities = self.probabilities(x)
        finding = self.findings[models.index(finding)] if finding else self.choose_finding(probabilities)
        target = models.index(finding)
        threshold = models.thresholds[finding]
        direction = direction or ("remove" if probabilities[finding] >= threshold else "add")
        with clock.stage("saliency"):
            sal = saliency_map(models.classifier, x, target, saliency, valid)
        with clock.stage("counterfactual"), torch.no_grad():
            z0 = models.autoencoder.encode(x)
            reconstruction = models.autoencoder.decode(z0)
            x_logits = models.classifier(x)[0]
        for margin in cf.MARGINS:
            with clock.stage("counterfactual"), torch.no_grad():
                problem = cf.LatentProblem(
                    models,
                    x,
                    valid,
                    z0,
                    reconstruction,
                    x_logits,
                    target,
                    threshold,
                    -1 if direction == "remove" else 1,
                    margin=margin,
                )
                result = cf.COUNTERFACTUALS[method](problem, sal, frames)
            with clock.stage("original_grid"), torch.no_grad():
                change = (result.image - x)[0, 0].numpy()
                difference = radiograph.display_change_to_pixels(visible_change_on_grid(geometry, change))
                counterfactual = (radiograph.pixels + difference).astype(np.float32)
                shown = geometry.to_model(replace(radiograph, pixels=counterfactual).display())
                verified = models.classifier(shown)[0]  # the classifier on exactly what is delivered
            if not result.crossed or problem.crossed(verified):
                break
        with clock.stage("original_grid"):
            saliency_on_grid = geometry.to_original(sal.numpy()).clip(0, 1)
        sig = lambda logits: {f: float(torch.sigmoid(logits[i])) for i, f in enumerate(self.findings)}  # noqa: E731
        counterfactual_probabilities = sig(verified)
        flipped = (probabilities[finding] >= threshold) != (counterfactual_probabilities[finding] >= threshold)
        clock.seconds["total"] = round(sum(clock.seconds.values()), 4)
        return Explanation(
            radiograph=radiograph,
            finding=finding,
            method=method,
            saliency_method=saliency,
            direction=direction,
            threshold=threshold,
            probabilities=probabilities,
            reconstruction_probabilities=sig(models.classifier(reconstruction)[0].detach()),
            counterfactual_probabilities=counterfactual_probabilities,
            flipped=bool(flipped),
            saliency=saliency_on_grid.astype(np.float32),
            counterfactual=counterfactual,
            difference=difference,
            model_original=x[0, 0].numpy(),
            model_reconstruction=reconstruction[0, 0].numpy(),
            model_counterfactual=result.image[0, 0].detach().numpy(),
            model_change=change,
            model_change_weight=(result.weight if result.weight is not None else valid).numpy(),
            model_saliency=sal.numpy(),
            geometry=geometry,
            seconds=clock.seconds,
            details={**result.details, "margin_logit": margin},
            path=result.path,
        )

    @torch.no_grad()
    def _frame_change(self, explanation: Explanation, index: int) -> torch.Tensor:
        """Model-space change of animation frame ``index`` relative to the first (the input)."""
        decode = self.models.autoencoder.decode
        weight = torch.from_numpy(explanation.model_change_weight)
        return (decode(explanation.path[index]) - decode(explanation.path[0]))[0, 0] * weight

    @torch.no_grad()
    def frames(self, explanation: Explanation) -> list[tuple[np.ndarray, float]]:
        """The animation from the input to the counterfactual: (model-space image, p) per frame."""
        target = self.models.index(explanation.finding)
        x = torch.from_numpy(explanation.model_original)
        out = []
        for index in range(len(explanation.path)):
            image = (x + self._frame_change(explanation, index)).clamp(0, 1)
            out.append((image.numpy(), float(torch.sigmoid(self.models.classifier(image[None, None])[0, target]))))
        return out

    def frame_on_grid(self, explanation: Explanation, index: int) -> np.ndarray:
        """Frame ``index`` of the animation on the original grid, as original + change (pixel units)."""
        change = visible_change_on_grid(explanation.geometry, self._frame_change(explanation, index).numpy())
        return (explanation.radiograph.pixels + explanation.radiograph.display_change_to_pixels(change)).astype(
            np.float32,
        )
