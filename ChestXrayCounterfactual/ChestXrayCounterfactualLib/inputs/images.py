"""PNG/JPEG (8/16 bit, through Pillow) and NRRD/NIfTI/MHA (through SimpleITK) files as radiographs; neither
records a spacing in PNG/JPEG, so 1 mm is assumed there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import (
    CorruptPixelDataError,
    NotAnImageError,
    UnsupportedImageError,
)
from .radiograph import NOT_READABLE, Radiograph, check_size, grey, percentile_window

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
#: NRRD keys our own outputs carry, so an output read back in is displayed like its input.
WINDOW_KEY = "cxrcf_window"


def read_image(path: Path) -> Radiograph:
    from PIL import Image, UnidentifiedImageError

    notes: list[str] = []
    try:
        with Image.open(path) as img:
            check_size(path, img.height, img.width)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                pixels = np.asarray(img, dtype=np.float32)
                deep = True
            else:
                if img.mode not in ("L", "P", "1"):
                    notes.append(f"{img.mode} image converted to grey")
                pixels = np.asarray(img.convert("L"), dtype=np.float32)
                deep = False
    except UnidentifiedImageError:
        raise NotAnImageError(path, NOT_READABLE) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise CorruptPixelDataError(path, f"the image data is truncated or corrupt ({error})") from None
    window = percentile_window(pixels) if deep else (0.0, 255.0)
    return Radiograph(
        pixels,
        window,
        metadata={"format": path.suffix.lower().lstrip("."), "spacing": "not stored in the file; 1 mm assumed"},
        warnings=notes,
    )


def read_itk(path: Path) -> Radiograph:
    import SimpleITK as sitk

    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size = reader.GetSize()
        check_size(path, size[1], size[0])
        image = reader.Execute()
    except RuntimeError as error:
        message = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise NotAnImageError(path, f"SimpleITK cannot read it ({message})") from None
    notes: list[str] = []
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if image.GetNumberOfComponentsPerPixel() in (3, 4):
        array = grey(array)
        notes.append("colour image converted to grey")
    if array.ndim == 3:
        if array.shape[0] > 1:
            notes.append(f"volume with {array.shape[0]} slices: the first slice is used")
        array = array[0]
    if array.ndim != 2:
        raise UnsupportedImageError(path, f"a {array.ndim}D image is not a radiograph")
    dim = image.GetDimension()
    spacing = image.GetSpacing()
    origin = tuple(image.GetOrigin()) + (0.0,) * (3 - dim)
    direction = np.eye(3)
    direction[:dim, :dim] = np.array(image.GetDirection()).reshape(dim, dim)
    window = (0.0, 0.0)
    if image.HasMetaDataKey(WINDOW_KEY):
        low, high = (float(v) for v in image.GetMetaData(WINDOW_KEY).split())
        window = (low, high)
    elif array.min() >= 0 and array.max() <= 255 and np.issubdtype(sitk.GetArrayViewFromImage(image).dtype, np.uint8):
        window = (0.0, 255.0)
    return Radiograph(
        array,
        window,
        (float(spacing[0]), float(spacing[1])),
        origin[:3],
        direction,
        metadata={"format": "itk"},
        warnings=notes,
    )
