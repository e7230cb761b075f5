"""Input files of the kinds a hospital's archive holds, made from the bundled sample's pixels and header: CR
MONOCHROME1 without the anatomy attributes, DX For Presentation in JPEG 2000 without the DX modules' Type 1
attributes, DX For Processing, a Secondary Capture, a header without most Type 2 attributes, and a PNG.

They exist so that the DICOM outputs are checked against outside validators for every input kind: an object we
write must be valid on its own, whatever the input omitted. Each is a real DICOM file (or PNG) that our reader,
pydicom and the validators read like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from conftest import SAMPLE


def _sample() -> Dataset:
    ds = pydicom.dcmread(SAMPLE)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _set_class(ds: Dataset, sop_class: str, modality: str) -> None:
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = modality


def cr_monochrome1_sparse(ds: Dataset) -> Dataset:
    """CR stored MONOCHROME1 (pixels inverted, so it shows as the sample does), with no BodyPartExamined,
    ViewPosition or Laterality: a CR whose anatomy the modality never filled in.
    """
    ds.PixelData = (255 - ds.pixel_array).astype(np.uint8).tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    for keyword in ("BodyPartExamined", "ViewPosition", "Laterality"):
        ds.pop(keyword, None)
    return ds


def dx_jpeg2000_sparse(ds: Dataset) -> Dataset:
    """DX For Presentation, JPEG 2000 lossless, 12 bit, without the DX modules' Type 1 attributes
    (PresentationIntentType, ImageLaterality, PixelIntensityRelationship and its sign, the rescale,
    PresentationLUTShape, LossyImageCompression).
    """
    _set_class(ds, DigitalXRayImageStorageForPresentation, "DX")
    pixels = ds.pixel_array.astype(np.uint16) * 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg")
    return ds


def dx_for_processing(ds: Dataset) -> Dataset:
    """DX For Processing with every DX Type 1 attribute present, as a detector sends it before presentation."""
    _set_class(ds, DigitalXRayImageStorageForProcessing, "DX")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PROCESSING"
    ds.ImageLaterality = "U"
    ds.PatientOrientation = ["L", "F"]
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.DetectorType = "SCINTILLATOR"
    ds.BurnedInAnnotation = "NO"
    return ds


def secondary_capture(ds: Dataset) -> Dataset:
    """A Secondary Capture of the radiograph (as a film digitiser or a teaching file makes one)."""
    _set_class(ds, SecondaryCaptureImageStorage, "OT")
    ds.ConversionType = "DF"
    ds.pop("ImagerPixelSpacing", None)
    return ds


def cr_without_type2(ds: Dataset) -> Dataset:
    """CR whose header lacks most Type 2 attributes, patient name and ID among them."""
    for keyword in ("PatientName", "PatientID", "PatientSex", "SeriesNumber", "InstanceNumber", "StudyDescription"):
        ds.pop(keyword, None)
    return ds


#: Input kind -> how it is made from the sample; "png" and "sample" are handled by :func:`make_input`.
KINDS: dict[str, Callable[[Dataset], Dataset]] = {
    "cr-monochrome1-sparse": cr_monochrome1_sparse,
    "dx-jpeg2000-sparse": dx_jpeg2000_sparse,
    "dx-for-processing": dx_for_processing,
    "secondary-capture": secondary_capture,
    "cr-without-type2": cr_without_type2,
}


def make_input(kind: str, folder: Path) -> Path:
    """Write the input of ``kind`` (a :data:`KINDS` key or "png") into ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "png":
        from PIL import Image

        path = folder / "sample.png"
        Image.fromarray(pydicom.dcmread(SAMPLE).pixel_array.astype(np.uint8)).save(path)
        return path
    ds = KINDS[kind](_sample())
    if ds.file_meta.TransferSyntaxUID != JPEG2000Lossless:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"{kind}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
