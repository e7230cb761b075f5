"""The bundled model set: classifier, autoencoder, decision thresholds and latent directions, as
described by ``weights/model_card.json``. Every file's sha256 is checked against the card before it
is loaded, and tensors are loaded with ``weights_only=True`` (no arbitrary unpickling).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TypeVar

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


_Network = TypeVar("_Network", bound=torch.nn.Module)


def _frozen(network: _Network, directory: Path, entry: dict) -> _Network:
    """``network`` with the verified weights of the card's file ``entry`` (as float32), in eval mode, without
    gradients: how every network of the set is loaded.
    """
    network.load_state_dict({k: v.float() for k, v in verified_tensors(directory, entry).items()})
    return network.eval().requires_grad_(False)


def load_bundled(weights_dir: str | Path | None = None) -> ModelSet:
    """Load and verify the model set described by ``weights_dir/model_card.json``."""
    directory = Path(weights_dir) if weights_dir else default_weights_dir()
    card_path = directory / CARD_NAME
    if not card_path.is_file():
        raise WeightsError(f"no model card at {card_path}; the weights folder is incomplete")
    card = json.loads(card_path.read_text())
    files = card["files"]
    findings = card["findings"]
    classifier = _frozen(Classifier(findings, card["classifier"]["architecture"]), directory, files["classifier"])
    autoencoder = _frozen(
        Autoencoder(card["autoencoder"]["latent_channels"], tuple(card["autoencoder"]["widths"])),
        directory,
        files["autoencoder"],
    )
    directions = {}
    if "directions" in files:
        directions = {k: v.float() for k, v in verified_tensors(directory, files["directions"]).items()}
    basis = verified_tensors(directory, files["latent_basis"])["basis"].float() if "latent_basis" in files else None
    auditors = [
        AuditorModel(name, _frozen(Auditor(findings, e["architecture"]), directory, files[name]), e["thresholds"])
        for name, e in card.get("auditors", {}).items()
    ]
    companions = [
        CompanionModel(name, _frozen(Companion(findings, e["architecture"]), directory, files[name]))
        for name, e in card.get("companions", {}).items()
    ]
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
