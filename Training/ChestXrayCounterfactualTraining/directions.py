"""Global latent directions per finding, in the spirit of EigenFind ("CheXplaining in Style",
arXiv:2207.07553): eigenvectors instead of a coordinate-by-coordinate search.

For each finding, the gradients g_i of its logit w.r.t. the autoencoder latent on validation images
are stacked; the top right singular vectors of that matrix (eigenvectors of sum g g^T, the
directions along which the logit changes most on average) are the candidates. Each is oriented
so that moving along it raises the finding, then ranked by its measured effect: mean change of the
finding's logit after a fixed step, minus the mean absolute change of the other findings' logits.
"""

from __future__ import annotations

import torch

from ChestXrayCounterfactualLib.modelset import Autoencoder, Classifier


def latent_gradients(
    classifier: Classifier, autoencoder: Autoencoder, images: torch.Tensor, target: int, batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) gradients of logit ``target`` w.r.t. the latent, and the (N, D) latents themselves."""
    grads, latents = [], []
    for start in range(0, len(images), batch_size):
        with torch.no_grad():
            z = autoencoder.encode(images[start : start + batch_size])
        z.requires_grad_(True)
        classifier(autoencoder.decode(z))[:, target].sum().backward()
        grads.append(z.grad.flatten(1))
        latents.append(z.detach().flatten(1))
    return torch.cat(grads), torch.cat(latents)


@torch.no_grad()
def _effect(
    classifier: Classifier,
    autoencoder: Autoencoder,
    latents: torch.Tensor,
    base: torch.Tensor,
    direction: torch.Tensor,
    target: int,
    step: float,
    shape: tuple[int, ...],
) -> tuple[float, float]:
    """Mean change of the target logit, and mean |change| of the others, after a step along ``direction``."""
    scale = latents.norm(dim=1, keepdim=True)
    moved = classifier(autoencoder.decode((latents + step * scale * direction).view(-1, *shape)))
    delta = moved - base
    others = torch.ones(delta.shape[1], dtype=torch.bool)
    others[target] = False
    return float(delta[:, target].mean()), float(delta[:, others].abs().mean()) if others.any() else 0.0


def find_directions(
    classifier: Classifier,
    autoencoder: Autoencoder,
    images: torch.Tensor,
    findings: list[str],
    candidates: int = 8,
    keep: int = 4,
    step: float = 0.3,
    gradient_images: int = 128,
    effect_images: int = 32,
) -> tuple[dict[str, torch.Tensor], dict[str, list[dict]]]:
    """Directions per finding, (keep, C, H, W) each, best first; and the measured effect of each."""
    classifier.eval().requires_grad_(False)
    autoencoder.eval().requires_grad_(False)
    out, report = {}, {}
    for target, finding in enumerate(findings):
        grads, latents = latent_gradients(classifier, autoencoder, images[:gradient_images], target)
        shape = autoencoder.encode(images[:1]).shape[1:]
        with torch.no_grad():
            base = classifier(autoencoder.decode(latents[:effect_images].view(-1, *shape)))
        _, _, vh = torch.linalg.svd(grads, full_matrices=False)
        scored = []
        for v in vh[:candidates]:
            v = v if float((grads @ v).mean()) >= 0 else -v
            gain, spill = _effect(classifier, autoencoder, latents[:effect_images], base, v, target, step, shape)
            scored.append((gain - spill, gain, spill, v))
        scored.sort(key=lambda s: s[0], reverse=True)
        out[finding] = torch.stack([s[3] for s in scored[:keep]]).view(-1, *shape).contiguous()
        report[finding] = [{"logit_gain": round(s[1], 4), "other_logits_moved": round(s[2], 4)} for s in scored[:keep]]
    return out, report
