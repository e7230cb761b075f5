"""Saliency on the toy classifier: every method gives a model-space map in [0, 1] for the finding asked for, and
the map lies where that finding looks (the toy's first finding reads only the top-left quadrant).
"""

from __future__ import annotations

import pytest
import torch

from ChestXrayCounterfactualLib.explain.geometry import ModelSpaceMap
from ChestXrayCounterfactualLib.methods import SALIENCY_METHODS
from ChestXrayCounterfactualLib.explain.saliency import saliency_map
from toy_models import QuadrantClassifier, quadrant_mask, toy_image

pytestmark = pytest.mark.fast

#: Model-space side for saliency: occlusion slides a 32-pixel window in 16-pixel strides, so 64 gives it 3x3 places.
SIZE = 64


@pytest.fixture(scope="module")
def classifier() -> QuadrantClassifier:
    return QuadrantClassifier(SIZE)


@pytest.fixture(scope="module")
def image(classifier) -> torch.Tensor:
    """A dim quadrant: the toy finding is unlikely, the other finding the more probable (the arg-max class)."""
    x = toy_image(0.3, SIZE)
    logits = classifier(x)[0]
    assert logits[1] > logits[0]
    return x


def share_on_quadrant(saliency: torch.Tensor) -> float:
    """Fraction of the map's total saliency on the top-left quadrant (a quarter of the area)."""
    return float(saliency[quadrant_mask(SIZE)].sum() / saliency.sum())


@pytest.mark.parametrize("method", SALIENCY_METHODS)
def test_every_method_gives_a_finite_unit_map_of_model_space_shape(classifier, image, method):
    """(S, S) float32, finite, in [0, 1], not all zero."""
    saliency = saliency_map(classifier, image, 0, method)
    assert saliency.shape == (SIZE, SIZE) and saliency.dtype == torch.float32
    assert bool(torch.isfinite(saliency).all())
    assert float(saliency.min()) >= 0 and float(saliency.max()) <= 1
    assert float(saliency.max()) > 0


@pytest.mark.parametrize("method", SALIENCY_METHODS)
def test_saliency_lies_where_the_chosen_finding_looks(classifier, image, method):
    """For the quadrant finding (not the arg-max class) most saliency is on the quadrant; for the other finding
    less than the quadrant's share of the area is.
    """
    assert share_on_quadrant(saliency_map(classifier, image, 0, method)) > 0.5
    assert share_on_quadrant(saliency_map(classifier, image, 1, method)) < 0.25


@pytest.mark.parametrize("method", SALIENCY_METHODS)
def test_saliency_is_zero_on_model_space_padding(classifier, image, method):
    """With a valid mask (a 32 x 64 image padded to a square) the map is zero on the padding rows."""
    valid = ModelSpaceMap(32, 64, SIZE).valid_mask()
    saliency = saliency_map(classifier, image, 0, method, valid.float())
    assert float(saliency[~valid].abs().max()) == 0
    assert float(saliency[valid].max()) > 0


def test_saliency_of_the_same_image_is_repeatable(classifier, image):
    """Given the seed, even the noisy method (smoothgrad) gives the same map twice."""
    maps = []
    for _ in range(2):
        torch.manual_seed(0)
        maps.append(saliency_map(classifier, image, 0, "smoothgrad"))
    assert torch.equal(*maps)


def test_unknown_method_is_refused(classifier, image):
    with pytest.raises(ValueError, match="unknown saliency method"):
        saliency_map(classifier, image, 0, "lime")
