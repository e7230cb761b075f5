"""Read a radiograph as a radiologist's viewer shows it: DICOM (any transfer syntax pydicom with the
pylibjpeg/pyjpegls plugins decodes; Part 10 files and raw data sets without preamble), PNG/JPEG (8/16 bit) and
NRRD/NIfTI/MHA (via SimpleITK).

The result is a :class:`Radiograph`: the pixel values in the file's own units (modality LUT applied,
bone bright), the display window that maps them to [0, 1], and the pixel grid's geometry.

Rules, in the order a viewer applies them:

* Modality LUT (rescale slope/intercept or LUT) first, then the VOI: a VOI LUT sequence or a
  SIGMOID VOI function is applied and its output range becomes the window; a LINEAR (or LINEAR_EXACT)
  WindowCenter/WindowWidth becomes the window with the standard's bounds (PS3.3 C.11.2.1.2.1). Without any,
  8-bit data is shown as stored (0-255) and deeper data is windowed to its 0.5-99.5 percentile range.
  Enhanced multi-frame objects give these (and the spacing) in their functional groups: the first frame's are used.
* MONOCHROME1 is inverted to "bone is bright" by mirroring the values inside their representable
  range, so the units stay the file's. We follow the header: a file that claims MONOCHROME1 but
  holds MONOCHROME2 pixels is shown inverted, exactly as a standards-following viewer shows it.
* Spacing: PixelSpacing, else ImagerPixelSpacing, else an ultrasound region's calibration in cm; missing or zero
  spacing falls back to 1 mm with a warning. Multi-frame objects give their first frame, with a warning. RGB is
  converted to grey (ITU-R BT.601 luma), with a warning.
* Images smaller than 64 px on a side, larger than 16384 px on a side or 100 megapixels, or with a
  single value everywhere, are refused. Sizes are checked on the header, before decoding. So are DICOMDIRs,
  objects without pixels, and objects whose pixels are not a picture of a patient (segmentations, dose grids).
* pydicom's warnings never reach the user as such: those that say something about the file become the
  reader's own sentences in :attr:`Radiograph.warnings`, the rest is dropped.
"""

from __future__ import annotations

import logging
import re
import struct
import warnings as _warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import (
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
NOT_READABLE = "not DICOM and not an image format we read (PNG, JPEG, NRRD, NIfTI, MHA)"

DICOM_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split(),
)
#: The transfer syntax of native pixel data, by pydicom's (implicit VR, little endian) reading of the data set.
NATIVE_SYNTAXES = {
    (True, True): "1.2.840.10008.1.2",  # Implicit VR Little Endian
    (False, True): "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    (False, False): "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
}
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR")
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Objects with pixels that are not a picture of a patient, by SOP class and by modality.
SEGMENTATION = "a DICOM Segmentation: labels drawn over another image"
RT_DOSE = "an RT Dose: a radiotherapy dose grid"
NOT_RADIOGRAPH_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": SEGMENTATION,
    "1.2.840.10008.5.1.4.1.1.481.2": RT_DOSE,
    "1.2.840.10008.5.1.4.1.1.30": "a Parametric Map: values computed from other images",
}
NOT_RADIOGRAPH_MODALITIES = {"SEG": SEGMENTATION, "RTDOSE": RT_DOSE}
#: Modalities of projection radiographs, or that say nothing of what the image is (OT, none): no warning.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "RG", "RF", "XA", "MG", "IO", "PX", "RTIMAGE", "OT", ""})
#: Functional group macros (PS3.3 C.7.6.16) holding the first frame's spacing, rescale and window.
FRAME_MACROS = (
    "PixelMeasuresSequence",
    "FramePixelDataPropertiesSequence",
    "PixelValueTransformationSequence",
    "FrameVOILUTSequence",
)
#: How the window was found when the VOI output (not the file's units) is what is shown.
VOI_OUTPUTS = ("VOI LUT sequence", "SIGMOID VOI function")
CM = 3  # PhysicalUnitsX/YDirection code for cm (PS3.3 C.8.5.5.1.15)
TRUNCATED = re.compile(r"End of file reached|fewer frames than expected|no JPEG EOI/EOC marker")
#: pydicom's warnings that tell a user something about their file, as the reader words them.
PYDICOM_WARNINGS = (
    (TRUNCATED, "the file or its pixel data ends early: the image may be incomplete"),
    (
        re.compile(r"'Photometric Interpretation' value is '([^']*)' however .* should be '([^']*)'"),
        "the header says the colours are {0} but the compressed image says {1}: the image's own is used",
    ),
    (
        re.compile(r"'Number of Frames' is invalid, assuming 1 frame"),
        "the header's number of frames is invalid: one frame is assumed",
    ),
    (
        re.compile(r"matches the expected number for uncompressed data"),
        "the compressed pixel data is as long as uncompressed data would be: its transfer syntax may be wrong",
    ),
)


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
            name, f"every pixel has the value {float(pixels.min()):g}; there is no image to explain",
        )
    low, high = radiograph.window
    if not high > low:
        radiograph.window = _percentile_window(pixels)
    return radiograph


def _finish(path: object, radiograph: Radiograph) -> Radiograph:
    radiograph.source = str(path)
    return validate(path, radiograph)


def has_dicom_preamble(head: bytes) -> bool:
    """Whether a file's first 132 bytes are a DICOM Part 10 preamble: 128 bytes, then ``DICM``."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (by its preamble, whatever its name: PACS exports name files
    ``IM000001`` or by UID) and not a media directory (``DICOMDIR``), which indexes images but is none.
    """
    if path.name.upper() == "DICOMDIR":
        return False
    try:
        with open(path, "rb") as handle:
            return has_dicom_preamble(handle.read(132))
    except OSError:
        return False


def _sniff(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(132)
    name = path.name.lower()
    if has_dicom_preamble(head):
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
        raise NotAnImageError(path, NOT_READABLE) from None
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


def _starts_like_a_data_set(head: bytes) -> bool:
    """Whether bytes without the Part 10 preamble start as a raw DICOM data set does (PS3.5 7.1): a group 0002 or
    0008 element, little or big endian, with an explicit VR or a plausible implicit length. Text, JSON, archives and
    other formats do not, and are refused without letting pydicom's ``force`` read garbage from them.
    """
    if len(head) < 8:
        return False
    for order in "<>":
        (group,) = struct.unpack(f"{order}H", head[:2])
        if group not in (0x0002, 0x0008):
            continue
        if head[4:6] in DICOM_VRS or (order == "<" and struct.unpack("<I", head[4:8])[0] < 0x10000):
            return True
    return False


def _open_dataset(path: Path):
    """The file's data set: a Part 10 file, or a raw data set (no preamble, no File Meta) whose encoding pydicom
    infers. A data set without a transfer syntax gets the one its native pixel data was read with, so it decodes.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import UID

    with open(path, "rb") as handle:
        head = handle.read(132)
    raw = head[128:132] != b"DICM"
    if raw and not _starts_like_a_data_set(head):
        raise NotAnImageError(path, NOT_READABLE)
    try:
        ds = pydicom.dcmread(path, force=raw)
    except InvalidDicomError:
        raise NotAnImageError(path, NOT_READABLE) from None
    except Exception as error:  # pydicom raises many types on a broken header
        raise CorruptPixelDataError(
            path, f"the DICOM header is truncated or corrupt ({type(error).__name__})",
        ) from None
    native = "PixelData" in ds and not ds["PixelData"].is_undefined_length
    if "TransferSyntaxUID" not in ds.file_meta and native and ds.original_encoding in NATIVE_SYNTAXES:
        ds.file_meta.TransferSyntaxUID = UID(NATIVE_SYNTAXES[ds.original_encoding])
    return ds


@contextmanager
def _pydicom_warnings() -> Iterator[list]:
    """Collect what pydicom warns (and logs) while a file is read, instead of letting it reach the user:
    :func:`_in_our_words` keeps what tells them something about their file, in the reader's sentences.
    """
    logger = logging.getLogger("pydicom")
    propagate, logger.propagate = logger.propagate, False
    try:
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            yield caught
    finally:
        logger.propagate = propagate


def _in_our_words(caught: list) -> list[str]:
    """The reader's sentences for the pydicom warnings that matter to a user, once each; the rest is dropped."""
    sentences: list[str] = []
    for warning in caught:
        for pattern, sentence in PYDICOM_WARNINGS:
            match = pattern.search(str(warning.message))
            if match:
                sentences.append(sentence.format(*match.groups()))
    return list(dict.fromkeys(sentences))


def _sop_class(ds):
    """The SOP Class UID, from the data set or else the File Meta (a DICOMDIR or a truncated file has only that)."""
    return ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")


def _sop_name(ds) -> str:
    sop = _sop_class(ds)
    return getattr(sop, "name", None) or str(sop or "unknown SOP class")


def _refuse_what_is_not_an_image(path: Path, ds, caught: list) -> None:
    """Refuse, each with its own sentence: a DICOMDIR, an object without pixels (cut short or not), and an object
    whose pixels are not a picture of a patient (segmentation, dose grid, parametric map).
    """
    sop = str(_sop_class(ds) or "")
    if sop == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise NoPixelDataError(
            path, "a DICOMDIR (a directory of a media's files), not an image: open the image files it lists instead",
        )
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        if any(TRUNCATED.search(str(warning.message)) for warning in caught):
            raise CorruptPixelDataError(
                path, f"the file is truncated: it ends before its data set is complete ({_sop_name(ds)}), "
                "so no image can be read from it",
            )
        raise NoPixelDataError(path, f"DICOM object without pixel data ({_sop_name(ds)}); it holds no image")
    what = NOT_RADIOGRAPH_SOP_CLASSES.get(sop) or NOT_RADIOGRAPH_MODALITIES.get(str(ds.get("Modality", "")).upper())
    if what:
        raise UnsupportedImageError(path, f"{what}, not a radiograph")


def _lift_functional_groups(ds) -> None:
    """Copy an enhanced multi-frame object's spacing, rescale and window for its first frame (shared groups, then
    that frame's own, which take precedence) to the top level, where the single-frame rules and pydicom's LUT
    functions read them.
    """
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(keyword)
        if not groups:
            continue
        for macro in FRAME_MACROS:
            items = groups[0].get(macro)
            if items:
                ds.update(items[0])


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
            "; ".join(decoder.missing_dependencies)  # pydicom 3: a list of "plugin - requires package" lines
            if hasattr(decoder, "missing_dependencies")
            else ""
        )
        return (
            f"no decoder for {syntax.name} is installed (install pylibjpeg with pylibjpeg-libjpeg, "
            f"pylibjpeg-openjpeg or pyjpegls; {missing})"
        )
    return None


def _check_image_header(path: Path, ds) -> tuple[int, int, str, int]:
    """(rows, columns, photometric interpretation, frames), after refusing what the header already rules out."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise CorruptPixelDataError(path, "the DICOM header has no valid Rows/Columns") from None
    check_size(path, rows, cols)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric not in PHOTOMETRICS:
        raise UnsupportedImageError(path, f"photometric interpretation {photometric or '(missing)'} is not handled")
    problem = _decoder_problem(ds) if "TransferSyntaxUID" in ds.file_meta else None
    if problem:
        raise MissingDecoderError(path, problem)
    return rows, cols, photometric, int(ds.get("NumberOfFrames", 1) or 1)


def _decode_first_frame(path: Path, ds, photometric: str, frames: int) -> np.ndarray:
    """The first frame's stored values (palette indices looked up as colours)."""
    import pydicom

    try:
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
    return array


def _read_dicom(path: Path) -> Radiograph:
    """The first frame of a DICOM image, refused early (before decoding) for what the header rules out."""
    with _pydicom_warnings() as caught:
        ds = _open_dataset(path)
        _refuse_what_is_not_an_image(path, ds, caught)
        _lift_functional_groups(ds)
        rows, cols, photometric, frames = _check_image_header(path, ds)
        notes = [f"multi-frame object with {frames} frames: the first frame is used"] if frames > 1 else []
        array = _decode_first_frame(path, ds, photometric, frames)
        if array.ndim == 3 and array.shape[-1] == 3:
            array = grey(array.astype(np.float32))
            notes.append(f"{photometric} image converted to grey")
        if array.ndim != 2 or array.shape != (rows, cols):
            raise CorruptPixelDataError(
                path, f"decoded pixel data has shape {array.shape}, the header says {rows}x{cols}",
            )
        radiograph = _radiograph(ds, array, photometric, notes)
    radiograph.warnings.extend(_in_our_words(caught))
    return radiograph


def _radiograph(ds, array: np.ndarray, photometric: str, notes: list[str]) -> Radiograph:
    """The grey first frame in the file's units (modality LUT applied), windowed and mirrored as a viewer shows it."""
    from pydicom.pixels import apply_modality_lut

    if photometric.startswith("MONO"):
        pixels, window, how = _window_from_dataset(ds, apply_modality_lut(array, ds), notes)
    else:
        pixels, window, how = _default_window(ds, array.astype(np.float32))
    inverse_lut = str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    invert = photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and inverse_lut)
    if invert:
        low, high = window if how in VOI_OUTPUTS else _representable_range(ds)
        pixels = (low + high) - pixels
        window = ((low + high) - window[1], (low + high) - window[0])
    spacing, spacing_source = _spacing(ds, notes)
    if spacing_source is None:
        notes.append("no usable pixel spacing in the file (missing or zero): 1 mm assumed")
    modality = str(ds.get("Modality", "")).upper()
    if modality not in PROJECTION_MODALITIES:
        notes.append(
            f"modality {modality} is not projection radiography: the classifiers were trained on chest radiographs",
        )
    syntax = ds.file_meta.get("TransferSyntaxUID")
    metadata = {
        "format": "dicom",
        "transfer_syntax": str(syntax.name) if syntax else "",
        "modality": str(ds.get("Modality", "")),
        "photometric": photometric,
        "inverted_on_read": invert,
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "window_from": how,
        "spacing_from": spacing_source or "assumed",
        "sop_class": _sop_name(ds),
        "sop_class_uid": str(_sop_class(ds) or ""),
        "view_position": str(ds.get("ViewPosition", "") or "").strip(),
        "body_part": str(ds.get("BodyPartExamined", "") or "").strip(),
        "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
    }
    return Radiograph(pixels, window, spacing, metadata=metadata, warnings=notes)


def _window_from_dataset(ds, values: np.ndarray, notes: list[str]) -> tuple[np.ndarray, tuple[float, float], str]:
    """Apply the VOI to the modality values as a viewer would (PS3.3 C.11.2); return (pixels, window, how).

    A VOI LUT or a SIGMOID function is applied (its output range becomes the window); a LINEAR or LINEAR_EXACT
    window keeps the pixels in the file's units and becomes the window, with the standard's bounds.
    """
    from pydicom.pixels import apply_voi_lut

    if ds.get("VOILUTSequence"):
        out = apply_voi_lut(_as_integers(values), ds, index=0, prefer_lut=True).astype(np.float32)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return out, (0.0, float(2**bits - 1)), "VOI LUT sequence"
    pixels = values.astype(np.float32)
    window = _file_window(ds, notes)
    if window is None:
        return _default_window(ds, pixels)
    center, width, function = window
    if function == "LINEAR":  # PS3.3 C.11.2.1.2.1
        return pixels, (center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2), "window centre/width"
    if function == "LINEAR_EXACT":  # PS3.3 C.11.2.1.3.2
        return pixels, (center - width / 2, center + width / 2), "window centre/width"
    out = apply_voi_lut(values, ds, index=0).astype(np.float32)
    return out, (float(out.min()), float(out.max())), f"{function} VOI function"


def _file_window(ds, notes: list[str]) -> tuple[float, float, str] | None:
    """The file's first (centre, width, VOI LUT function), or None when it has none or one that spans no range
    (a width under 1, or a LINEAR width of 1, which is a threshold).
    """
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").upper()
    try:
        center = float(ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter)
        width = float(ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth)
    except (TypeError, ValueError, IndexError):
        notes.append("the file's window centre/width is not a number: it is ignored")
        return None
    usable = {"LINEAR": width > 1, "LINEAR_EXACT": width > 0, "SIGMOID": width > 0}
    if not usable.get(function, False):
        notes.append(f"the file's window (centre {center:g}, width {width:g}, {function}) is not usable: it is ignored")
        return None
    return center, width, function


def _as_integers(values: np.ndarray) -> np.ndarray:
    """A VOI LUT is indexed by integer values (PS3.3 C.11.2.1.1), as pydicom expects: rescaled values rounded."""
    return values if np.issubdtype(values.dtype, np.integer) else np.rint(values).astype(np.int64)


def _default_window(ds, pixels: np.ndarray) -> tuple[np.ndarray, tuple[float, float], str]:
    """Without a VOI in the file: 8-bit data as stored, deeper data to its 0.5-99.5 percentile range."""
    bits = int(ds.get("BitsStored", 8))
    if bits <= 8 and pixels.min() >= 0 and pixels.max() <= 255:
        return pixels, (0.0, 255.0), "8-bit data as stored"
    return pixels, _percentile_window(pixels), "0.5-99.5 percentile window"


def _representable_range(ds) -> tuple[float, float]:
    """The modality values the header allows: the modality LUT's output range, else stored range rescaled."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return float(ends[0]), float(ends[1])


def _spacing(ds, notes: list[str]) -> tuple[tuple[float, float], str | None]:
    """(column spacing, row spacing) in mm and where it came from; (1, 1) and None if unusable."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        pair = _positive_pair(ds.get(keyword))
        if pair:
            return (pair[1], pair[0]), keyword
    regions = _ultrasound_spacings(ds)
    if regions:
        if len(set(regions)) > 1:
            notes.append("the ultrasound regions have different calibrations: the first region's spacing is used")
        return regions[0], "SequenceOfUltrasoundRegions"
    return (1.0, 1.0), None


def _positive_pair(value) -> tuple[float, float] | None:
    """Two positive finite numbers from a 2-valued attribute, or None."""
    try:
        first, second = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError):
        return None
    if first > 0 and second > 0 and np.isfinite(first) and np.isfinite(second):
        return first, second
    return None


def _ultrasound_spacings(ds) -> list[tuple[float, float]]:
    """(x, y) spacing in mm of each ultrasound region calibrated in cm on both axes (PS3.3 C.8.5.5.1.15)."""
    spacings = []
    for region in ds.get("SequenceOfUltrasoundRegions") or []:
        if region.get("PhysicalUnitsXDirection") == CM and region.get("PhysicalUnitsYDirection") == CM:
            pair = _positive_pair((region.get("PhysicalDeltaX"), region.get("PhysicalDeltaY")))
            if pair:
                spacings.append((pair[0] * 10.0, pair[1] * 10.0))
    return spacings
