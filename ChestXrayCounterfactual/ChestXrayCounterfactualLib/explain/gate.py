"""The input gate: is this image something the models were made for, a frontal chest radiograph?

Reading is not explaining: the reader reads a CT slice or an ultrasound frame as faithfully as a chest film. Before
explaining, two checks decide whether the models' answer would mean anything.

* :func:`check_header` refuses, with one sentence naming the object, what the DICOM header says is not a frontal
  projection radiograph: modalities other than CR, DX and RG (CT, MR, US, NM, PT, radiotherapy images, but also
  XA and RF, fluoroscopic projections the models never saw, and mammograms and dental films), SOP classes other than
  CR, DX and secondary capture, and lateral or oblique views (NIH ChestX-ray14 holds frontal films only, and a
  lateral superimposes both lungs and the heart, so no finding the classifier reports would mean anything on one).
  It warns for what is accepted but unusual: decubitus views, DX "for processing" raw data, a body part other than
  the chest. Objects without pixels (waveforms, reports, RT plans), segmentations and dose grids never get this far:
  the reader refuses them. Inputs without a DICOM header (PNG, JPEG, NRRD, Slicer volumes) and secondary captures
  that say nothing of their content (modality OT or none) pass: their pixels are judged by the second check.
* :func:`ood_score` measures how unlike the training radiographs the image is, in model space, from one
  autoencoder pass: the autoencoder's reconstruction error and the image's coarse layout compared with the training
  radiographs' (see :func:`layout_distance`), each in units of its median on the validation radiographs. Neither
  alone separates the non-chest examples measured (``weights/MODEL_CARD.md``); their sum does. It warns when the
  score is higher than every validation radiograph's, with the percentile in the sentence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NotExplainableError, WeightsError
from ..modelset import ModelSet, default_weights_dir
from ..inputs.radiograph import Radiograph

REFERENCE_NAME = "ood_reference.json"
TRAINED_ON = "the models were trained on frontal chest radiographs only"

#: Modalities of projection radiographs of the kind the models were trained on.
RADIOGRAPHY = frozenset({"CR", "DX", "RG"})
#: Modalities that say nothing of what the image is: the pixels decide.
UNSPECIFIED = frozenset({"", "OT"})
#: What each refused modality is, for the sentence.
MODALITY_NAMES = {
    "CT": "a CT image",
    "MR": "an MR image",
    "US": "an ultrasound image",
    "NM": "a nuclear medicine image",
    "PT": "a PET image",
    "XA": "an X-ray angiography image",
    "RF": "a fluoroscopy image",
    "MG": "a mammogram",
    "IO": "an intra-oral dental radiograph",
    "PX": "a panoramic dental radiograph",
    "BMD": "a bone densitometry image",
    "XC": "an external-camera photograph",
    "ES": "an endoscopy image",
    "SM": "a slide microscopy image",
    "OP": "an ophthalmic photograph",
    "RTIMAGE": "a radiotherapy portal image",
}
#: SOP classes of radiographs (CR, DX) and of secondary captures, whose modality and pixels decide.
ALLOWED_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
        "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
        "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture Image Storage
    },
)
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
#: ViewPosition values (PS3.3 C.8.11.5 defined terms and common CR free text), by what they show.
FRONTAL_VIEWS = frozenset({"", "PA", "AP"})
LATERAL_VIEWS = frozenset({"LL", "RL"})
OBLIQUE_VIEWS = frozenset({"RLO", "LLO", "RAO", "LAO", "RPO", "LPO"})
DECUBITUS_VIEWS = frozenset({"RLD", "LLD"})
CHEST_WORDS = ("CHEST", "THORAX", "THORAC", "TORAX", "LUNG")


def check_header(radiograph: Radiograph) -> list[str]:
    """Refuse (:class:`NotExplainableError`) what the DICOM header says is not a frontal projection radiograph;
    return a sentence for each accepted but unusual trait. Inputs without a DICOM header pass with no sentence.
    """
    meta = radiograph.metadata
    if meta.get("format") != "dicom":
        return []
    modality = str(meta.get("modality", "")).strip().upper()
    if modality not in RADIOGRAPHY | UNSPECIFIED:
        _refuse(radiograph, f"{MODALITY_NAMES.get(modality, 'an image of another kind')} (Modality {modality})")
    sop = str(meta.get("sop_class_uid", ""))
    if sop and sop not in ALLOWED_SOP_CLASSES:
        _refuse(radiograph, f"a {meta.get('sop_class') or 'DICOM'} object (SOP class {sop})")
    notes = _view_notes(radiograph, str(meta.get("view_position", "")).strip().upper())
    if sop == DX_FOR_PROCESSING:
        notes.append(
            "a DX image 'for processing': raw detector data, before the image processing the training radiographs had",
        )
    body = str(meta.get("body_part", "")).strip().upper()
    if body and not any(word in body for word in CHEST_WORDS):
        notes.append(f"the header says the body part examined is {body}, not the chest")
    return notes


def _refuse(radiograph: Radiograph, what: str) -> NoReturn:
    raise NotExplainableError(radiograph.source, f"{what}, not a projection radiograph of the chest: {TRAINED_ON}")


def _view_notes(radiograph: Radiograph, view: str) -> list[str]:
    """Refuse lateral and oblique views; a sentence for a decubitus or unknown view."""
    if view in FRONTAL_VIEWS:
        return []
    if view in DECUBITUS_VIEWS or "DECUB" in view:
        return [f"a decubitus view (ViewPosition {view}): the patient lay on one side, as no training radiograph shows"]
    for views, word, name in ((LATERAL_VIEWS, "LAT", "a lateral view"), (OBLIQUE_VIEWS, "OBL", "an oblique view")):
        if view in views or word in view:
            raise NotExplainableError(
                radiograph.source, f"{name} (ViewPosition {view}), not a frontal one: {TRAINED_ON}",
            )
    return [f"view position {view} is neither PA nor AP, the frontal views the models were trained on"]


@dataclass(frozen=True)
class OodReference:
    """The training radiographs' statistics an image is compared with (``weights/ood_reference.json``).

    ``cell_mean`` and ``cell_sd`` are the layout statistics (one per block) of the training split; the medians, the
    sorted ``validation_scores`` and ``cut`` come from the validation split, held out from training.
    """

    autoencoder_sha256: str
    floor: float
    cell_mean: np.ndarray
    cell_sd: np.ndarray
    error_median: float
    layout_median: float
    error_weight: float
    validation_scores: np.ndarray
    cut: float

    @classmethod
    def from_dict(cls, data: dict) -> OodReference:
        rule = data["rule"]
        return cls(
            autoencoder_sha256=data["autoencoder_sha256"],
            floor=float(rule["floor"]),
            cell_mean=np.asarray(rule["cell_mean"], dtype=np.float64),
            cell_sd=np.asarray(rule["cell_sd"], dtype=np.float64),
            error_median=float(rule["error_median"]),
            layout_median=float(rule["layout_median"]),
            error_weight=float(rule["error_weight"]),
            validation_scores=np.sort(np.asarray(data["validation"]["scores"], dtype=np.float64)),
            cut=float(rule["cut"]),
        )


def load_ood_reference(path: str | Path | None = None) -> OodReference:
    """The reference in ``path`` (default: ``ood_reference.json`` of the bundled weights folder)."""
    path = Path(path) if path else default_weights_dir() / REFERENCE_NAME
    try:
        return OodReference.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise WeightsError(f"no out-of-distribution reference at {path}; restore it from the repository") from None
    except (ValueError, KeyError, TypeError) as error:
        raise WeightsError(f"the out-of-distribution reference {path} is malformed ({error})") from None


def reference_for(models: ModelSet, path: str | Path | None = None) -> OodReference | None:
    """The reference if it was computed with this model set's autoencoder, else None (a model set of one's own)."""
    reference = load_ood_reference(path)
    return reference if models.file_hashes.get("autoencoder") == reference.autoencoder_sha256 else None


def layout_cells(x: torch.Tensor, valid: torch.Tensor, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """(cells, inside): the model-space image ``x`` (1, 1, S, S) as grid x grid block means, standardised over the
    blocks that are mostly image (``inside``), so neither the window's brightness nor its contrast counts. An image
    too narrow to fill half of any block (a strip, far from a chest film's shape) is compared on the blocks it touches.
    """
    cells = F.adaptive_avg_pool2d(x.detach().float(), grid)[0, 0].cpu().numpy().astype(np.float64)
    covered = F.adaptive_avg_pool2d(valid.float()[None, None], grid)[0, 0].cpu().numpy()
    inside = covered > 0.5 if (covered > 0.5).any() else covered > 0
    shown = cells[inside]
    return (cells - shown.mean()) / (shown.std() + 1e-6) * inside, inside


def layout_distance(
    x: torch.Tensor, valid: torch.Tensor, cell_mean: np.ndarray, cell_sd: np.ndarray, floor: float,
) -> float:
    """Mean squared z-score of the image's standardised blocks (:func:`layout_cells`) against the training
    radiographs' mean and standard deviation per block.

    Chest films share a layout (dark lungs either side of a bright mediastinum, shoulders, diaphragm), which CT
    slices, ultrasound sectors, photographs and lateral or inverted films do not. ``floor`` is added to each block's
    standard deviation, so differences of a fraction of the image's own contrast count as noise.
    """
    cells, inside = layout_cells(x, valid, cell_mean.shape[0])
    z = (cells - cell_mean) / (cell_sd + floor)
    return float((z[inside] ** 2).mean())


@torch.no_grad()
def reconstruction_error(x: torch.Tensor, reconstruction: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean absolute difference between ``x`` and its autoencoder reconstruction, over the valid (non-padding) area."""
    difference = (reconstruction - x).abs()[0, 0]
    return float(difference[valid.bool()].mean())


@dataclass(frozen=True)
class OodScore:
    """How unlike the training radiographs one image is; ``percentile``: % of validation radiographs scoring lower."""

    reconstruction_error: float
    layout_distance: float
    score: float
    percentile: float
    cut: float
    validation_images: int

    @property
    def unusual(self) -> bool:
        return self.score > self.cut

    @property
    def warning(self) -> str | None:
        """One sentence when the image is unlike every validation radiograph, else None."""
        if not self.unusual:
            return None
        return (
            f"unlike the training radiographs: out-of-distribution score {self.score:.2f} (reconstruction error "
            f"{self.reconstruction_error:.4f}, layout distance {self.layout_distance:.2f}) is above "
            f"{self.percentile:.0f}% of the {self.validation_images} validation radiographs (the highest scored "
            f"{self.cut:.2f}), so its findings and counterfactual may mean nothing"
        )

    def as_dict(self) -> dict:
        """What an output records (``explanation.json``)."""
        return {
            "score": round(self.score, 4),
            "percentile": round(self.percentile, 1),
            "cut": round(self.cut, 4),
            "unusual": self.unusual,
            "reconstruction_error": round(self.reconstruction_error, 5),
            "layout_distance": round(self.layout_distance, 4),
            "validation_images": self.validation_images,
        }


def ood_score(x: torch.Tensor, reconstruction: torch.Tensor, valid: torch.Tensor, reference: OodReference) -> OodScore:
    """Score one model-space image (``Explainer.model_input``), given its autoencoder reconstruction (the one the
    engine makes anyway), against ``reference``.
    """
    error = reconstruction_error(x, reconstruction, valid)
    layout = layout_distance(x, valid, reference.cell_mean, reference.cell_sd, reference.floor)
    score = layout / reference.layout_median + reference.error_weight * error / reference.error_median
    below = int(np.searchsorted(reference.validation_scores, score, side="left"))
    return OodScore(
        reconstruction_error=error,
        layout_distance=layout,
        score=score,
        percentile=100.0 * below / len(reference.validation_scores),
        cut=reference.cut,
        validation_images=len(reference.validation_scores),
    )
