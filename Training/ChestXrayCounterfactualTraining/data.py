"""Labelled chest X-ray records, the patient-level split, and a streaming dataset in model space.

Two label layouts are read: the staged ``labels.csv`` of ``../shared/data/nih`` (``file``,
``patient_id`` and one 0/1 column per finding) and the official NIH ``Data_Entry_2017.csv``
(``Image Index``, ``Patient ID``, ``Finding Labels`` joined by ``|``), so the same code trains on
the full 112k-image release. Images are read from disk one at a time, never held all in memory.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ChestXrayCounterfactualLib.explain.geometry import MODEL_SIZE, ModelSpaceMap

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Record:
    path: Path
    patient: str
    labels: tuple[float, ...]


def _index_images(image_root: Path) -> dict[str, Path]:
    """File name -> path for every PNG under ``image_root`` (the NIH release nests ``images_0xx/``)."""
    return {p.name: p for p in image_root.rglob("*.png")}


def read_records(label_file: Path, findings: list[str], image_root: Path | None = None) -> list[Record]:
    """Records of one label file, in either supported layout, for the images present on disk."""
    image_root = image_root or label_file.parent / "images"
    paths = _index_images(image_root)
    records = []
    with open(label_file, newline="") as handle:
        for row in csv.DictReader(handle):
            if "Image Index" in row:
                name, patient = row["Image Index"], row["Patient ID"]
                present = set(row["Finding Labels"].split("|"))
                labels = tuple(float(f in present) for f in findings)
            else:
                name, patient = row["file"], row["patient_id"]
                labels = tuple(float(row[f]) for f in findings)
            if name in paths:
                records.append(Record(paths[name], str(int(patient)) if patient.isdigit() else patient, labels))
    return records


def split_of(patient: str, seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> str:
    """Deterministic patient-level split: a hash of (seed, patient) decides, so it scales to any size."""
    digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def write_split_file(records: list[Record], seed: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "patient_id", "split"])
        for r in records:
            writer.writerow([r.path.name, r.patient, split_of(r.patient, seed)])


def read_grey(path: Path) -> np.ndarray:
    """A PNG/JPEG as float32 in [0, 1] (8- or 16-bit, RGB converted to grey)."""
    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I"):
            return np.asarray(img, dtype=np.float32) / 65535.0
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


class ModelSpaceDataset(torch.utils.data.Dataset):
    """(1, 224, 224) image tensors in [0, 1] and their label vectors, read from disk per item."""

    def __init__(self, records: list[Record], size: int = MODEL_SIZE) -> None:
        self.records = records
        self.size = size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        record = self.records[index]
        image = read_grey(record.path)
        x = ModelSpaceMap(*image.shape, size=self.size).to_model(image)[0]
        return x, torch.tensor(record.labels, dtype=torch.float32)


def augment(x: torch.Tensor) -> torch.Tensor:
    """Radiograph-safe augmentation on a batch: small rotation, scale and shift, gamma and contrast.

    No horizontal flip: the heart is on the patient's left, and flipping would teach the model
    that dextrocardia is normal.
    """
    b = x.shape[0]
    dev = x.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, device=dev) * (hi - lo) + lo

    angle = uniform(-7, 7) * math.pi / 180
    scale = uniform(0.9, 1.1)
    tx, ty = uniform(-0.06, 0.06), uniform(-0.06, 0.06)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.exp(uniform(-0.25, 0.25)).view(b, 1, 1, 1)
    x = x.clamp(0, 1) ** gamma
    contrast = uniform(0.85, 1.15).view(b, 1, 1, 1)
    brightness = uniform(-0.06, 0.06).view(b, 1, 1, 1)
    return ((x - 0.5) * contrast + 0.5 + brightness).clamp(0, 1)


def with_noise(x: torch.Tensor, largest: float) -> torch.Tensor:
    """A batch with Gaussian noise added, each image's standard deviation drawn uniformly from [0, ``largest``]."""
    sigma = torch.rand(x.shape[0], 1, 1, 1, device=x.device) * largest
    return (x + sigma * torch.randn_like(x)).clamp(0, 1)
