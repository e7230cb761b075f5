"""What the engine asks of a model set: the two network Protocols and the ``ModelSet`` that holds them.

Every adapter satisfies these: the bundled networks (:mod:`.networks`), a spec's external networks
(:mod:`.spec`) and the toy networks of the fast tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch
from torch import nn

#: The side of the square model space unless a model set says otherwise (the bundled models' resolution).
MODEL_SIZE = 224

_Self = TypeVar("_Self")


class ClassifierNetwork(Protocol):
    """What the engine asks of a classifier (``Classifier``, a spec's ``ExternalClassifier`` or a test toy).

    An ``nn.Module`` whose call maps a model-space image batch to one logit per finding, with the
    finding names and the layer Grad-CAM attributes to. Images of a batch must not affect each other
    (batch statistics frozen, as in ``eval()``): the engine explains a batch as it explains one image.
    """

    findings: list[str]

    @property
    def gradcam_layer(self) -> nn.Module: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def eval(self: _Self) -> _Self: ...

    def requires_grad_(self: _Self, requires_grad: bool = True) -> _Self: ...

    def to(self: _Self, device: torch.device) -> _Self: ...


class AutoencoderNetwork(Protocol):
    """What the engine asks of an autoencoder (``Autoencoder``, a spec's ``ExternalAutoencoder`` or a test toy).

    An ``nn.Module`` with ``encode``/``decode`` between model-space images and latents, each image of a
    batch on its own (as for the classifier).
    """

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def eval(self: _Self) -> _Self: ...

    def requires_grad_(self: _Self, requires_grad: bool = True) -> _Self: ...

    def to(self: _Self, device: torch.device) -> _Self: ...


@dataclass
class AuditorModel:
    """An independent classifier that judges each counterfactual (``networks.Auditor`` for the bundled set):
    its name, its network (logits for ``network.findings``) and its own decision thresholds.
    """

    name: str
    network: ClassifierNetwork
    thresholds: dict[str, float]


@dataclass
class CompanionModel:
    """A steering companion (``networks.Companion`` for the bundled set): a classifier the "manifold" search steers
    together with the explained one, never reported as an auditor. Its name and its network (logits for
    ``network.findings``).
    """

    name: str
    network: ClassifierNetwork


@dataclass
class ModelSet:
    """Everything the engine needs to explain: two networks, findings, thresholds, directions."""

    classifier: ClassifierNetwork
    autoencoder: AutoencoderNetwork
    thresholds: dict[str, float]
    directions: dict[str, torch.Tensor] = field(default_factory=dict)
    size: int = MODEL_SIZE
    name: str = "bundled"
    file_hashes: dict[str, str] = field(default_factory=dict)
    #: {"absent"|"present": {finding: probability}}: where the "typical" strength aims (empty: not offered).
    typical: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Independent classifiers whose verdict on each counterfactual is reported (empty: none).
    auditors: list[AuditorModel] = field(default_factory=list)
    #: Orthonormal rows (k, latent size) spanning the training latents' principal subspace: the "manifold"
    #: method's steps stay in it (None: the model set has none, and the method steps freely).
    latent_basis: torch.Tensor | None = None
    #: Classifiers the "manifold" search steers along with the explained one (empty: it steers that one alone).
    companions: list[CompanionModel] = field(default_factory=list)
    #: Where every network and direction lives; the engine puts its tensors there too (see :meth:`to`).
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: Why the set is on the CPU although another device was asked for (a sentence to show the user), or None.
    device_warning: str | None = None

    def to(self, device: torch.device) -> ModelSet:
        """Move every network (auditors and companions included) and direction to ``device``, in place; returns the set.

        The classifier's and the autoencoder's weights go in channels-last memory order, which the counterfactual
        search's dozens of passes run about a tenth faster in on the CPU (Testing/benchmarks/README.md, "The wait a
        user feels"); the results agree with the default order to float rounding.
        """
        networks: list[ClassifierNetwork | AutoencoderNetwork] = [self.classifier, self.autoencoder]
        for network in networks:
            if isinstance(network, torch.nn.Module):
                network.to(memory_format=torch.channels_last)
        others = [auditor.network for auditor in self.auditors] + [companion.network for companion in self.companions]
        for network in networks + others:
            network.to(device)
        self.directions = {finding: tensor.to(device) for finding, tensor in self.directions.items()}
        if self.latent_basis is not None:
            self.latent_basis = self.latent_basis.to(device)
        self.device = device
        return self

    @property
    def findings(self) -> list[str]:
        return self.classifier.findings

    def identity(self) -> dict:
        """Name, sha256 of every file and decision thresholds: what an output records of the models."""
        return {"name": self.name, "sha256": self.file_hashes, "thresholds": dict(self.thresholds)}

    def index(self, finding: str) -> int:
        matches = [i for i, f in enumerate(self.findings) if f.lower() == finding.lower()]
        if not matches:
            raise ValueError(f"unknown finding {finding!r}; this model knows {', '.join(self.findings)}")
        return matches[0]
