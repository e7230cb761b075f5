"""The bundled model set: card complete, sha256 checked before loading, weights-only loading."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from ChestXrayCounterfactualLib.errors import WeightsError
from ChestXrayCounterfactualLib.modelset import CARD_NAME, default_weights_dir, load_model_set, sha256_of


def test_card_lists_every_file_with_its_sha256_and_the_required_facts():
    weights = default_weights_dir()
    card = json.loads((weights / CARD_NAME).read_text())
    for entry in card["files"].values():
        assert sha256_of(weights / entry["file"]) == entry["sha256"]
        assert (weights / entry["file"]).stat().st_size < 40 * 2**20
    assert card["intended_use"] == "research and education, not for diagnosis"
    assert any("NIH Clinical Center" in a for a in card["attribution"])
    assert set(card["thresholds"]) == set(card["findings"]) >= {"Cardiomegaly", "Effusion"}
    for finding, metrics in card["test_metrics"]["classifier"].items():
        assert len(metrics["auc_95ci"]) == 2 and metrics["positives"] > 0
    assert (weights / "MODEL_CARD.md").exists()


@pytest.fixture
def weights_copy(tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(default_weights_dir(), copy)
    return copy


def test_an_altered_file_is_refused_by_name(weights_copy):
    target = weights_copy / "autoencoder.pt"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=re.escape("autoencoder.pt does not match its model card")):
        load_model_set(weights_copy)


def test_a_missing_file_is_refused_by_name(weights_copy):
    (weights_copy / "classifier.pt").unlink()
    with pytest.raises(WeightsError, match=re.escape("classifier.pt is missing")):
        load_model_set(weights_copy)


def test_a_pickled_object_is_never_unpickled(weights_copy):
    """A file that needs arbitrary unpickling is refused even when its sha256 is (re)recorded."""

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    target = weights_copy / "directions.pt"
    torch.save({"Cardiomegaly": Payload()}, target)
    card = json.loads((weights_copy / CARD_NAME).read_text())
    card["files"]["directions"]["sha256"] = sha256_of(target)
    (weights_copy / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="cannot be loaded safely"):
        load_model_set(weights_copy)


def test_weights_are_stored_in_half_precision_and_run_in_float32():
    """Half the file size: floating tensors are fp16 on disk (integers stay as they are) and float32 once loaded."""
    weights = default_weights_dir()
    card = json.loads((weights / CARD_NAME).read_text())
    for entry in card["files"].values():
        if entry["file"].endswith(".pt"):
            tensors = torch.load(weights / entry["file"], map_location="cpu", weights_only=True)
            kinds = {v.dtype for v in tensors.values() if v.is_floating_point()}
            assert kinds == {torch.float16}, (entry["file"], kinds)
    models = load_model_set()
    networks = [models.classifier, models.autoencoder, *(a.network for a in models.auditors)]
    for network in networks:
        assert {p.dtype for p in network.parameters()} == {torch.float32}
