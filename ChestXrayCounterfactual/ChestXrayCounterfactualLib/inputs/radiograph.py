"""The radiograph every reader returns, and the checks every way into the engine passes: its size (on the header,
before decoding), finite and not constant pixels, and a display window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import (
    ConstantImageError,
    CorruptPixelDataError,
    ImageSizeError,
)

MIN_SIDE = 64
MAX_SIDE = 16384
MAX_PIXELS = 100_000_000
NOT_READABLE = "not DICOM and not an image format we read (PNG, JPEG, NRRD, NIfTI, MHA)"


@dataclass
class Radiograph:
    """A 2D radiograph: pixel values, how to display them, and where its pixels lie.

    ``pixels`` is float32 (rows, cols). ``window`` is the (low, high) pixel value shown as black and
    white. ``inverted`` is True when bright pixels mean less dense tissue (a MONOCHROME1 volume
    shown through an inverting display, as in Slicer); the reader itself always returns False.
    ``spacing`` is (column spacing, row spacing) in mm, ``origin`` and ``direction`` (3x3, columns
    are the i, j, k axes) are in LPS, as ITK and NRRD store them.
    """

    pixels: np.ndarray
    window: tuple[float, float]
    spacing: tuple[float, float] = (1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    inverted: bool = False
    source: str = ""
    metadata: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape

    def display(self) -> np.ndarray:
        """Pixel values mapped to [0, 1] display intensities, bone bright (the model's input)."""
        low, high = self.window
        shown = np.clip((self.pixels - low) / (high - low), 0.0, 1.0).astype(np.float32)
        return 1.0 - shown if self.inverted else shown

    def display_change_to_pixels(self, change: np.ndarray) -> np.ndarray:
        """A change of display intensity (in [-1, 1]) as a change of pixel value."""
        low, high = self.window
        return (change * (high - low) * (-1.0 if self.inverted else 1.0)).astype(np.float32)


def check_size(path: object, rows: int, cols: int) -> None:
    if min(rows, cols) < MIN_SIDE:
        raise ImageSizeError(path, f"image is {cols}x{rows} pixels; at least {MIN_SIDE} px per side is needed")
    if max(rows, cols) > MAX_SIDE or rows * cols > MAX_PIXELS:
        raise ImageSizeError(
            path,
            f"image is {cols}x{rows} pixels; the limit is {MAX_SIDE} px per side "
            f"and {MAX_PIXELS // 1_000_000} megapixels",
        )


def grey(rgb: np.ndarray) -> np.ndarray:
    """Grey values of colour pixels (ITU-R BT.601 luma; a fourth, alpha channel is ignored)."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def percentile_window(pixels: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(pixels, [0.5, 99.5])
    if high <= low:
        low, high = float(pixels.min()), float(pixels.max())
    return float(low), float(high)


def validate(name: object, radiograph: Radiograph) -> Radiograph:
    """Refuse what cannot be explained (size, non-finite or constant pixels); fix a missing window.

    Every way into the engine ends here: files through :func:`read_radiograph`, Slicer volumes
    through ``ChestXrayCounterfactualSlicer.volumes.radiograph_from_volume``.
    """
    pixels = radiograph.pixels
    check_size(name, *pixels.shape)
    if not np.isfinite(pixels).all():
        raise CorruptPixelDataError(name, "pixel data contains NaN or infinite values")
    if float(pixels.max()) == float(pixels.min()):
        raise ConstantImageError(
            name, f"every pixel has the value {float(pixels.min()):g}; there is no image to explain",
        )
    low, high = radiograph.window
    if not high > low:
        radiograph.window = percentile_window(pixels)
    return radiograph
