"""The map between an image's own pixel grid and the square model space, and its exact inverse.

Model space is the original padded (never cropped) to a centred square, then resized to
``size`` x ``size``. Padding keeps every original pixel in view, so the inverse is exact: upsample
to the padded square and cut the padding off again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..modelset.interface import MODEL_SIZE


@dataclass(frozen=True)
class ModelSpaceMap:
    """How one ``rows`` x ``cols`` image sits in a ``size`` x ``size`` model-space square."""

    rows: int
    cols: int
    size: int = MODEL_SIZE

    @property
    def side(self) -> int:
        return max(self.rows, self.cols)

    @property
    def pad_top(self) -> int:
        return (self.side - self.rows) // 2

    @property
    def pad_left(self) -> int:
        return (self.side - self.cols) // 2

    def to_model(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(rows, cols) image -> (1, 1, size, size) float32 tensor: pad with 0, area-resize."""
        tensor = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
        square = torch.zeros((1, 1, self.side, self.side), dtype=torch.float32)
        square[..., self.pad_top : self.pad_top + self.rows, self.pad_left : self.pad_left + self.cols] = tensor
        if self.side == self.size:
            return square
        return F.interpolate(square, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)

    def to_original(self, model_image: np.ndarray | torch.Tensor) -> np.ndarray:
        """(size, size) model-space map -> (rows, cols) float32 array on the original grid."""
        tensor = torch.as_tensor(np.asarray(model_image, dtype=np.float32)).reshape(1, 1, self.size, self.size)
        square = (
            tensor
            if self.side == self.size
            else F.interpolate(tensor, size=(self.side, self.side), mode="bilinear", align_corners=False)
        )
        return (
            square[0, 0, self.pad_top : self.pad_top + self.rows, self.pad_left : self.pad_left + self.cols]
            .numpy()
            .copy()
        )

    def valid_mask(self) -> torch.Tensor:
        """(size, size) bool tensor: True where model space shows the image, False on the padding."""
        return self.to_model(np.ones((self.rows, self.cols), np.float32))[0, 0] > 0.5
