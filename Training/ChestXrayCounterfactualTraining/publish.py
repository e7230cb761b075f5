"""From a finished training run to the shipped model set: latent directions, test-set metrics with
bootstrap intervals, and ``weights/`` (files, ``model_card.json`` with sha256 of every file, and
``MODEL_CARD.md``). Metrics are measured on the held-out test patients only.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ChestXrayCounterfactualLib.modelset import CLASSIFIER_NORMALISATION, Autoencoder, Classifier
from ChestXrayCounterfactualLib.modelset import CARD_NAME, sha256_of

from .data import ModelSpaceDataset, Record
from .directions import find_directions
from .metrics import bootstrap_ci, roc_auc, sensitivity_specificity, ssim

NIH_ATTRIBUTION = (
    "NIH ChestX-ray14 (https://nihcc.app.box.com/v/ChestXray-NIHCC), provided by the NIH Clinical Center. "
    "Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray Database and "
    "Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax Diseases. IEEE CVPR 2017."
)
MHH_ATTRIBUTION = (
    "Hannover Medical School COVID-19 image repository (CC BY 3.0), Institute for Diagnostic and "
    "Interventional Radiology, Hannover Medical School; DOI 10.6084/m9.figshare.12275009."
)


def load_networks(run: Path, findings: list[str], latent_channels: int = 32) -> tuple[Classifier, Autoencoder]:
    classifier, autoencoder = Classifier(findings), Autoencoder(latent_channels)
    for module, name in ((classifier, "classifier.pt"), (autoencoder, "autoencoder.pt")):
        state = torch.load(run / name, map_location="cpu", weights_only=True)
        module.load_state_dict({k: v.float() for k, v in state.items()})
        module.eval().requires_grad_(False)
    return classifier, autoencoder


def stack_images(records: list[Record]) -> torch.Tensor:
    return torch.stack([ModelSpaceDataset(records)[i][0] for i in range(len(records))])


@torch.no_grad()
def test_metrics(
    classifier: Classifier,
    autoencoder: Autoencoder,
    thresholds: dict[str, float],
    test: list[Record],
    ood: list[Record],
) -> dict:
    findings = classifier.findings
    loader = torch.utils.data.DataLoader(ModelSpaceDataset(test), batch_size=16)
    probs, probs_rec, labels, maes, ssims = [], [], [], [], []
    for x, y in loader:
        recon = autoencoder(x)
        probs.append(torch.sigmoid(classifier(x)))
        probs_rec.append(torch.sigmoid(classifier(recon)))
        labels.append(y)
        maes.append((recon - x).abs().flatten(1).mean(1))
        ssims.append(ssim(recon, x, reduce=False))
    p, pr, y = torch.cat(probs).numpy(), torch.cat(probs_rec).numpy(), torch.cat(labels).numpy()
    mae, s = torch.cat(maes).numpy(), torch.cat(ssims).numpy()
    classifier_metrics = {}
    for i, f in enumerate(findings):
        sens, spec = sensitivity_specificity(y[:, i], p[:, i], thresholds[f])
        low, high = bootstrap_ci(y[:, i], p[:, i])
        classifier_metrics[f] = {
            "auc": round(roc_auc(y[:, i], p[:, i]), 4),
            "auc_95ci": [round(low, 4), round(high, 4)],
            "sensitivity": round(sens, 4),
            "specificity": round(spec, 4),
            "positives": int(y[:, i].sum()),
            "negatives": int(len(y) - y[:, i].sum()),
        }
    mean_ci = lambda v: [round(float(a), 4) for a in bootstrap_ci(v, v, lambda a, _: float(np.mean(a)))]
    dp = np.abs(p - pr)
    autoencoder_metrics = {
        "mae": round(float(mae.mean()), 4),
        "mae_95ci": mean_ci(mae),
        "ssim": round(float(s.mean()), 4),
        "ssim_95ci": mean_ci(s),
        "mean_abs_dp": {f: round(float(dp[:, i].mean()), 4) for i, f in enumerate(findings)},
        "mean_abs_dp_95ci": {f: mean_ci(dp[:, i]) for i, f in enumerate(findings)},
    }
    if ood:
        xs = stack_images(ood)
        recon = autoencoder(xs)
        autoencoder_metrics["out_of_distribution_mhh_covid19"] = {
            "images": len(ood),
            "mae": round(float((recon - xs).abs().mean()), 4),
            "ssim": round(float(ssim(recon, xs)), 4),
        }
    return {
        "test_images": len(test),
        "test_patients": len({r.patient for r in test}),
        "classifier": classifier_metrics,
        "autoencoder": autoencoder_metrics,
    }


def publish(
    run: Path,
    weights: Path,
    splits: dict[str, list[Record]],
    ood: list[Record],
    findings: list[str],
    data_summary: dict,
) -> dict:
    """Directions + metrics + weights folder with card; returns the card."""
    torch.set_grad_enabled(True)
    classifier_summary = json.loads((run / "classifier_summary.json").read_text())
    autoencoder_summary = json.loads((run / "autoencoder_summary.json").read_text())
    thresholds = classifier_summary["thresholds"]
    card_path = weights / CARD_NAME
    previous_card = json.loads(card_path.read_text()) if card_path.exists() else {}
    classifier, autoencoder = load_networks(run, findings)
    start = time.time()
    directions, direction_report = find_directions(
        classifier, autoencoder, stack_images(splits["validation"]), findings,
    )
    direction_seconds = round(time.time() - start, 1)
    torch.save({k: v.half() for k, v in directions.items()}, run / "directions.pt")
    metrics = test_metrics(classifier, autoencoder, thresholds, splits["test"], ood)
    (run / "test_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    weights.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, name in (
        ("classifier", "classifier.pt"),
        ("autoencoder", "autoencoder.pt"),
        ("directions", "directions.pt"),
    ):
        shutil.copyfile(run / name, weights / name)
        files[key] = {"file": name, "sha256": sha256_of(weights / name), "bytes": (weights / name).stat().st_size}
    shutil.copyfile(run / "splits.csv", weights / "splits.csv")
    files["splits"] = {"file": "splits.csv", "sha256": sha256_of(weights / "splits.csv")}
    card = {
        "name": "bundled-nih-224",
        "format_version": 1,
        "resolution": 224,
        "channels": 1,
        "input": "model space: the radiograph's display intensities (window applied, bone bright) in [0, 1], "
        "padded to a centred square with 0 and resized (area) to 224x224",
        "findings": findings,
        "thresholds": thresholds,
        "threshold_rule": classifier_summary["threshold_rule"],
        "classifier": {
            "architecture": "resnet18",
            "library": f"torchvision {__import__('torchvision').__version__}",
            "input_normalisation": {"mean": CLASSIFIER_NORMALISATION[0], "std": CLASSIFIER_NORMALISATION[1]},
            "output": "one logit per finding (sigmoid gives the probability)",
            "gradcam_layer": "net.layer4",
            "training": classifier_summary,
            **base_training(previous_card, classifier_summary),
        },
        "autoencoder": {
            "architecture": "convolutional, residual blocks, GroupNorm",
            "latent_channels": 32,
            "widths": list(autoencoder.widths),
            "latent_shape": [32, 14, 14],
            "loss": "L1 + 0.5 (1 - SSIM) + classifier consistency (|dp| + 0.1 layer4 feature MSE)",
            "training": autoencoder_summary,
        },
        "directions": {
            "method": "EigenFind-style: top singular vectors of the validation latent gradients, "
            "oriented to raise the finding, ranked by measured effect",
            "per_finding": direction_report,
            "seconds": direction_seconds,
        },
        "training_data": data_summary,
        "test_metrics": metrics,
        "files": files,
        "intended_use": "research and education, not for diagnosis",
        "attribution": [NIH_ATTRIBUTION, MHH_ATTRIBUTION],
        "environment": {"python": platform.python_version(), "torch": torch.__version__},
    }
    card.update(independent_of_classifier(previous_card, files))
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    markdown = weights / "MODEL_CARD.md"
    previous = markdown.read_text() if markdown.exists() else ""
    markdown.write_text(kept_sections(previous, render_card(card), before="## Files"))
    return card


def base_training(previous: dict, summary: dict) -> dict:
    """``{"base_training": ...}``: the training summary of the classifier of the ``previous`` card, when this one
    was fine-tuned from it (matched by sha256), so the card still says how the starting weights were made.
    """
    start = summary.get("initialised_from")
    if not start or not previous or previous["files"]["classifier"]["sha256"] != start["sha256"]:
        return {}
    return {"base_training": previous["classifier"]["training"]}


def independent_of_classifier(previous: dict, files: dict) -> dict:
    """The auditors of the ``previous`` card (their entries, and their files into ``files``): they do not depend
    on the classifier, so a new classifier keeps them. The typical probabilities do, so they are dropped until
    ``publish-auditors`` measures them for the new classifier.
    """
    auditors = previous.get("auditors", {})
    files.update({name: previous["files"][name] for name in auditors})
    return {"auditors": auditors} if auditors else {}


def sections(markdown: str) -> dict[str, str]:
    """The ``## `` sections of a markdown text by title line, each from its title to the next one."""
    lines = markdown.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    bounds = zip(starts, [*starts[1:], len(lines)], strict=True)
    return {lines[a].rstrip("\n"): "".join(lines[a:b]) for a, b in bounds}


def kept_sections(previous: str, rendered: str, before: str) -> str:
    """``rendered`` with the sections of ``previous`` that it does not write (the auditors', the input gate's,
    written by other steps or by hand) put back before the heading ``before``, so republishing loses none.
    """
    written = sections(rendered)
    missing = "".join(text for title, text in sections(previous).items() if title not in written)
    if not missing:
        return rendered
    at = rendered.index(before)
    return rendered[:at] + missing + rendered[at:]


def files_section(card: dict) -> str:
    """The table of every file of the model set with its sha256 (what the engine checks before loading)."""
    rows = "\n".join(f"| `{v['file']}` | `{v['sha256']}` |" for v in card["files"].values())
    return f"""## Files (the engine checks each sha256 before loading, and loads with `weights_only=True`)
| File | sha256 |
|---|---|
{rows}

"""


def auditors_section(card: dict) -> str:
    """The independent auditors' test metrics and the typical probabilities, when the card has them."""
    if not card.get("auditors"):
        return ""
    rows = "\n".join(
        f"| {name} | {f} | {m['auc']:.3f} ({m['auc_95ci'][0]:.3f}-{m['auc_95ci'][1]:.3f}) | "
        f"{entry['thresholds'][f]:.3f} | {m['sensitivity']:.2f} | {m['specificity']:.2f} |"
        for name, entry in card["auditors"].items()
        for f, m in entry["test_metrics"].items()
    )
    trained = "\n".join(
        f"- {name}: {entry['architecture']} at {entry['resolution']} px, seed {entry['seed']}, best epoch "
        f"{entry['training']['best_epoch']} of {entry['training']['epochs_run']}, trained on "
        f"{entry['training']['cost']['device']} in {entry['training']['cost']['wall_seconds'] / 60:.0f} min"
        for name, entry in card["auditors"].items()
    )
    typical = card.get("typical_probabilities", {})
    typical_rows = "\n".join(
        f"| {f} | {typical['absent'][f]:.3f} | {typical['present'][f]:.3f} |" for f in typical.get("absent", {})
    )
    typical_table = (
        f"""Typical probabilities (the "typical" strength aims for these): the classifier's median on validation images

| Finding | without the finding | with the finding |
|---|---|---|
{typical_rows}

"""
        if typical
        else ""
    )
    return f"""## Independent auditors (judge counterfactuals they did not steer)
Other architectures and seeds than the classifier, trained on its training split only (thresholds: Youden's J on
validation), never shown a validation or test image in training.
{trained}

Test split, same images as above:

| Auditor | Finding | AUC (95% bootstrap CI) | Threshold | Sensitivity | Specificity |
|---|---|---|---|---|---|
{rows}

{typical_table}"""


def companions_section(card: dict) -> str:
    """The steering companions: what they are, how they were trained and their test AUCs (never an auditor's)."""
    trained = "\n".join(
        f"- {name}: {entry['architecture']} at {entry['resolution']} px, seed {entry['seed']}, Gaussian noise up to "
        f"{entry['training'].get('noise', 0)} on every training image,\n  best epoch "
        f"{entry['training']['best_epoch']} of {entry['training']['epochs_run']}, trained on "
        f"{entry['training']['cost']['device']} in {entry['training']['cost']['wall_seconds'] / 60:.0f} min; test AUC "
        + ", ".join(f"{f} {m['auc']:.3f}" for f, m in entry["test_metrics"].items())
        for name, entry in card["companions"].items()
    )
    return f"""## Steering companions (steer the "manifold" search; never judge)
Small classifiers the default counterfactual search steers together with the explained classifier: each step follows
the sum of their logits, each divided by the length of its gradient at the input (so every model pulls equally at the
start), and a change must lower every steering model's logit, while only the explained classifier decides when the
goal is reached. Trained on the training split only, on noisy images (Gaussian noise of a standard deviation drawn
per image up to the figure below, in model-space intensities 0-1), in an architecture that neither the classifier
nor any auditor has. They are not auditors and no verdict counts them.
{trained}

"""


def fine_tuned(card: dict) -> str:
    """How the classifier was fine-tuned, for the card's model line (empty for a classifier trained once)."""
    training = card["classifier"]["training"]
    if "base_training" not in card["classifier"]:
        return ""
    kept = f" with {', '.join(training['frozen'])} kept fixed" if training.get("frozen") else ""
    return f", then fine-tuned{kept} on {training['train_images']} training images"


def base_run(card: dict) -> str:
    """The card's line for the run the classifier was fine-tuned from (empty for a classifier trained once)."""
    base = card["classifier"].get("base_training")
    if not base:
        return ""
    return (
        f"- Classifier, first run (from scratch): best epoch {base['best_epoch']} of {base['epochs_run']}, "
        f"AdamW lr {base['lr']}, batch {base['batch_size']}. Cost: {json.dumps(base['cost'])}.\n"
    )


def render_card(card: dict) -> str:
    m = card["test_metrics"]
    rows = "\n".join(
        f"| {f} | {v['auc']:.3f} ({v['auc_95ci'][0]:.3f}-{v['auc_95ci'][1]:.3f}) | {card['thresholds'][f]:.3f} | "
        f"{v['sensitivity']:.2f} | {v['specificity']:.2f} | {v['positives']} / {v['negatives']} |"
        for f, v in m["classifier"].items()
    )
    ae = m["autoencoder"]
    dp = ", ".join(f"{f} {v:.3f}" for f, v in ae["mean_abs_dp"].items())
    ood = ae.get("out_of_distribution_mhh_covid19")
    ood_line = (
        f"- Out of distribution (Hannover COVID-19, {ood['images']} held-out images): "
        f"MAE {ood['mae']:.3f}, SSIM {ood['ssim']:.3f}\n"
        if ood
        else ""
    )
    c, a = card["classifier"]["training"], card["autoencoder"]["training"]
    origin = "trained from scratch" + fine_tuned(card)
    stage = "Classifier fine-tune" if "base_training" in card["classifier"] else "Classifier"
    data = card["training_data"]
    return (
        f"""# Model card: {card["name"]}

**Intended use: research and education, not for diagnosis.** These models were trained on a few
thousand public chest radiographs on one machine; they are here so the explanation methods have
something real to explain, and so their behaviour can be measured. Do not use them on patients.

## Models
- Classifier: torchvision ResNet-18, one grey input channel, 224x224, {origin}; outputs one
  logit per finding ({", ".join(card["findings"])}). Input normalisation inside the model:
  (x - 0.5) / 0.25 on model-space intensities in [0, 1].
- Autoencoder: convolutional, spatial latent 32x14x14 (6,272 values), L1 + SSIM + classifier-consistency loss.
- Latent directions ("directions" counterfactual method): {card["directions"]["method"]}.
- Model space: {card["input"]}.
- Decision thresholds: {card["threshold_rule"]}.

## Test-set metrics ({m["test_images"]} images, {m["test_patients"]} patients never used for training or tuning)
| Finding | AUC (95% bootstrap CI) | Threshold | Sensitivity | Specificity | Positives / negatives |
|---|---|---|---|---|---|
{rows}

Autoencoder: MAE {ae["mae"]:.4f} (95% CI {ae["mae_95ci"][0]:.4f}-{ae["mae_95ci"][1]:.4f}), SSIM {ae["ssim"]:.3f}
(95% CI {ae["ssim_95ci"][0]:.3f}-{ae["ssim_95ci"][1]:.3f}); mean |p(original) - p(reconstruction)|: {dp}.
{ood_line}
Targets set for this model: Cardiomegaly AUC >= 0.85, Effusion AUC >= 0.82, SSIM >= 0.90, mean |dp| <= 0.05.

{auditors_section(card)}## Training data
{json.dumps(data, indent=2)}

Splits are by patient (sha256 of seed and patient id), written to `splits.csv`. NIH labels were mined
from reports and are noisy (about 90% accurate); the staged subset over-represents disease.

## Training
{base_run(card)}- {stage}: best epoch {c["best_epoch"]} of {c["epochs_run"]}, AdamW lr {c["lr"]},
  batch {c["batch_size"]}, class-balanced BCE, augmentation (rotation +-7 deg, scale 0.9-1.1, shift +-6%, gamma,
  contrast; no flips), weight EMA, early stopping on mean validation AUC. Cost: {json.dumps(c["cost"])}.
- Autoencoder: best epoch {a["best_epoch"]} of {a["epochs_run"]}. Cost: {json.dumps(a["cost"])}.
- Reproduce: see "Training the bundled models" in the README.

{files_section(card)}## Attribution
"""
        + "\n".join(f"- {a}" for a in card["attribution"])
        + "\n"
    )
