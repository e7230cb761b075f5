"""The training pipeline on the real shared data (skipped in a user's clone, which has none)."""

from __future__ import annotations

import json
import shutil

import torch

from ChestXrayCounterfactualLib.modelset import Auditor, default_weights_dir, load_model_set, sha256_of
from ChestXrayCounterfactualTraining.__main__ import DEFAULT_FINDINGS, by_split
from ChestXrayCounterfactualTraining.auditors import publish_auditors
from ChestXrayCounterfactualTraining.autoencoder import train_autoencoder
from ChestXrayCounterfactualTraining.classifier import train_classifier
from ChestXrayCounterfactualTraining.data import read_records
from ChestXrayCounterfactualTraining.latent_basis import publish_latent_basis
from ChestXrayCounterfactualTraining.loop import write_json
from ChestXrayCounterfactualTraining.publish import publish
from conftest import shared


def test_split_is_by_patient_and_deterministic():
    records = read_records(shared("nih", "labels.csv"), DEFAULT_FINDINGS)
    splits = by_split(records, seed=0)
    patients = {name: {r.patient for r in items} for name, items in splits.items()}
    assert not (
        patients["train"] & patients["validation"]
        or patients["train"] & patients["test"]
        or patients["validation"] & patients["test"]
    )
    assert {name: len(items) for name, items in by_split(records, seed=0).items()} == {
        name: len(items) for name, items in splits.items()
    }
    assert 0.6 < len(splits["train"]) / len(records) < 0.8


def test_training_checkpoints_resumes_and_exports_half_precision(tmp_path):
    records = read_records(shared("nih", "labels.csv"), DEFAULT_FINDINGS)
    splits = by_split(records, seed=0)
    train, validation = splits["train"][:16], splits["validation"][:12]
    train_classifier(train, validation, DEFAULT_FINDINGS, tmp_path, epochs=1, batch_size=8, workers=0)
    summary = train_classifier(train, validation, DEFAULT_FINDINGS, tmp_path, epochs=2, batch_size=8, workers=0)
    assert summary["epochs_run"] == 2 and "resumed at epoch 1" in (tmp_path / "classifier.log").read_text()
    assert set(summary["thresholds"]) == set(DEFAULT_FINDINGS)
    weights = torch.load(tmp_path / "classifier.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    ae = train_autoencoder(train[:8], validation[:4], tmp_path, epochs=1, batch_size=4, workers=0)
    assert ae["latent_shape"] == [32, 14, 14] and 0 < ae["validation"]["ssim"] <= 1
    assert json.loads((tmp_path / "autoencoder_summary.json").read_text())["epochs_run"] == 1


def test_an_auditor_trains_like_the_classifier_and_is_published_into_the_model_set(tmp_path):
    """An auditor (another architecture) trains, checkpoints and exports like the classifier, under its own name;
    publishing enters it in a copy of the bundled model set with its sha256 and test metrics, with the typical
    probabilities, and the model set then loads it (verified) as one of its auditors.
    """
    records = read_records(shared("nih", "labels.csv"), DEFAULT_FINDINGS)
    splits = by_split(records, seed=0)
    small = {"train": splits["train"][:16], "validation": splits["validation"][:24], "test": splits["test"][:24]}
    run, weights = tmp_path / "run", tmp_path / "weights"
    shutil.copytree(default_weights_dir(), weights)
    auditor = Auditor(DEFAULT_FINDINGS, "densenet-small")
    summary = train_classifier(
        small["train"], small["validation"], DEFAULT_FINDINGS, run, epochs=1, batch_size=8, workers=0,
        model=auditor, name="auditor-densenet-small",
    )
    assert summary["epochs_run"] == 1 and (run / "auditor-densenet-small.log").exists()
    shipped = json.loads((weights / "model_card.json").read_text())
    others = [name for name in shipped["auditors"] if name != "auditor-densenet-small"]
    card = publish_auditors(run, weights, small, ["densenet-small"], drop=others)
    assert others and not any((weights / shipped["files"][name]["file"]).exists() for name in others)
    entry = card["auditors"]["auditor-densenet-small"]
    assert set(entry["test_metrics"]) == set(DEFAULT_FINDINGS) and entry["architecture"] == "densenet-small"
    assert card["files"]["auditor-densenet-small"]["sha256"] == sha256_of(weights / "auditor-densenet-small.pt")
    assert set(card["typical_probabilities"]) == {"absent", "present"}
    assert "## Independent auditors" in (weights / "MODEL_CARD.md").read_text()
    models = load_model_set(weights)
    assert [a.name for a in models.auditors] == ["auditor-densenet-small"] and models.typical


def test_a_fine_tuned_classifier_is_republished_without_losing_the_auditors_or_the_gate_section(tmp_path):
    """Fine-tuning starts from the shipped classifier with the named layers fixed; republishing the model set then
    records the first run and the fine-tune in the card, keeps the auditors (they do not depend on the classifier)
    and the hand-written input-gate section, and drops the typical probabilities until they are measured anew.
    """
    records = read_records(shared("nih", "labels.csv"), DEFAULT_FINDINGS)
    splits = by_split(records, seed=0)
    small = {"train": splits["train"][:16], "validation": splits["validation"][:24], "test": splits["test"][:24]}
    run, weights = tmp_path / "run", tmp_path / "weights"
    shutil.copytree(default_weights_dir(), weights)
    shipped = torch.load(weights / "classifier.pt", weights_only=True)
    summary = train_classifier(
        small["train"], small["validation"], DEFAULT_FINDINGS, run, epochs=1, batch_size=8, workers=0,
        init=weights / "classifier.pt", frozen=("net.conv1", "net.bn1", "net.layer1"),
    )
    tuned = torch.load(run / "classifier.pt", weights_only=True)
    assert torch.equal(tuned["net.layer1.0.conv1.weight"], shipped["net.layer1.0.conv1.weight"])
    assert torch.equal(tuned["net.layer1.0.bn1.running_mean"], shipped["net.layer1.0.bn1.running_mean"])
    assert not torch.equal(tuned["net.fc.weight"], shipped["net.fc.weight"])
    assert summary["initialised_from"]["sha256"] == sha256_of(weights / "classifier.pt")
    old_card = json.loads((weights / "model_card.json").read_text())
    shutil.copyfile(weights / "autoencoder.pt", run / "autoencoder.pt")
    shutil.copyfile(weights / "splits.csv", run / "splits.csv")
    write_json(run / "autoencoder_summary.json", old_card["autoencoder"]["training"])
    few = {**small, "validation": small["validation"][:4]}  # directions from 4 images: seconds, not minutes
    card = publish(run, weights, few, [], DEFAULT_FINDINGS, old_card["training_data"])
    assert card["classifier"]["base_training"] == old_card["classifier"]["training"]
    assert card["auditors"] == old_card["auditors"] and "typical_probabilities" not in card
    markdown = (weights / "MODEL_CARD.md").read_text()
    assert "then fine-tuned with net.conv1, net.bn1, net.layer1 kept fixed on 16 training images" in markdown
    for title in ("## Independent auditors", "## Input gate", "## Files"):
        assert markdown.count(title) == 1, title
    models = load_model_set(weights)
    assert [a.name for a in models.auditors] == list(old_card["auditors"]) and not models.typical


def test_latent_basis_is_published_into_the_model_set(tmp_path):
    """The manifold method's basis: orthonormal rows spanning the training latents' principal subspace, entered in
    the card with the share of variance it holds, verified and loaded with the set.
    """
    records = read_records(shared("nih", "labels.csv"), DEFAULT_FINDINGS)
    train = by_split(records, seed=0)["train"]
    weights = tmp_path / "weights"
    shutil.copytree(default_weights_dir(), weights)
    basis = publish_latent_basis(train[:24], weights, dimensions=4)
    assert basis["dimensions"] == 4 and 0 < basis["variance_explained"] < 1
    rows = load_model_set(weights).latent_basis
    assert rows.shape == (4, 32 * 14 * 14)
    torch.testing.assert_close(rows @ rows.T, torch.eye(4), atol=2e-3, rtol=0)
    assert "## Latent basis" in (weights / "MODEL_CARD.md").read_text()
