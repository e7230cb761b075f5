"""The bundled model set: classifier, autoencoder, decision thresholds and latent directions, as
described by ``weights/model_card.json``. Every file's sha256 is checked against the card before it
is loaded, and tensors are loaded with ``weights_only=True`` (no arbitrary unpickling).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import WeightsError
from .interface import MODEL_SIZE, AuditorModel, CompanionModel, ModelSet
from .networks import Auditor, Autoencoder, Classifier, Companion

CARD_NAME = "model_card.json"


def default_weights_dir() -> Path:
    """``$CXRCF_WEIGHTS``, else the repository's ``weights/``, else the Slicer module's ``Resources/weights``."""
    if os.environ.get("CXRCF_WEIGHTS"):
        return Path(os.environ["CXRCF_WEIGHTS"])
    lib = Path(__file__).resolve().parents[1]
    for candidate in (lib.parents[1] / "weights", lib.parent / "Resources" / "weights"):
        if (candidate / CARD_NAME).exists():
            return candidate
    return lib.parents[1] / "weights"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_tensors(directory: Path, entry: dict) -> dict:
    """Load one file of the card after checking it exists and its sha256 matches."""
    path = directory / entry["file"]
    if not path.is_file():
        raise WeightsError(f"model file {path} is missing; restore it from the repository or release")
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise WeightsError(
            f"model file {path} does not match its model card (sha256 {actual[:12]}..., "
            f"expected {entry['sha256'][:12]}...); it was altered or corrupted",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"model file {path} cannot be loaded safely ({type(error).__name__})") from None


def load_bundled(weights_dir: str | Path | None = None) -> ModelSet:
    """Load and verify the model set described by ``weights_dir/model_card.json``."""
    directory = Path(weights_dir) if weights_dir else default_weights_dir()
    card_path = directory / CARD_NAME
    if not card_path.is_file():
        raise WeightsError(f"no model card at {card_path}; the weights folder is incomplete")
    card = json.loads(card_path.read_text())
    files = card["files"]
    classifier = Classifier(card["findings"], card["classifier"]["architecture"])
    classifier.load_state_dict({k: v.float() for k, v in verified_tensors(directory, files["classifier"]).items()})
    autoencoder = Autoencoder(card["autoencoder"]["latent_channels"], tuple(card["autoencoder"]["widths"]))
    autoencoder.load_state_dict({k: v.float() for k, v in verified_tensors(directory, files["autoencoder"]).items()})
    directions = {}
    if "directions" in files:
        directions = {k: v.float() for k, v in verified_tensors(directory, files["directions"]).items()}
    basis = verified_tensors(directory, files["latent_basis"])["basis"].float() if "latent_basis" in files else None
    auditors = []
    for name, entry in card.get("auditors", {}).items():
        network = Auditor(card["findings"], entry["architecture"])
        network.load_state_dict({k: v.float() for k, v in verified_tensors(directory, files[name]).items()})
        auditors.append(AuditorModel(name, network.eval().requires_grad_(False), entry["thresholds"]))
    companions = []
    for name, entry in card.get("companions", {}).items():
        network = Companion(card["findings"], entry["architecture"])
        network.load_state_dict({k: v.float() for k, v in verified_tensors(directory, files[name]).items()})
        companions.append(CompanionModel(name, network.eval().requires_grad_(False)))
    for module in (classifier, autoencoder):
        module.eval().requires_grad_(False)
    return ModelSet(
        classifier,
        autoencoder,
        {f: float(t) for f, t in card["thresholds"].items()},
        directions,
        card.get("resolution", MODEL_SIZE),
        card.get("name", "bundled"),
        {k: v["sha256"] for k, v in files.items()},
        card.get("typical_probabilities", {}),
        auditors,
        latent_basis=basis,
        companions=companions,
    )
