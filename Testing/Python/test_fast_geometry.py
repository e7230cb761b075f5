"""Model space and back, on small images: ``ModelSpaceMap`` keeps the shape, marks exactly the image as valid,
and ``visible_change_on_grid`` drops changes below one grey level so untouched pixels keep their values.
"""

from __future__ import annotations

import numpy as np
import pytest

from ChestXrayCounterfactualLib.explain.counterfactual import DEADBAND
from ChestXrayCounterfactualLib.explain.explanation import visible_change_on_grid
from ChestXrayCounterfactualLib.explain.geometry import ModelSpaceMap

pytestmark = pytest.mark.fast

#: (rows, cols, model size): wide and tall, downsampled and upsampled, even and odd padding, already square.
SHAPES = [(48, 64, 32), (45, 80, 32), (13, 29, 32), (100, 37, 64), (20, 28, 32), (7, 50, 224), (32, 32, 32)]


def smooth_image(rows: int, cols: int) -> np.ndarray:
    """A seeded, smoothly varying float32 image in [0, 1]."""
    phase = np.random.default_rng(0).uniform(0, np.pi, 2)
    yy, xx = np.mgrid[0:rows, 0:cols]
    return (0.5 + 0.4 * np.sin(yy / rows * np.pi + phase[0]) * np.cos(xx / cols * np.pi + phase[1])).astype(np.float32)


@pytest.mark.parametrize("rows, cols, size", SHAPES)
def test_to_model_and_back_keeps_the_shape(rows, cols, size):
    geometry = ModelSpaceMap(rows, cols, size)
    model = geometry.to_model(smooth_image(rows, cols))
    assert tuple(model.shape) == (1, 1, size, size)
    back = geometry.to_original(model[0, 0])
    assert back.shape == (rows, cols) and back.dtype == np.float32


def test_square_image_of_model_size_round_trips_exactly():
    """No padding, no resampling: the model-space image is the original, and everything is valid."""
    geometry = ModelSpaceMap(32, 32, 32)
    image = smooth_image(32, 32)
    np.testing.assert_array_equal(geometry.to_original(geometry.to_model(image)[0, 0]), image)
    assert bool(geometry.valid_mask().all())


@pytest.mark.parametrize("rows, cols, size", SHAPES)
def test_valid_mask_covers_exactly_the_image(rows, cols, size):
    """A model-space pixel is valid iff its centre falls on the image inside the padded square, never on padding."""
    geometry = ModelSpaceMap(rows, cols, size)
    centres = (np.arange(size) + 0.5) * geometry.side / size
    on_rows = (centres > geometry.pad_top) & (centres < geometry.pad_top + rows)
    on_cols = (centres > geometry.pad_left) & (centres < geometry.pad_left + cols)
    np.testing.assert_array_equal(geometry.valid_mask().numpy(), on_rows[:, None] & on_cols[None, :])


def test_padded_round_trip_returns_the_image_inside():
    """A non-square image upsampled into model space comes back to its own values, padding cut off again."""
    geometry = ModelSpaceMap(20, 28, 32)
    image = smooth_image(20, 28)
    back = geometry.to_original(geometry.to_model(image)[0, 0])
    np.testing.assert_allclose(back[2:-2, 2:-2], image[2:-2, 2:-2], atol=0.02)


def test_changes_below_one_grey_level_are_dropped_on_the_grid():
    """Below ``DEADBAND`` (either sign) a change is exactly 0; at or above it, it is kept as it is."""
    geometry = ModelSpaceMap(4, 4, 4)
    magnitudes = np.array([0.0, 0.3, 0.6, 0.99, 1.01, 2.0, 10.0, 100.0]) * DEADBAND
    change = np.concatenate([magnitudes, -magnitudes]).astype(np.float32).reshape(4, 4)
    visible = visible_change_on_grid(geometry, change)
    dropped = np.abs(change) < DEADBAND
    assert dropped.any() and (~dropped).any()
    assert np.all(visible[dropped] == 0)
    np.testing.assert_array_equal(visible[~dropped], change[~dropped])


def test_untouched_pixels_keep_their_values_through_resampling():
    """A local change resampled to a padded grid leaves the rest of the grid exactly 0 (no faint halo), and
    whatever survives is at least one grey level.
    """
    geometry = ModelSpaceMap(48, 64, 32)
    change = np.zeros((32, 32), np.float32)
    change[8:14, 4:12] = 0.2
    change += 0.5 * DEADBAND  # an invisible change everywhere, as a decoder leaves
    visible = visible_change_on_grid(geometry, change)
    assert np.all(visible[:, 32:] == 0) and np.all(visible[24:] == 0)
    assert visible[8:16, 12:20].min() > 0.1
    assert np.abs(visible[visible != 0]).min() >= DEADBAND
