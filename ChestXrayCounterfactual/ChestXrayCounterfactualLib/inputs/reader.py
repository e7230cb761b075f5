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

from pathlib import Path

from ..errors import (
    CorruptPixelDataError,
    ImageSizeError,
    InputError,
    NotAnImageError,
)
from .dicom import has_dicom_preamble, read_dicom
from .images import IMAGE_SUFFIXES, ITK_SUFFIXES, read_image, read_itk
from .radiograph import Radiograph, validate


def _finish(path: object, radiograph: Radiograph) -> Radiograph:
    radiograph.source = str(path)
    return validate(path, radiograph)


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
            return _finish(path, read_image(path))
        if kind == "itk":
            return _finish(path, read_itk(path))
        return _finish(path, read_dicom(path))
    except InputError:
        raise
    except MemoryError:
        raise ImageSizeError(path, "the image does not fit in memory") from None
    except Exception as error:  # the reader's contract: our own error type, whatever the bytes are
        raise CorruptPixelDataError(path, f"the file is corrupt or malformed ({type(error).__name__})") from None
