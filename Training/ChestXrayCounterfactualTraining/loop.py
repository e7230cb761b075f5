"""What both training runs share: seeding, logging, resumable checkpoints, cost accounting."""

from __future__ import annotations

import json
import logging
import math
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    # Seeds numpy's global generator for any library code that draws from it; our own code uses
    # np.random.default_rng, so the legacy call is what this function is for.
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)


def make_logger(out_dir: Path, name: str) -> logging.Logger:
    out_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"cxrcf.{name}.{out_dir}")
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
        for handler in (logging.FileHandler(out_dir / f"{name}.log"), logging.StreamHandler()):
            handler.setFormatter(fmt)
            logger.addHandler(handler)
    return logger


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, cost: CostMeter, budget_seconds: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine annealing that ends at ``total_steps`` or at the time budget,
    whichever comes first (so a run cut by ``--max-minutes`` still ends annealed).
    """

    def factor(step: int) -> float:
        progress = min(1.0, max(step / total_steps, cost.elapsed() / budget_seconds))
        return min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def loaders(train: list, validation: list, batch_size: int, workers: int, seed: int) -> tuple:
    """Shuffled (seeded) training batches and ordered validation batches, read from disk."""
    from .data import ModelSpaceDataset

    train_loader = torch.utils.data.DataLoader(
        ModelSpaceDataset(train),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
    validation_loader = torch.utils.data.DataLoader(ModelSpaceDataset(validation), batch_size=64, num_workers=workers)
    return train_loader, validation_loader


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically, so a run killed mid-save still resumes from the previous checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def half_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A float16 copy of the weights: half the file size, and the engine casts back to float32."""
    return {k: (v.half() if v.is_floating_point() else v).cpu().clone() for k, v in module.state_dict().items()}


class CostMeter:
    """Wall time and peak memory (host RSS and, on CUDA, device) of one training run."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = time.time()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def elapsed(self) -> float:
        return time.time() - self.start

    def report(self, previous_seconds: float = 0.0) -> dict:
        report = {
            "wall_seconds": round(previous_seconds + time.time() - self.start, 1),
            "peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "device": str(self.device) if self.device.type != "cuda" else torch.cuda.get_device_name(self.device),
        }
        if self.device.type == "cuda":
            report["peak_device_memory_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return report


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
