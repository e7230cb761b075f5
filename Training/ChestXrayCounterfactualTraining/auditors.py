"""Publish the independent auditors into the model set, and the typical probabilities the "typical" strength
aims for.

Each auditor (``python -m ChestXrayCounterfactualTraining auditor --arch ...``) was trained on the bundled
classifier's training split only, with its thresholds chosen on the validation split (Youden's J); here it is
measured once on the test split (AUC with a bootstrap interval), copied into the weights folder in half
precision and entered in ``model_card.json`` with its sha256. The typical probabilities are the bundled
classifier's median probability of each finding on the validation images without it (and with it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from ChestXrayCounterfactualLib.modelset import Auditor, Companion, load_model_set, sha256_of

from .classifier import predict_probabilities
from .data import ModelSpaceDataset, Record
from .metrics import bootstrap_ci, roc_auc, sensitivity_specificity
from .publish import auditors_section, companions_section, files_section


def _loader(records: list[Record]) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ModelSpaceDataset(records), batch_size=32)


#: What ``publish_auditors`` can publish: the model card's section, each file's name prefix and the network class.
KINDS = {"auditors": ("auditor", Auditor), "companions": ("companion", Companion)}


def auditor_entry(
    run: Path, arch: str, findings: list[str], test: list[Record], kind: str = "auditors",
) -> tuple[dict, Path]:
    """The model-card entry of one trained auditor or steering companion (test metrics included) and its weights
    file.
    """
    prefix, network_class = KINDS[kind]
    name = f"{prefix}-{arch}"
    summary = json.loads((run / f"{name}_summary.json").read_text())
    auditor = network_class(findings, arch)
    state = torch.load(run / f"{name}.pt", map_location="cpu", weights_only=True)
    auditor.load_state_dict({k: v.float() for k, v in state.items()})
    p, y = predict_probabilities(auditor.eval(), _loader(test), torch.device("cpu"))
    metrics = {}
    for i, finding in enumerate(findings):
        low, high = bootstrap_ci(y[:, i], p[:, i])
        sensitivity, specificity = sensitivity_specificity(y[:, i], p[:, i], summary["thresholds"][finding])
        metrics[finding] = {
            "auc": round(roc_auc(y[:, i], p[:, i]), 4),
            "auc_95ci": [round(low, 4), round(high, 4)],
            "sensitivity": round(sensitivity, 4),
            "specificity": round(specificity, 4),
        }
    entry = {
        "architecture": arch,
        "resolution": auditor.resolution,
        "thresholds": summary["thresholds"],
        "threshold_rule": summary["threshold_rule"],
        "seed": summary["seed"],
        "training": {k: summary[k] for k in ("best_epoch", "epochs_run", "validation_auc", "lr", "batch_size", "cost")},
        "test_metrics": metrics,
    }
    if summary.get("noise"):
        entry["training"]["noise"] = summary["noise"]
    return entry, run / f"{name}.pt"


@torch.no_grad()
def typical_probabilities(weights: Path, validation: list[Record]) -> dict[str, dict[str, float]]:
    """The bundled classifier's median probability of each finding on validation images without it ("absent")
    and with it ("present").
    """
    models = load_model_set(weights)
    p, y = predict_probabilities(models.classifier, _loader(validation), torch.device("cpu"))
    return {
        side: {f: round(float(np.median(p[y[:, i] == label, i])), 4) for i, f in enumerate(models.findings)}
        for side, label in (("absent", 0), ("present", 1))
    }


def publish_auditors(
    run: Path,
    weights: Path,
    splits: dict[str, list[Record]],
    archs: list[str],
    drop: list[str] = (),
    kind: str = "auditors",
) -> dict:
    """Copy the auditors (or, with ``kind="companions"``, the steering companions) trained in ``run`` (``archs``)
    into ``weights`` and enter them, with the typical probabilities, in its model card. Those already in the card
    stay, except those named in ``drop``: their entries and weight files are removed.
    """
    card_path = weights / "model_card.json"
    typical = typical_probabilities(weights, splits["validation"])  # loads the set: before its files change
    card = json.loads(card_path.read_text())
    auditors = card.setdefault(kind, {})
    for name in drop:
        auditors.pop(name, None)
        removed = card["files"].pop(name, None)
        if removed:
            (weights / removed["file"]).unlink(missing_ok=True)
    for arch in archs:
        entry, source = auditor_entry(run, arch, card["findings"], splits["test"], kind)
        target = weights / source.name
        shutil.copyfile(source, target)
        card["files"][source.stem] = {"file": target.name, "sha256": sha256_of(target), "bytes": target.stat().st_size}
        auditors[source.stem] = entry
    card["typical_probabilities"] = typical
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    markdown = weights / "MODEL_CARD.md"
    text = with_section(markdown.read_text(), auditors_section(card), before="## Training data")
    if card.get("companions"):
        text = with_section(text, companions_section(card), before="## Training data")
    markdown.write_text(with_section(text, files_section(card), before="## Attribution"))
    return card


def with_section(markdown: str, section: str, before: str) -> str:
    """``markdown`` with the section titled as ``section``'s first line replaced by ``section`` (or inserted before
    the heading ``before``), so the card's other sections (the input gate's, written by hand) are kept.
    """
    title = section.splitlines()[0]
    if title in markdown:
        start = markdown.index(title)
        end = markdown.find("\n## ", start + len(title))
        return markdown[:start] + section + (markdown[end + 1 :] if end >= 0 else "")
    at = markdown.index(before)
    return markdown[:at] + section + markdown[at:]
