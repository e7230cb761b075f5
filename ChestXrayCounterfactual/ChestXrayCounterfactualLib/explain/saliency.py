"""Saliency maps for one chosen finding per image, from captum's attribution classes, for a batch of images.

Every method returns a (size, size) map in [0, 1] for the requested class (never the arg-max
class): the positive evidence for that finding, zero on model-space padding, scaled by its 99th
percentile so maps of different methods read alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency

from ..modelset import ClassifierNetwork


def _smooth(attribution: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    radius = int(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=attribution.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = F.conv2d(attribution, kernel.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(out, kernel.view(1, 1, -1, 1), padding=(radius, 0))


def grad_cam(classifier: ClassifierNetwork, x: torch.Tensor, target: list[int]) -> torch.Tensor:
    cam = LayerGradCam(classifier, classifier.gradcam_layer)
    attribution = cam.attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(attribution, tuple(x.shape[-2:]), interpolate_mode="bilinear")


def integrated_gradients(classifier: ClassifierNetwork, x: torch.Tensor, target: list[int]) -> torch.Tensor:
    ig = IntegratedGradients(classifier)
    attribution = ig.attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=32, internal_batch_size=8)
    return _smooth(attribution.clamp_min(0))


def occlusion(classifier: ClassifierNetwork, x: torch.Tensor, target: list[int]) -> torch.Tensor:
    attribution = Occlusion(classifier).attribute(
        x,
        target=target,
        sliding_window_shapes=(1, 32, 32),
        strides=(1, 16, 16),
        baselines=0.0,
        perturbations_per_eval=8,
    )
    return attribution.clamp_min(0)


def smoothgrad(classifier: ClassifierNetwork, x: torch.Tensor, target: list[int]) -> torch.Tensor:
    """SmoothGrad, one image at a time from the same seed: an image's noise (and so its map) does not
    depend on the batch it is explained in.
    """
    maps = []
    for image, finding in zip(x, target, strict=True):
        torch.manual_seed(0)
        tunnel = NoiseTunnel(Saliency(classifier))
        attribution = tunnel.attribute(
            image[None], nt_type="smoothgrad", nt_samples=16, stdevs=0.05, target=finding, abs=True,
        )
        maps.append(attribution)
    return _smooth(torch.cat(maps))


#: The saliency methods by name (``methods.SALIENCY_METHODS``), one signature each: captum attribution of
#: logit ``target[i]`` for image ``i`` of a (B, 1, S, S) model-space batch, as (B, 1, S, S).
SALIENCIES: dict[str, Callable[[ClassifierNetwork, torch.Tensor, list[int]], torch.Tensor]] = {
    "grad-cam": grad_cam,
    "integrated-gradients": integrated_gradients,
    "occlusion": occlusion,
    "smoothgrad": smoothgrad,
}


def raw_attribution(classifier: ClassifierNetwork, x: torch.Tensor, target: list[int], method: str) -> torch.Tensor:
    """captum attribution of logit ``target[i]`` for image ``i`` of a (B, 1, S, S) model-space batch."""
    if method not in SALIENCIES:
        raise ValueError(f"unknown saliency method {method!r}; choose from {', '.join(SALIENCIES)}")
    return SALIENCIES[method](classifier, x, target)


def saliency_maps(
    classifier: ClassifierNetwork,
    x: torch.Tensor,
    target: list[int],
    method: str = "grad-cam",
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, S, S) saliency in [0, 1] of finding index ``target[i]`` for image ``i``; ``valid`` (B, S, S)
    masks out the padding. Each map is scaled by its own 99th percentile.
    """
    with torch.enable_grad():
        attribution = raw_attribution(classifier, x.detach().clone(), list(target), method)
    attribution = attribution.detach()[:, 0].float()
    if valid is not None:
        attribution = attribution * valid
    maps = []
    for one in attribution:
        scale = torch.quantile(one.flatten(), 0.99)
        if scale <= 0:
            scale = one.max()
        maps.append((one / scale).clamp(0, 1) if scale > 0 else torch.zeros_like(one))
    return torch.stack(maps)


def saliency_map(
    classifier: ClassifierNetwork,
    x: torch.Tensor,
    target: int,
    method: str = "grad-cam",
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """(S, S) saliency in [0, 1] for finding index ``target`` of one (1, 1, S, S) image."""
    return saliency_maps(classifier, x, [target], method, None if valid is None else valid[None])[0]
