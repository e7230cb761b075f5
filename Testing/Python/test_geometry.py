"""Model space and its inverse: padding keeps every pixel, the round trip returns the original grid."""

from __future__ import annotations

import numpy as np
import pytest

from ChestXrayCounterfactualLib.explain.geometry import ModelSpaceMap


@pytest.mark.parametrize("shape", [(1955, 1841), (169, 211), (1024, 1024), (300, 500)])
def test_round_trip_returns_the_original_grid(shape):
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    smooth = (np.sin(yy / rows * np.pi) * np.cos(xx / cols * np.pi) * 0.5 + 0.5).astype(np.float32)
    mapping = ModelSpaceMap(rows, cols)
    model = mapping.to_model(smooth)
    assert tuple(model.shape) == (1, 1, 224, 224)
    back = mapping.to_original(model[0, 0])
    assert back.shape == shape
    inner = (slice(rows // 20, -rows // 20), slice(cols // 20, -cols // 20))
    assert np.abs(back[inner] - smooth[inner]).max() < 0.02


def test_padding_is_centred_and_marked_invalid():
    mapping = ModelSpaceMap(100, 200)
    assert (mapping.side, mapping.pad_top, mapping.pad_left) == (200, 50, 0)
    valid = mapping.valid_mask()
    assert valid[112, 112] and not valid[5, 112] and not valid[-5, 112]
    assert abs(float(valid.float().mean()) - 0.5) < 0.02
