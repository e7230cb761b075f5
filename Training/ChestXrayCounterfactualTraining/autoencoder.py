"""Train the autoencoder: L1 + SSIM reconstruction loss plus a classifier-consistency term (the
frozen classifier should see the same findings on the reconstruction as on the original), so that
counterfactuals decoded from the latent are judged by the classifier like the original image.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ChestXrayCounterfactualLib.modelset import Autoencoder, Classifier

from .data import Record, augment
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
from .metrics import ssim


def _features(classifier: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    net = classifier.net
    h = net.maxpool(net.relu(net.bn1(net.conv1((x - classifier.mean) / classifier.std))))
    h = net.layer3(net.layer2(net.layer1(h)))
    h4 = net.layer4(h)
    return h4, net.fc(torch.flatten(net.avgpool(h4), 1))


def reconstruction_loss(
    ae_out: torch.Tensor, x: torch.Tensor, classifier: Classifier | None, consistency_weight: float,
) -> tuple[torch.Tensor, dict]:
    l1 = (ae_out - x).abs().mean()
    s = ssim(ae_out, x)
    loss = l1 + 0.5 * (1 - s)
    parts = {"l1": l1.item(), "ssim": s.item()}
    if classifier is not None and consistency_weight > 0:
        with torch.no_grad():
            feat, logits = _features(classifier, x)
        feat_hat, logits_hat = _features(classifier, ae_out)
        dp = (torch.sigmoid(logits_hat) - torch.sigmoid(logits)).abs().mean()
        feature = ((feat_hat - feat) ** 2).mean() / (feat**2).mean().clamp_min(1e-6)
        loss = loss + consistency_weight * (dp + 0.1 * feature)
        parts["dp"] = dp.item()
    return loss, parts


def train_autoencoder(
    train: list[Record],
    validation: list[Record],
    out_dir: Path,
    *,
    classifier: Classifier | None = None,
    consistency_weight: float = 1.0,
    latent_channels: int = 32,
    epochs: int = 150,
    batch_size: int = 32,
    lr: float = 2e-3,
    patience: int = 30,
    seed: int = 0,
    workers: int = 2,
    device: str = "cpu",
    max_minutes: float = math.inf,
    init: Path | None = None,
) -> dict:
    """Train, keep the best weights by validation (1 - SSIM) + |dp|, write ``autoencoder.pt`` + summary."""
    dev = torch.device(device)
    log = make_logger(out_dir, "autoencoder")
    seed_everything(seed)
    model = Autoencoder(latent_channels).to(dev)
    if init is not None:
        model.load_state_dict(torch.load(init, map_location=dev, weights_only=True))
    if classifier is not None:
        classifier = classifier.to(dev).eval().requires_grad_(False)
    cost = CostMeter(dev)
    budget = max_minutes * 60
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = epochs * steps_per_epoch
    schedule = warmup_cosine(optimizer, total, steps_per_epoch, cost, budget)
    train_loader, val_loader = loaders(train, validation, batch_size, workers, seed)

    state = {"epoch": 0, "best_score": math.inf, "best_epoch": -1, "history": [], "seconds": 0.0}
    checkpoint = load_checkpoint(out_dir / "autoencoder_checkpoint.pt")
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        state = checkpoint["state"]
        torch.set_rng_state(checkpoint["rng"])
        log.info("resumed at epoch %d", state["epoch"])
    log.info(
        "autoencoder: %d train / %d validation images, latent %dx14x14, device %s",
        len(train),
        len(validation),
        latent_channels,
        dev,
    )
    while state["epoch"] < epochs and state["epoch"] - state["best_epoch"] <= patience and cost.elapsed() < budget:
        model.train()
        for x, _ in train_loader:
            x = augment(x.to(dev))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                out = model(x).float()
            loss, _ = reconstruction_loss(out, x, classifier, consistency_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        totals = {"l1": [], "ssim": [], "dp": []}
        with torch.no_grad():
            for x, _ in val_loader:
                x = x.to(dev)
                _, parts = reconstruction_loss(model(x), x, classifier, consistency_weight)
                for k, v in parts.items():
                    totals[k].append(v)
        val = {k: float(np.mean(v)) for k, v in totals.items() if v}
        score = (1 - val["ssim"]) + val.get("dp", 0.0)
        state["epoch"] += 1
        state["history"].append({"epoch": state["epoch"], **val})
        if score < state["best_score"]:
            state.update(best_score=score, best_epoch=state["epoch"])
            torch.save(model.state_dict(), out_dir / "autoencoder_best.pt")
        log.info(
            "epoch %3d val %s (best %.4f @%d)",
            state["epoch"],
            {k: round(v, 4) for k, v in val.items()},
            state["best_score"],
            state["best_epoch"],
        )
        save_checkpoint(
            out_dir / "autoencoder_checkpoint.pt",
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "state": {**state, "seconds": state["seconds"] + cost.elapsed()},
                "rng": torch.get_rng_state(),
            },
        )
    model.load_state_dict(torch.load(out_dir / "autoencoder_best.pt", map_location=dev, weights_only=True))
    torch.save(half_state_dict(model), out_dir / "autoencoder.pt")
    summary = {
        "latent_shape": [latent_channels, 14, 14],
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "validation": state["history"][state["best_epoch"] - 1],
        "consistency_weight": consistency_weight if classifier is not None else 0.0,
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
        "cost": cost.report(state["seconds"]),
    }
    write_json(out_dir / "autoencoder_summary.json", summary)
    log.info("done: %s", summary)
    return summary
