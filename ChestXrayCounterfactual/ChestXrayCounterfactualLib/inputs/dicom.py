"""DICOM files as radiographs: Part 10 files and raw data sets without preamble, in any transfer syntax pydicom
with the pylibjpeg/pyjpegls plugins decodes, read as a viewer shows them (the rules are in :mod:`.reader`), or
refused with one sentence: objects without pixels, pixels that are not a picture of a patient, undecodable data.
"""

from __future__ import annotations

import logging
import re
import struct
import warnings as _warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import (
    CorruptPixelDataError,
    MissingDecoderError,
    NoPixelDataError,
    NotAnImageError,
    UnsupportedImageError,
)
from .radiograph import NOT_READABLE, Radiograph, check_size, grey, percentile_window

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


def read_dicom(path: Path) -> Radiograph:
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
    return pixels, percentile_window(pixels), "0.5-99.5 percentile window"


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
