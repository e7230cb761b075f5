"""Figures used by training, the model card and the benchmarks: AUC with bootstrap intervals,
Youden thresholds and SSIM. Small and numpy/torch only, so every caller measures the same way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); NaN if one class is absent."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_ci(
    labels: np.ndarray, scores: np.ndarray, statistic=roc_auc, n: int = 2000, seed: int = 0,
) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``statistic`` over resampled cases."""
    rng = np.random.default_rng(seed)
    labels, scores = np.asarray(labels), np.asarray(scores)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        value = statistic(labels[idx], scores[idx])
        if not np.isnan(value):
            values.append(value)
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def youden_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The probability threshold maximising sensitivity + specificity - 1 (Youden's J)."""
    labels = np.asarray(labels, bool)
    best_j, best_t = -1.0, 0.5
    for t in np.unique(probabilities):
        predicted = probabilities >= t
        j = predicted[labels].mean() + (~predicted[~labels]).mean() - 1
        if j > best_j:
            best_j, best_t = j, float(t)
    return best_t


def sensitivity_specificity(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> tuple[float, float]:
    labels = np.asarray(labels, bool)
    predicted = np.asarray(probabilities) >= threshold
    return float(predicted[labels].mean()), float((~predicted[~labels]).mean())


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor, reduce: bool = True) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5) of (B,1,H,W)
    images in [0, 1]; the per-image mean when ``reduce`` is False.
    """
    window = _gaussian_window().to(x)
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    sxx = F.conv2d(x * x, window) - mu_x**2
    syy = F.conv2d(y * y, window) - mu_y**2
    sxy = F.conv2d(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    per_image = ssim_map.flatten(1).mean(1)
    return per_image.mean() if reduce else per_image
