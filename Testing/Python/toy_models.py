"""Toy networks for the fast tests: a classifier and an autoencoder small and transparent enough that each
contract of the engine has a known answer (as captum's own tests use tiny hand-set models); no weights are loaded.

* ``QuadrantClassifier``: the first finding reads only the mean intensity of the top-left quadrant of model
  space, the second only the rest, so where saliency must point and how much change crosses a threshold are
  known in advance. Its Grad-CAM layer keeps one channel per finding, zero outside that finding's region.
* ``BlockAutoencoder``: the latent is the image's block means (a spatial latent, as the real one), the
  decoder upsamples them and adds a faint global leak, so a latent step is a local image step plus changes
  everywhere that are too small to see, which the engine's grey-level deadband must drop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ChestXrayCounterfactualLib.explain.counterfactual import MARGIN, LatentProblem
from ChestXrayCounterfactualLib.modelset import ModelSet

FINDINGS = ("Toy finding", "Toy other")
#: Model-space side of the toy model set: small enough that every pass costs microseconds.
SIZE = 32
#: Side of the image block that one latent cell holds.
BLOCK = 4


def quadrant_mask(size: int = SIZE) -> torch.Tensor:
    """(size, size) bool: the top-left quadrant, the only area the first finding reads."""
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[: size // 2, : size // 2] = True
    return mask


class RegionFeatures(nn.Module):
    """A 3x3 box blur (edges replicated) copied into one channel per region, zero outside that region: the layer
    Grad-CAM attributes to. A pooling, not a Conv2d: oneDNN's convolution costs ~30 ms a call on a busy 2-core CPU.
    """

    def __init__(self, masks: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("masks", masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return torch.relu(blurred) * self.masks


class QuadrantClassifier(nn.Module):
    """Logit of finding k = ``gain`` * (mean blurred intensity of region k - 0.5); region 0 is the top-left quadrant.

    It offers what the engine asks of ``models.Classifier``: ``findings``, ``forward`` (B, 1, S, S) -> (B, K)
    logits, and ``gradcam_layer``.
    """

    def __init__(self, size: int = SIZE, gain: float = 10.0) -> None:
        super().__init__()
        quadrant = quadrant_mask(size).float()
        masks = torch.stack([quadrant, 1 - quadrant])
        self.findings = list(FINDINGS)
        self.features = RegionFeatures(masks)
        self.register_buffer("area", masks.sum((1, 2)))
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(gain * torch.eye(2))
            self.head.bias.fill_(-gain / 2)
        self.eval().requires_grad_(False)

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).sum((2, 3)) / self.area)


class BlockAutoencoder(nn.Module):
    """Encoder: ``BLOCK`` x ``BLOCK`` block means; decoder: nearest upsampling plus ``leak`` x each latent's mean.

    It offers what the engine asks of ``models.Autoencoder``: ``encode``, ``decode`` and ``forward``.
    """

    def __init__(self, leak: float = 0.01) -> None:
        super().__init__()
        self.leak = leak
        self.eval().requires_grad_(False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, BLOCK)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return F.interpolate(z, scale_factor=BLOCK, mode="nearest") + self.leak * z.mean(dim=(1, 2, 3), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def toy_model_set(
    size: int = SIZE, threshold: float = 0.5, directions: dict[str, torch.Tensor] | None = None,
) -> ModelSet:
    """A ModelSet of the two toys, one decision ``threshold`` for both findings."""
    return ModelSet(
        QuadrantClassifier(size), BlockAutoencoder(), dict.fromkeys(FINDINGS, threshold), directions or {}, size, "toy",
    )


def toy_image(quadrant: float, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """(1, 1, size, size) model-space image: seeded texture in [0.2, 0.8], the top-left quadrant near ``quadrant``.

    The first finding's probability is set by ``quadrant``: 0.5 sits on the toy's 0.5 threshold.
    """
    noise = torch.rand((1, 1, size, size), generator=torch.Generator().manual_seed(seed))
    image = 0.2 + 0.6 * noise
    image[..., quadrant_mask(size)] = (quadrant + 0.1 * (noise[..., quadrant_mask(size)] - 0.5)).clamp(0, 1)
    return image


def toy_problem(
    models: ModelSet,
    x: torch.Tensor,
    sign: int,
    target: int = 0,
    threshold: float | None = None,
    margin: float = MARGIN,
) -> LatentProblem:
    """The LatentProblem the engine builds for ``x`` (no padding): latent, reconstruction and logits of the toys."""
    with torch.no_grad():
        latent = models.autoencoder.encode(x)
        reconstruction = models.autoencoder.decode(latent)
        logits = models.classifier(x)[0]
    threshold = models.thresholds[models.findings[target]] if threshold is None else threshold
    valid = torch.ones(x.shape[-2:])
    return LatentProblem(models, x, valid, latent, reconstruction, logits, target, threshold, sign, margin=margin)


def latent_direction(region: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """Unit latent direction (1, 1, size/BLOCK, size/BLOCK) brightening the image on ``region`` ((size, size) bool)."""
    cells = F.avg_pool2d(region.float()[None, None], BLOCK)
    return cells / cells.norm()
