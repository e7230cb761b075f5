"""Model sets: the networks the engine explains and everything needed to use them.

One loader, :func:`load_model_set`, takes what a user names: nothing (the bundled models), a weights
folder with a model card (:mod:`.bundled`), or a JSON spec for models of one's own (:mod:`.spec`).
Whatever it loads satisfies the Protocols of :mod:`.interface`, which is all the engine relies on.
"""

from __future__ import annotations

from pathlib import Path

from .bundled import CARD_NAME, default_weights_dir, load_bundled, sha256_of
from .device import DeviceChoice, resolve_device
from .interface import AuditorModel, AutoencoderNetwork, ClassifierNetwork, CompanionModel, ModelSet
from .networks import (
    AUDITOR_ARCHITECTURES,
    CLASSIFIER_NORMALISATION,
    COMPANION_ARCHITECTURES,
    Auditor,
    Autoencoder,
    Classifier,
    Companion,
)
from ..errors import SpecError
from .spec import export_torchscript, load_spec

__all__ = [
    "AUDITOR_ARCHITECTURES",
    "COMPANION_ARCHITECTURES",
    "CARD_NAME",
    "CLASSIFIER_NORMALISATION",
    "Auditor",
    "Companion",
    "AuditorModel",
    "Autoencoder",
    "AutoencoderNetwork",
    "Classifier",
    "ClassifierNetwork",
    "CompanionModel",
    "DeviceChoice",
    "ModelSet",
    "SpecError",
    "default_weights_dir",
    "export_torchscript",
    "load_model_set",
    "resolve_device",
    "sha256_of",
]


def load_model_set(source: str | Path | None = None, device: str | None = None) -> ModelSet:
    """The model set ``source`` names: ``None`` for the bundled models, a weights folder with a model
    card, or a model-set spec file; every file verified or hashed as its loader documents. Its networks are put
    on ``device`` (:func:`.device.resolve_device`; None: the CPU), or on the CPU with the reason in the set's
    ``device_warning`` when this machine cannot run on the one asked for.
    """
    choice = resolve_device(device)
    if source is None:
        models = load_bundled()
    else:
        path = Path(source)
        models = load_bundled(path) if path.is_dir() and (path / CARD_NAME).exists() else load_spec(path)
    models.device_warning = choice.warning
    return models.to(choice.device)
