"""Where each finding lies, from the NIH expert boxes of the training split: the "manifold" counterfactual method
looks for its change where the classifier's saliency and this prior overlap.

A saliency map points where the classifier looks, which for some findings is not where they are (Grad-CAM's
maximum lies in an Effusion box for none of the benchmark's cases): a prior of where radiologists drew the boxes
keeps the change where the finding is. Only training-split images are used, so the benchmark's box figures on
validation and test images stay honest. Each prior is the share of boxed training images whose box covers a pixel
of model space (boxes on the NIH 1024 px grid, which model space spans for these square images), smoothed by a
15 px box filter and scaled to a maximum of 1; written in half precision and entered in ``model_card.json``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ChestXrayCounterfactualLib.modelset.interface import MODEL_SIZE
from ChestXrayCounterfactualLib.modelset import sha256_of

from .data import Record

FILE_NAME = "location_priors.pt"
#: The NIH box list's coordinate grid.
NIH_GRID = 1024
#: Side of the box filter that smooths each prior, in model-space pixels.
SMOOTHING = 15


def box_masks(boxes_csv: Path, files: set[str], finding: str, size: int = MODEL_SIZE) -> list[torch.Tensor]:
    """One (size, size) mask per image of ``files`` with boxes of ``finding`` (several boxes of an image united)."""
    masks: dict[str, torch.Tensor] = {}
    scale = size / NIH_GRID
    with open(boxes_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["finding"] != finding or row["file"] not in files:
                continue
            x, y, w, h = (float(row[k]) * scale for k in ("x", "y", "w", "h"))
            mask = masks.setdefault(row["file"], torch.zeros(size, size))
            mask[int(y) : math.ceil(y + h), int(x) : math.ceil(x + w)] = 1
    return list(masks.values())


def location_prior(masks: list[torch.Tensor]) -> torch.Tensor:
    """The share of ``masks`` covering each pixel, smoothed and scaled to a maximum of 1."""
    share = torch.stack(masks).mean(0)[None, None]
    kernel = torch.ones(1, 1, SMOOTHING, SMOOTHING) / SMOOTHING**2
    smooth = F.conv2d(share, kernel, padding=SMOOTHING // 2)[0, 0]
    return (smooth / smooth.max()).clamp(0, 1)


def publish_location_priors(train: list[Record], boxes_csv: Path, weights: Path, findings: list[str]) -> dict:
    """Write ``location_priors.pt`` (the findings with training boxes) into ``weights`` and enter it in the card."""
    files = {r.path.name for r in train}
    masks = {finding: box_masks(boxes_csv, files, finding) for finding in findings}
    priors = {finding: location_prior(m) for finding, m in masks.items() if m}
    target = weights / FILE_NAME
    torch.save({finding: prior.half() for finding, prior in priors.items()}, target)
    card_path = weights / "model_card.json"
    card = json.loads(card_path.read_text())
    card["files"]["location_priors"] = {"file": FILE_NAME, "sha256": sha256_of(target), "bytes": target.stat().st_size}
    card["location_priors"] = {
        "method": "share of the training split's boxed images whose NIH expert box covers each model-space pixel, "
        f"smoothed ({SMOOTHING} px box filter), maximum 1",
        "boxed_training_images": {finding: len(m) for finding, m in masks.items()},
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card["location_priors"]
