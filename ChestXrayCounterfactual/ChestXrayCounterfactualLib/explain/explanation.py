"""An explanation, complete: what the writers (files, DICOM), the Slicer scene and the wording of a result read.

Arrays named ``model_*`` are (S, S) model space, the others lie on the input's own pixel grid. On that grid the
counterfactual is the original plus the upsampled change the autoencoder made (decoded counterfactual minus decoded
reconstruction), so the autoencoder's blur never reaches the result; changes smaller than one grey level of an 8-bit
display (``DEADBAND``) are dropped, so untouched regions keep every original pixel exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..inputs.radiograph import Radiograph
from .counterfactual import DEADBAND
from .geometry import ModelSpaceMap
from .records import INTENDED_USE, outcome_line


def visible_change_on_grid(geometry: ModelSpaceMap, change: np.ndarray | torch.Tensor) -> np.ndarray:
    """A model-space change of display intensity on the original grid, changes below ``DEADBAND`` dropped."""
    on_grid = geometry.to_original(change)
    on_grid[np.abs(on_grid) < DEADBAND] = 0.0
    return on_grid


def pixel_difference(radiograph: Radiograph, geometry: ModelSpaceMap, change: np.ndarray | torch.Tensor) -> np.ndarray:
    """A model-space change of display intensity as a difference of the input's pixels on its own grid, kept within
    the input's own pixel range (a stored image cannot hold a value darker or brighter than that, so nothing is lost
    when it is written back in the input's format); a change the range cuts below one grey level is dropped. The
    delivered counterfactual and every animation frame on the grid are made by it.
    """
    pixels = radiograph.pixels
    visible = radiograph.display_change_to_pixels(visible_change_on_grid(geometry, change))
    difference = np.clip(pixels + visible, pixels.min(), pixels.max()) - pixels
    grey_level = np.abs(radiograph.display_change_to_pixels(np.array(DEADBAND)))
    difference[np.abs(difference) < grey_level] = 0  # what the clip left of a change is no visible change
    return difference



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
    model_change: np.ndarray
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
    #: Why the counterfactual goes as far as ``strength`` says (a sentence: the default or asked for, and the aim).
    strength_reason: str = ""
    #: The torch device the models ran on ("cpu", "cuda:0", "mps").
    device: str = "cpu"
    #: The arithmetic of the counterfactual search (``methods.PRECISIONS``); what is reported is measured in float32.
    precision: str = "fp32"

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

    @property
    def crossing_frame(self) -> int | None:
        """The first frame of the animation across the decision threshold (None if no frame is)."""
        for index, p in enumerate(self.frame_probabilities):
            if (p >= self.threshold) != (self.p_original >= self.threshold):
                return index
        return None

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
        """Frame ``index`` of the animation on the original grid, as original + change (pixel units), within the
        input's pixel range as the counterfactual is (the last frame of the default method is the counterfactual).
        """
        difference = pixel_difference(self.radiograph, self.geometry, self.model_frame_changes[index])
        return (self.radiograph.pixels + difference).astype(np.float32)

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
            "strength_reason": self.strength_reason,
            "p_original": self.p_original,
            "p_reconstruction": self.reconstruction_probabilities[self.finding],
            "p_counterfactual": self.p_counterfactual,
            "threshold": self.threshold,
            "flipped": self.flipped,
            "crossing_frame": self.crossing_frame,
            "frames": len(self.frame_probabilities),
            "auditors": self.audit,
            "verdict": self.verdict,
            "probabilities_original": self.probabilities,
            "probabilities_counterfactual": self.counterfactual_probabilities,
            "seconds": self.seconds,
            "device": self.device,
            "precision": self.precision,
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
