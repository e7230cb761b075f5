"""The bundled networks: a chest X-ray classifier and a convolutional autoencoder.

Both take one grey channel in model space: a square 224x224 image with intensities in [0, 1]
(bone bright). Each network carries its own normalisation, so every caller feeds the same tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

#: Mean and standard deviation the classifier subtracts/divides inside ``forward``.
CLASSIFIER_NORMALISATION = (0.5, 0.25)


class Classifier(nn.Module):
    """Multi-label chest X-ray classifier: a torchvision ResNet-18 with one input channel.

    ``forward`` returns one logit per finding; ``gradcam_layer`` is the last convolutional stage,
    the layer Grad-CAM attributes to.
    """

    mean: torch.Tensor  # buffers registered in __init__
    std: torch.Tensor

    def __init__(self, findings: list[str], arch: str = "resnet18") -> None:
        super().__init__()
        if arch != "resnet18":
            raise ValueError(f"unsupported classifier architecture {arch!r}")
        self.findings = list(findings)
        self.arch = arch
        net = torchvision.models.resnet18(num_classes=len(self.findings))
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.net = net
        mean, std = CLASSIFIER_NORMALISATION
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


#: Auditor architectures (families unrelated to the bundled classifier's ResNet, see ``Auditor``) and the
#: input resolution each is trained at.
AUDITOR_RESOLUTIONS = {"densenet-small": 128, "regnet_y_400mf": 128, "mobilenet_v3_small": 224, "shufflenet_v2": 160}
AUDITOR_ARCHITECTURES = tuple(AUDITOR_RESOLUTIONS)
#: Steering-companion architectures (unrelated to the classifier's and to every auditor's) and their resolution.
COMPANION_RESOLUTIONS = {"vgg-small": 128}
COMPANION_ARCHITECTURES = tuple(COMPANION_RESOLUTIONS)


class _VGGSmall(nn.Module):
    """A plain VGG-style network (3x3 convolutions, batch norm, max pooling; about 0.55 M weights): a family none of
    the bundled classifier's or auditors' architectures belongs to.
    """

    def __init__(self, outputs: int) -> None:
        super().__init__()
        def block(inputs: int, width: int) -> list[nn.Module]:
            return [nn.Conv2d(inputs, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]

        layers: list[nn.Module] = []
        previous = 3
        for width in (24, 48, 96, 192):
            layers += [*block(previous, width), nn.MaxPool2d(2)]
            previous = width
        self.features = nn.Sequential(*layers, *block(previous, previous))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(previous, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def _small_network(arch: str, outputs: int) -> nn.Module:
    if arch == "densenet-small":
        return torchvision.models.DenseNet(
            growth_rate=16, block_config=(4, 8, 12, 8), num_init_features=32, num_classes=outputs,
        )
    if arch == "regnet_y_400mf":
        return torchvision.models.regnet_y_400mf(num_classes=outputs)
    if arch == "mobilenet_v3_small":
        return torchvision.models.mobilenet_v3_small(num_classes=outputs)
    if arch == "shufflenet_v2":
        return torchvision.models.shufflenet_v2_x1_0(num_classes=outputs)
    return _VGGSmall(outputs)


class Auditor(nn.Module):
    """An independent classifier that judges counterfactuals it did not steer: another architecture
    (a compact DenseNet as in CheXNet, a RegNetY-400MF, a MobileNetV3-Small or a ShuffleNetV2), its own seed,
    and its own input resolution (model space is downsampled to ``resolution`` inside ``forward``), trained on
    the same training split.
    """

    mean: torch.Tensor
    std: torch.Tensor
    #: The architectures this kind of model may have, with their input resolutions.
    resolutions = AUDITOR_RESOLUTIONS

    def __init__(self, findings: list[str], arch: str, resolution: int | None = None) -> None:
        super().__init__()
        if arch not in self.resolutions:
            choices = ", ".join(self.resolutions)
            raise ValueError(f"unsupported {type(self).__name__.lower()} architecture {arch!r}; choose from {choices}")
        self.findings = list(findings)
        self.arch = arch
        self.resolution = resolution or self.resolutions[arch]
        self.net = _small_network(arch, len(self.findings))
        for module in self.net.modules():  # MobileNetV3's 0.01 lets batch statistics lag a short training run
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        mean, std = CLASSIFIER_NORMALISATION
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)

    @property
    def gradcam_layer(self) -> nn.Module:
        """The last convolutional stage (so an auditor can also be explained, as a ``ClassifierNetwork``)."""
        layers = {"regnet_y_400mf": "trunk_output", "shufflenet_v2": "conv5"}
        return getattr(self.net, layers.get(self.arch, "features"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.resolution, self.resolution), mode="area")
        return self.net(((x - self.mean) / self.std).expand(-1, 3, -1, -1))


class Companion(Auditor):
    """A steering companion: a small classifier the counterfactual search steers together with the explained one,
    so a change must lower both their logits. Trained like an auditor but on noisy images (Gaussian noise, see
    ``Training``), which gives a classifier smoother, more perceptually aligned input gradients (Santurkar et al.
    2019); its architecture is none of the auditors', and it never judges.
    """

    resolutions = COMPANION_RESOLUTIONS


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Autoencoder(nn.Module):
    """Convolutional autoencoder with a spatial latent (``latent_channels`` x 14 x 14 at 224 px).

    The latent keeps a coarse map of the image, so an edit of the latent stays near where it is
    made; the decoder ends in a sigmoid so reconstructions stay in model-space range [0, 1].
    """

    def __init__(self, latent_channels: int = 32, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.widths = tuple(widths)
        encoder: list[nn.Module] = [nn.Conv2d(1, widths[0], 3, padding=1)]
        previous = widths[0]
        for width in widths:
            encoder += [nn.Conv2d(previous, width, 4, stride=2, padding=1), _ResBlock(width)]
            previous = width
        encoder += [nn.GroupNorm(8, previous), nn.SiLU(), nn.Conv2d(previous, latent_channels, 1)]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [nn.Conv2d(latent_channels, widths[-1], 3, padding=1), _ResBlock(widths[-1])]
        previous = widths[-1]
        for width in reversed(widths[:-1]):
            decoder += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(previous, width, 3, padding=1),
                _ResBlock(width),
            ]
            previous = width
        decoder += [
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(previous, 16, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(16, 1, 3, padding=1),
            nn.Sigmoid(),
        ]
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
