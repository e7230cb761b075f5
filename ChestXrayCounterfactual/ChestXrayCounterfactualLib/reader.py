"""Read a radiograph as a radiologist's viewer shows it: DICOM (any transfer syntax pydicom with the
pylibjpeg/pyjpegls plugins decodes), PNG/JPEG (8/16 bit) and NRRD/NIfTI/MHA (via SimpleITK).

The result is a :class:`Radiograph`: the pixel values in the file's own units (modality LUT applied,
bone bright), the display window that maps them to [0, 1], and the pixel grid's geometry.

Rules, in the order a viewer applies them:

* Modality LUT (rescale slope/intercept or LUT) first, then the VOI: a VOI LUT sequence or a
  non-linear VOI function is applied and its output range becomes the window; a linear
  WindowCenter/WindowWidth becomes the window as is. Without any, 8-bit data is shown as stored
  (0-255) and deeper data is windowed to its 0.5-99.5 percentile range.
* MONOCHROME1 is inverted to "bone is bright" by mirroring the values inside their representable
  range, so the units stay the file's. We follow the header: a file that claims MONOCHROME1 but
  holds MONOCHROME2 pixels is shown inverted, exactly as a standards-following viewer shows it.
* Spacing: PixelSpacing, else ImagerPixelSpacing; missing or zero spacing falls back to 1 mm
  with a warning. Multi-frame objects give their first frame, with a warning. RGB is converted
  to grey (ITU-R BT.601 luma), with a warning.
* Images smaller than 64 px on a side, larger than 16384 px on a side or 100 megapixels, or with a
  single value everywhere, are refused. Sizes are checked on the header, before decoding.
"""

from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import (
    ConstantImageError,
    CorruptPixelDataError,
    ImageSizeError,
    InputError,
    MissingDecoderError,
    NoPixelDataError,
    NotAnImageError,
    UnsupportedImageError,
)

MIN_SIDE = 64
MAX_SIDE = 16384
MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
#: NRRD keys our own outputs carry, so an output read back in is displayed like its input.
WINDOW_KEY = "cxrcf_window"


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


def _grey(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _percentile_window(pixels: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(pixels, [0.5, 99.5])
    if high <= low:
        low, high = float(pixels.min()), float(pixels.max())
    return float(low), float(high)


def validate(name: object, radiograph: Radiograph) -> Radiograph:
    """Refuse what cannot be explained (size, non-finite or constant pixels); fix a missing window.

    Every way into the engine ends here: files through :func:`read_radiograph`, Slicer volumes
    through ``scene.radiograph_from_volume``.
    """
    pixels = radiograph.pixels
    check_size(name, *pixels.shape)
    if not np.isfinite(pixels).all():
        raise CorruptPixelDataError(name, "pixel data contains NaN or infinite values")
    if float(pixels.max()) == float(pixels.min()):
        raise ConstantImageError(
            name, f"every pixel has the value {float(pixels.min()):g}; there is no image to explain"
        )
    low, high = radiograph.window
    if not high > low:
        radiograph.window = _percentile_window(pixels)
    return radiograph


def _finish(path: object, radiograph: Radiograph) -> Radiograph:
    radiograph.source = str(path)
    return validate(path, radiograph)


def _sniff(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(132)
    name = path.name.lower()
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8"):
        return "image"
    if name.endswith(ITK_SUFFIXES) or head.startswith(b"NRRD") or head.startswith(b"ObjectType"):
        return "itk"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    return "dicom"  # DICOM without the preamble (raw data set) is still tried


def read_radiograph(path: str | Path) -> Radiograph:
    """Read one file into a :class:`Radiograph`, or raise an :class:`InputError` naming the reason."""
    path = Path(path)
    if not path.is_file():
        raise NotAnImageError(path, "no such file" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise NotAnImageError(path, "the file is empty")
    kind = _sniff(path)
    try:
        if kind == "image":
            return _finish(path, _read_image(path))
        if kind == "itk":
            return _finish(path, _read_itk(path))
        return _finish(path, _read_dicom(path))
    except InputError:
        raise
    except MemoryError:
        raise ImageSizeError(path, "the image does not fit in memory") from None
    except Exception as error:  # the reader's contract: our own error type, whatever the bytes are
        raise CorruptPixelDataError(path, f"the file is corrupt or malformed ({type(error).__name__})") from None


def _read_image(path: Path) -> Radiograph:
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
        raise NotAnImageError(path, "not DICOM and not an image format we read (PNG, JPEG, NRRD, NIfTI, MHA)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise CorruptPixelDataError(path, f"the image data is truncated or corrupt ({error})") from None
    window = _percentile_window(pixels) if deep else (0.0, 255.0)
    return Radiograph(
        pixels,
        window,
        metadata={"format": path.suffix.lower().lstrip("."), "spacing": "not stored in the file; 1 mm assumed"},
        warnings=notes,
    )


def _read_itk(path: Path) -> Radiograph:
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
        array = _grey(array)
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


def _decoder_problem(dataset) -> str | None:
    """Which package would decode this transfer syntax, if its decoder is missing."""
    from pydicom.pixels import get_decoder

    syntax = dataset.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"transfer syntax {syntax.name} ({syntax}) is not supported by any installed decoder"
    if not decoder.is_available:
        missing = (
            "; ".join(f"{name}: {deps}" for name, deps in decoder.missing_dependencies.items())
            if hasattr(decoder, "missing_dependencies")
            else ""
        )
        return (
            f"no decoder for {syntax.name} is installed (install pylibjpeg with pylibjpeg-libjpeg, "
            f"pylibjpeg-openjpeg or pyjpegls; {missing})"
        )
    return None


def _window_from_dataset(ds, pixels: np.ndarray) -> tuple[np.ndarray, tuple[float, float], str]:
    """Apply the VOI as a viewer would; return (pixels, window, how)."""
    from pydicom.pixels import apply_voi_lut

    function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    if "VOILUTSequence" in ds:
        out = apply_voi_lut(pixels, ds, index=0, prefer_lut=True).astype(np.float32)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return out, (0.0, float(2**bits - 1)), "VOI LUT sequence"
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center = ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter
        width = ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth
        center, width = float(center), float(width)
        if width > 0 and function == "LINEAR":
            return pixels, (center - width / 2, center + width / 2), "window centre/width"
        if width > 0:
            out = apply_voi_lut(pixels, ds, index=0).astype(np.float32)
            return out, (float(out.min()), float(out.max())), f"{function} VOI function"
    bits = int(ds.get("BitsStored", 8))
    if bits <= 8 and pixels.min() >= 0 and pixels.max() <= 255:
        return pixels, (0.0, 255.0), "8-bit data as stored"
    return pixels, _percentile_window(pixels), "0.5-99.5 percentile window"


def _representable_range(ds) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return float(ends[0]), float(ends[1])


def _read_dicom(path: Path) -> Radiograph:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=False)
    except InvalidDicomError:
        raise NotAnImageError(path, "not DICOM and not an image format we read (PNG, JPEG, NRRD, NIfTI, MHA)") from None
    except Exception as error:  # pydicom raises many types on a broken header
        raise CorruptPixelDataError(
            path, f"the DICOM header is truncated or corrupt ({type(error).__name__})"
        ) from None
    sop = ds.get("SOPClassUID")
    sop_name = getattr(sop, "name", None) or str(sop or "unknown SOP class")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise NoPixelDataError(path, f"DICOM object without pixel data ({sop_name}); it holds no image")
    notes: list[str] = []
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise CorruptPixelDataError(path, "the DICOM header has no valid Rows/Columns") from None
    check_size(path, rows, cols)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    known = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR")
    if photometric not in known:
        raise UnsupportedImageError(path, f"photometric interpretation {photometric or '(missing)'} is not handled")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        notes.append(f"multi-frame object with {frames} frames: the first frame is used")
    if "file_meta" in ds.__dict__ or hasattr(ds, "file_meta"):
        problem = _decoder_problem(ds) if "TransferSyntaxUID" in ds.file_meta else None
        if problem:
            raise MissingDecoderError(path, problem)
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            array = ds.pixel_array if frames == 1 else pydicom.pixels.pixel_array(ds, index=0)
            if photometric == "PALETTE COLOR":
                array = pydicom.pixels.apply_color_lut(array, ds)
    except MemoryError:
        raise
    except Exception as error:
        raise CorruptPixelDataError(
            path,
            f"the pixel data is truncated or cannot be decoded "
            f"({type(error).__name__}: {' '.join(str(error).split())[:160]})",
        ) from None
    if array.ndim == 3 and array.shape[-1] == 3:
        array = _grey(array.astype(np.float32))
        notes.append(f"{photometric} image converted to grey")
    if array.ndim != 2 or array.shape != (rows, cols):
        raise CorruptPixelDataError(path, f"decoded pixel data has shape {array.shape}, the header says {rows}x{cols}")
    pixels = (
        np.asarray(apply_modality_lut(array, ds), dtype=np.float32)
        if photometric.startswith("MONO")
        else array.astype(np.float32)
    )
    inverse_lut = str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    invert = photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and inverse_lut)
    pixels, window, how = _window_from_dataset(ds, pixels)
    if invert:
        low, high = _representable_range(ds) if how not in ("VOI LUT sequence",) else window
        if how.endswith("VOI function"):
            low, high = window
        pixels = (low + high) - pixels
        window = ((low + high) - window[1], (low + high) - window[0])
    spacing, spacing_source = _spacing(ds)
    if spacing_source is None:
        notes.append("no usable pixel spacing in the file (missing or zero): 1 mm assumed")
    metadata = {
        "format": "dicom",
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID.name) if hasattr(ds, "file_meta") else "",
        "modality": str(ds.get("Modality", "")),
        "photometric": photometric,
        "inverted_on_read": invert,
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "window_from": how,
        "spacing_from": spacing_source or "assumed",
        "sop_class": sop_name,
        "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
    }
    return Radiograph(pixels, window, spacing, metadata=metadata, warnings=notes)


def _spacing(ds) -> tuple[tuple[float, float], str | None]:
    """(column spacing, row spacing) in mm and the tag it came from; (1, 1) and None if unusable."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            row, col = float(value[0]), float(value[1])
        except (TypeError, ValueError, IndexError):
            continue
        if row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col):
            return (col, row), keyword
    return (1.0, 1.0), None
