"""Reference baselines, re-implemented from the papers' published settings, run on our models so
that the benchmark compares methods and not networks.

* ``seed_local_counterfactual``: the seed paper's local counterfactuals
  (florianjuengermann/local-counterfactuals, notebook XRV_Autoencoder.ipynb @1aa15f2): x0 = D(E(x)),
  mask M = 1[CAM > 0.5], target y* = f(x0) with the explained label set to 0;
  L(z) = mean[(D(z) - x0)^2 (1e5 (1 - M) + M)] + 1e3 MSE(sigmoid f(D(z)), y*); Adam lr 0.1, exactly
  200 steps, no early stop. The paper used pytorch-grad-cam's GradCAM++ on the last DenseNet stage;
  captum has no Grad-CAM++, so the mask here is captum's Grad-CAM of the same class at 0.5 (the one
  deviation, stated in the benchmark README).
* ``published_latent_shift``: Latent Shift as released (ieee8023/latentshift, latent_shift.py @7677be7;
  Cohen et al., arXiv:2102.09475): g = d sigmoid(f(D(z)))/dz at lambda = 0; lambda schedule
  0, -10, -21, -34, ... (lambda <- lambda - 10 + floor(lambda / 10)); stops when p rises, p < 0.05,
  p < p0 - 0.8, lambda <= -3000, or sum|x0 - x_lambda| > 5% sum|x0|; 10 frames on linspace(lambda_min, 0).
  The counterfactual is the frame at lambda_min.
"""

from __future__ import annotations

import math

import torch

from ChestXrayCounterfactualLib.modelset import ModelSet
from ChestXrayCounterfactualLib.explain.saliency import saliency_map


def seed_local_counterfactual(
    models: ModelSet, x: torch.Tensor, target: int, steps: int = 200,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(counterfactual image, reconstruction), both (1, 1, S, S)."""
    ae, f = models.autoencoder, models.classifier
    with torch.no_grad():
        z0 = ae.encode(x)
        x0 = ae.decode(z0)
        y_star = torch.sigmoid(f(x0))
        y_star[0, target] = 0.0
    mask = (saliency_map(f, x, target, "grad-cam") > 0.5).float()
    weights = 1e5 * (1 - mask) + mask
    z = z0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=0.1)
    with torch.enable_grad():
        for _ in range(steps):
            image = ae.decode(z)
            loss = ((image - x0) ** 2 * weights).mean() + 1e3 * torch.nn.functional.mse_loss(
                torch.sigmoid(f(image)), y_star,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return ae.decode(z), x0


def published_latent_shift(models: ModelSet, x: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(counterfactual image, reconstruction), both (1, 1, S, S)."""
    ae, f = models.autoencoder, models.classifier
    with torch.no_grad():
        z0 = ae.encode(x)
    z = z0.clone().requires_grad_(True)
    with torch.enable_grad():
        x0 = ae.decode(z)
        p0_t = torch.sigmoid(f(x0))[0, target]
        p0_t.backward()
    g = z.grad.detach()
    x0, p0 = x0.detach(), float(p0_t)
    total = float(x0.abs().sum())
    lam, last_p, lam_min = 0.0, p0, 0.0
    with torch.no_grad():
        while True:
            lam = lam - 10 + math.floor(lam / 10)
            if lam <= -3000:
                break
            image = ae.decode(z0 + lam * g)
            p = float(torch.sigmoid(f(image))[0, target])
            if p > last_p or float((x0 - image).abs().sum()) > 0.05 * total:
                break
            lam_min, last_p = lam, p
            if p < 0.05 or p < p0 - 0.8:
                break
        frames = [ae.decode(z0 + step * g) for step in torch.linspace(lam_min, 0, 10).tolist()]
    return frames[0], x0
