"""Train the multi-label classifier with the tricks that matter on a small data set: radiograph-safe
augmentation, class-balanced BCE, an exponential moving average of the weights, cosine schedule,
and early stopping on validation AUC. Thresholds are chosen on the validation split (Youden's J).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ChestXrayCounterfactualLib.modelset import Classifier, sha256_of

from .data import Record, augment, with_noise
from .loop import (
    CostMeter,
    half_state_dict,
    load_checkpoint,
    loaders,
    make_logger,
    save_checkpoint,
    seed_everything,
    warmup_cosine,
    write_json,
)
from .metrics import roc_auc, youden_threshold


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    probs, labels = [], []
    for x, y in loader:
        probs.append(torch.sigmoid(model(x.to(device)).float()).cpu())
        labels.append(y)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def train_classifier(
    train: list[Record],
    validation: list[Record],
    findings: list[str],
    out_dir: Path,
    *,
    epochs: int = 60,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    patience: int = 15,
    seed: int = 0,
    workers: int = 2,
    device: str = "cpu",
    max_minutes: float = math.inf,
    model: torch.nn.Module | None = None,
    name: str = "classifier",
    init: Path | None = None,
    frozen: tuple[str, ...] = (),
    noise: float = 0.0,
) -> dict:
    """Train, keep the best EMA weights by mean validation AUC, write ``<name>.pt`` + summary JSON.

    ``model`` defaults to the bundled ``Classifier``; an ``Auditor`` is trained the same way under its own
    ``name`` (its files and log are named after it). ``init`` starts from saved weights (fine-tuning);
    ``frozen`` names the submodules (e.g. ``net.layer1``) kept as they are: no gradient, batch statistics
    not updated, which makes a fine-tune on a CPU a fraction of the cost of training every layer. ``noise`` > 0 adds
    Gaussian noise to every augmented training image, its standard deviation drawn per image from [0, ``noise``]
    (model-space intensities): how a steering companion is trained (``Companion``).
    """
    dev = torch.device(device)
    log = make_logger(out_dir, name)
    seed_everything(seed)
    model = (model or Classifier(findings)).to(dev)
    if init is not None:
        state = torch.load(init, map_location=dev, weights_only=True)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    frozen_modules = [model.get_submodule(path) for path in frozen]
    for module in frozen_modules:
        module.requires_grad_(False)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.99), use_buffers=True)
    cost = CostMeter(dev)
    budget = max_minutes * 60
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = epochs * steps_per_epoch
    warmup = 2 * steps_per_epoch
    schedule = warmup_cosine(optimizer, total, warmup, cost, budget)
    labels = np.array([r.labels for r in train])
    pos_weight = torch.tensor(
        np.clip((len(labels) - labels.sum(0)) / np.maximum(labels.sum(0), 1), 1, 20), dtype=torch.float32, device=dev,
    )
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    train_loader, val_loader = loaders(train, validation, batch_size, workers, seed)

    state = {"epoch": 0, "best_auc": -1.0, "best_epoch": -1, "history": [], "seconds": 0.0}
    checkpoint = load_checkpoint(out_dir / f"{name}_checkpoint.pt")
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
        ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        state = checkpoint["state"]
        torch.set_rng_state(checkpoint["rng"])
        log.info("resumed at epoch %d (best mean AUC %.4f)", state["epoch"], state["best_auc"])
    log.info(
        "%s: %d train / %d validation images, findings %s, device %s",
        name,
        len(train),
        len(validation),
        findings,
        dev,
    )
    while state["epoch"] < epochs and state["epoch"] - state["best_epoch"] <= patience and cost.elapsed() < budget:
        model.train()
        for module in frozen_modules:
            module.eval()
        running = 0.0
        for x, y in train_loader:
            x, y = augment(x.to(dev)), y.to(dev)
            if noise > 0:
                x = with_noise(x, noise)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = loss_fn(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            ema.update_parameters(model)
            running += loss.item()
        probs, val_labels = predict_probabilities(ema.module, val_loader, dev)
        aucs = {f: roc_auc(val_labels[:, i], probs[:, i]) for i, f in enumerate(findings)}
        mean_auc = float(np.nanmean(list(aucs.values())))
        state["epoch"] += 1
        state["history"].append({"epoch": state["epoch"], "loss": running / len(train_loader), "val_auc": aucs})
        if mean_auc > state["best_auc"]:
            state.update(best_auc=mean_auc, best_epoch=state["epoch"])
            torch.save(ema.module.state_dict(), out_dir / f"{name}_best.pt")
        log.info(
            "epoch %3d loss %.4f val AUC %s mean %.4f (best %.4f @%d)",
            state["epoch"],
            running / len(train_loader),
            {k: round(v, 3) for k, v in aucs.items()},
            mean_auc,
            state["best_auc"],
            state["best_epoch"],
        )
        save_checkpoint(
            out_dir / f"{name}_checkpoint.pt",
            {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "state": {**state, "seconds": state["seconds"] + cost.elapsed()},
                "rng": torch.get_rng_state(),
            },
        )
    model.load_state_dict(torch.load(out_dir / f"{name}_best.pt", map_location=dev, weights_only=True))
    probs, val_labels = predict_probabilities(model, val_loader, dev)
    thresholds = {f: youden_threshold(val_labels[:, i], probs[:, i]) for i, f in enumerate(findings)}
    torch.save(half_state_dict(model), out_dir / f"{name}.pt")
    summary = {
        "findings": findings,
        "thresholds": thresholds,
        "threshold_rule": "Youden's J on the validation split",
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "validation_auc": state["history"][state["best_epoch"] - 1]["val_auc"],
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
        "train_images": len(train),
        "noise": noise,
        "cost": cost.report(state["seconds"]),
    }
    if init is not None:
        summary.update(initialised_from={"file": str(init), "sha256": sha256_of(init)}, frozen=list(frozen))
    write_json(out_dir / f"{name}_summary.json", summary)
    log.info("done: %s", summary)
    return summary
