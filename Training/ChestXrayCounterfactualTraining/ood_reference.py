"""``weights/ood_reference.json``: what the engine's input gate compares an image with
(:mod:`ChestXrayCounterfactualLib.explain.gate`).

The layout statistics are fitted on the training split (NIH and Hannover training patients, the images the
autoencoder learnt from); the medians, the validation scores and the cut come from the validation split, held out
from training. Images go through the engine's own reader and model-space map, exactly as the gate
sees them. The bundled autoencoder is loaded from the weights folder (its sha256 checked against the model card)
and its hash is recorded, so the engine applies the reference only with that autoencoder.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ChestXrayCounterfactualLib.explain.pipeline import Explainer
from ChestXrayCounterfactualLib.explain.gate import REFERENCE_NAME, layout_cells, layout_distance, reconstruction_error
from ChestXrayCounterfactualLib.modelset import load_model_set, sha256_of
from ChestXrayCounterfactualLib.inputs.reader import read_radiograph

from .data import Record

#: The rule's constants, written into the reference (the engine reads them from there).
GRID = 14  # 16 px blocks of the 224 px model space
FLOOR = 0.2  # added to each block's standard deviation, in units of the image's own contrast
ERROR_WEIGHT = 0.5  # reconstruction error's weight beside the layout distance, both in units of their median
QUANTILES = (0.5, 0.9, 0.95, 0.99, 1.0)


def _model_space(explainer: Explainer, records: list[Record]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for record in records:
        x, geometry = explainer.model_input(read_radiograph(record.path))
        yield x, geometry.valid_mask()


def fit_layout(explainer: Explainer, records: list[Record]) -> tuple[np.ndarray, np.ndarray]:
    """Per-block mean and standard deviation of the standardised layout, over the images where the block is inside."""
    blocks = [layout_cells(x, valid, GRID) for x, valid in _model_space(explainer, records)]
    values = np.ma.masked_array(
        np.stack([cells for cells, _ in blocks]), mask=~np.stack([inside for _, inside in blocks]),
    )
    return np.round(values.mean(0).filled(0.0), 5), np.round(values.std(0).filled(0.0), 5)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"{q:g}": round(float(np.quantile(values, q)), 5) for q in QUANTILES}


def _check_split(weights: Path, nih: dict[str, list[Record]]) -> None:
    """Refuse a split that is not the one the bundled models were trained with (``weights/splits.csv``)."""
    with open(weights / "splits.csv", newline="") as handle:
        bundled = {row["file"]: row["split"] for row in csv.DictReader(handle)}
    ours = {r.path.name: split for split, records in nih.items() for r in records}
    if ours != bundled:
        raise SystemExit(
            f"the patient split differs from {weights / 'splits.csv'}: pass the --split-seed the bundled models used",
        )


@torch.no_grad()
def ood_reference(weights: Path, nih: dict[str, list[Record]], hannover: dict[str, list[Record]]) -> dict:
    """The reference for the model set in ``weights``, from the training and validation splits of both sources."""
    _check_split(weights, nih)
    models = load_model_set(weights)
    explainer = Explainer(models)
    cell_mean, cell_sd = fit_layout(explainer, nih["train"] + hannover["train"])
    validation = nih["validation"] + hannover["validation"]
    errors, layouts = [], []
    for x, valid in _model_space(explainer, validation):
        errors.append(reconstruction_error(x, models.autoencoder(x), valid))
        layouts.append(layout_distance(x, valid, cell_mean, cell_sd, FLOOR))
    error, layout = np.array(errors), np.array(layouts)
    error_median, layout_median = float(np.median(error)), float(np.median(layout))
    scores = layout / layout_median + ERROR_WEIGHT * error / error_median
    return {
        "format_version": 1,
        "what": "reference of the input gate's out-of-distribution score "
        "(ChestXrayCounterfactualLib.explain.gate.ood_score): score = layout_distance / layout_median + "
        "error_weight * reconstruction_error / error_median; warn when score > cut (above every validation image)",
        "autoencoder_sha256": models.file_hashes["autoencoder"],
        "splits_sha256": sha256_of(weights / "splits.csv"),
        "fit": {"split": "train", "images": {"nih": len(nih["train"]), "mhh_covid19": len(hannover["train"])}},
        "validation": {
            "split": "validation",
            "images": {"nih": len(nih["validation"]), "mhh_covid19": len(hannover["validation"])},
            "quantiles": {
                "reconstruction_error": _quantiles(error),
                "layout_distance": _quantiles(layout),
                "score": _quantiles(scores),
            },
            "scores": sorted(round(float(s), 6) for s in scores),
        },
        "rule": {
            "floor": FLOOR,
            "error_weight": ERROR_WEIGHT,
            "error_median": error_median,
            "layout_median": layout_median,
            "cut": float(scores.max()),
            "cell_mean": cell_mean.tolist(),
            "cell_sd": cell_sd.tolist(),
        },
    }


def write_ood_reference(weights: Path, nih: dict[str, list[Record]], hannover: dict[str, list[Record]]) -> Path:
    """Compute the reference and write it beside the weights; returns its path."""
    path = weights / REFERENCE_NAME
    path.write_text(json.dumps(ood_reference(weights, nih, hannover), indent=1) + "\n")
    return path
