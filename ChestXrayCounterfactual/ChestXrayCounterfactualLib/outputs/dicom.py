"""DICOM outputs of an explanation: the counterfactual, the signed difference and the saliency as derived
images, and a Structured Report of the findings, each in a new series of the input's study.

Choices, and why:

* **Derived images in the input's own SOP class** (CR, DX or Secondary Capture), built with pydicom on
  highdicom's ``SOPClass`` base, not as highdicom Secondary Captures. Readers take the pixel spacing
  from class-specific tags (GDCM, and so Slicer, reads CR/DX spacing from ImagerPixelSpacing only and
  SC spacing from PixelSpacing), so keeping the class and copying PixelSpacing/ImagerPixelSpacing as
  the input has them puts the outputs on exactly the grid every reader gives the input. The
  counterfactual also keeps the input's encoding (bits stored, signedness, rescale, MONOCHROME1,
  presentation LUT shape): it has the input's precision and is displayed like it.
  DX allows neither signed pixels nor a rescale other than 1/0, so a DX input's difference and
  saliency are Secondary Captures (with PixelSpacing as our reader read it); so is everything made
  from a non-DICOM input or from an input of another class.
* **Values.** ``Explanation.counterfactual`` is in the reader's space: modality LUT applied and, for
  MONOCHROME1 (or an INVERSE presentation LUT shape), mirrored inside the representable range so
  that bone is bright. It is written with the input's photometric interpretation and mirrored back,
  so the reader's own mirroring returns it; rounding to stored values costs at most half a stored
  unit (times the rescale slope). The input's display window is written as a LINEAR WindowCenter/Width
  with the standard's bounds (PS3.3 C.11.2.1.2.1), so viewers and the reader show the counterfactual
  as they show the input. When the reader's values are not modality
  values (a VOI LUT sequence or a non-linear VOI function was applied, colour became grey, or the
  radiograph came from a Slicer volume) the encoding follows the values instead: the smallest
  integer type holding the input's pixels when they are integers, else 16 bit with a rescale.
* **Difference** (counterfactual minus input, in the bone-bright units of ``difference.nrrd``):
  signed 16-bit MONOCHROME2 with a rescale slope, so stored value x slope is the difference and a
  viewer shows added density bright, as the counterfactual does; its window is symmetric around 0.
* **Saliency is not a Parametric Map.** highdicom 0.28.2 cannot build one from a radiograph: it stops with
  "Unexpected mismatch between dimension index values in per-frames functional groups sequence and items in the
  dimension index sequence", because the source has no frame of reference. Given a made-up one (a new
  FrameOfReferenceUID, identity ImageOrientationPatient, ImagePositionPatient all zero) it builds a float32 map
  that dciodvfy accepts but for Laterality, so a valid one needs 3D patient geometry a projection radiograph
  does not have, and we do not invent geometry. Nor do GDCM of ITK 5.4 (SimpleITK) or Slicer's GDCM read a float
  Parametric Map. The saliency is an unsigned 16-bit derived image whose rescale slope 1/65535 makes
  the modality values the saliency (0..1), with a Real World Value Mapping (quantity DCM "Saliency")
  for viewers that use one; Slicer and OHIF show it as a plain image. It has no window: a LINEAR
  window spans whole units (PS3.3 C.11.2.1.2.1), and Slicer and OHIF window it from its 0..1 range.
* **Report**: a TID 1500 Measurement Report in a Comprehensive 3D SR (highdicom), the SOP class IHE AI Results
  (AIR) names for AI results; Slicer's TID 1500 plugin and highdicom read it. Per finding, one measurement group
  on the input image and one on the counterfactual image (TID 1501 with TID 300 rows: probability and decision
  threshold). The report's Qualitative Evaluations (TID 1500 rows 12-13) give each finding's decision on the
  input (present/absent) and whether the counterfactual flipped the explained finding. The procedure reported is
  (363679005, SCT, "Imaging procedure"), a member of CID 100 in every version PixelMed's validator and pydicom
  know. Method, saliency method, direction, model set name and the sha256 of every model file are the algorithm
  identification's parameters. Concepts have DCM or SNOMED codes where DICOM lists one; the rest use the private
  scheme 99CXRCF, declared in the report. PixelMed's DicomSRValidator finds no errors in it.
* **Every object valid on its own** (:mod:`.dicom_iod`): attributes the output's IOD requires and the input lacked
  are added (empty where Type 2), values the IOD forbids are not written, and a DX input without the acquisition
  attributes DX requires gives a Secondary Capture counterfactual; dciodvfy finds no errors in any output.
* **One series per object**: the report's modality differs from the images', and Slicer's DICOM
  loader would stack same-sized images of one series into a single volume.
* **anonymize** means what it means for ``explanation.json`` (no DICOM UIDs of the input): the
  outputs form a new study with new UIDs and a pseudonymous patient ID, carry none of the input's
  patient or study attributes and reference only one another, never the input's instances. Burned-in
  text in the pixels is not removed.
* A non-DICOM input (PNG, NRRD, ...) also gives a new study (Secondary Capture, PixelSpacing only when
  the file had a spacing); the returned notes say so.

Files are Explicit VR Little Endian, uncompressed, so pydicom, GDCM, DCMTK and every viewer read them
without a codec. Everything is flagged research-only (ImageComments, DerivationDescription).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from ..explain.explanation import Explanation
from ..inputs.radiograph import Radiograph
from . import dicom_iod

CR = str(ComputedRadiographyImageStorage)
DX_CLASSES = (str(DigitalXRayImageStorageForPresentation), str(DigitalXRayImageStorageForProcessing))
SC = str(SecondaryCaptureImageStorage)
#: What the input's header needs for the outputs to join its study and reference it.
LINK_KEYS = ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID")
MANUFACTURER = "ChestXrayCounterfactual"
NOT_FOR_DIAGNOSIS = "Computer-generated by ChestXrayCounterfactual: research and education only, not for diagnosis."
PRIVATE_SCHEME = "99CXRCF"
FILES = ("counterfactual.dcm", "difference.dcm", "saliency.dcm", "report.dcm")
SERIES_NUMBERS = dict(zip(FILES, (901, 902, 903, 904), strict=True))
#: Copied from the input into every derived image of its own class: the pixel grid and the anatomy.
SAME_CLASS_ATTRIBUTES = (
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PixelSpacingCalibrationType",
    "PixelSpacingCalibrationDescription",
    "EstimatedRadiographicMagnificationFactor",
    "PixelAspectRatio",
    "ViewPosition",
    "ImageLaterality",
    "AnatomicRegionSequence",
    "PresentationIntentType",
    "DetectorType",
    "AcquisitionContextSequence",
)
#: Copied into every derived image, whatever its class.
ANY_CLASS_ATTRIBUTES = (
    "BodyPartExamined",
    "Laterality",
    "PatientOrientation",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
)
#: Copied into the counterfactual only: what its pixel values mean, as for the input.
PIXEL_MEANING_ATTRIBUTES = (
    "PixelIntensityRelationship",
    "PixelIntensityRelationshipSign",
    "PresentationLUTShape",
    "RescaleType",
    "BurnedInAnnotation",
)
#: The explanation's direction as the derivation description says it.
PAST = {"remove": "removed", "add": "added"}
#: Findings of the NIH label set that DICOM's context groups code (SNOMED CT); others get private codes.
FINDING_CODES = {
    "Cardiomegaly": ("287272002", "Cardiomegaly"),
    "Effusion": ("60046008", "Pleural effusion"),
    "Pneumothorax": ("36118008", "Pneumothorax"),
    "Edema": ("19242006", "Pulmonary edema"),
    "Mass": ("4147007", "Mass"),
    "Fibrosis": ("112674009", "Fibrosis"),
}


@dataclass(frozen=True)
class PixelEncoding:
    """How values become stored pixels: the integer type, and the rescale value = stored x slope + intercept."""

    bits_allocated: int
    bits_stored: int
    signed: bool
    slope: float = 1.0
    intercept: float = 0.0
    rescale: bool = False  # whether RescaleSlope/RescaleIntercept are written

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(f"<{'i' if self.signed else 'u'}{self.bits_allocated // 8}")

    def stored_limits(self) -> tuple[int, int]:
        if self.signed:
            return -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1
        return 0, 2**self.bits_stored - 1

    def value_limits(self) -> tuple[float, float]:
        """The representable values, as the reader computes them to mirror MONOCHROME1."""
        ends = sorted(limit * self.slope + self.intercept for limit in self.stored_limits())
        return float(ends[0]), float(ends[1])

    def encode(self, values: np.ndarray, mirrored: bool) -> tuple[np.ndarray, int]:
        """Stored pixels for ``values`` (mirrored inside the representable range for MONOCHROME1), and how
        many had to be clipped to the stored range.
        """
        low, high = self.value_limits()
        target = (low + high) - values.astype(np.float64) if mirrored else values.astype(np.float64)
        stored = np.rint((target - self.intercept) / self.slope)
        smallest, largest = self.stored_limits()
        clipped = int(np.count_nonzero((stored < smallest) | (stored > largest)))
        return np.clip(stored, smallest, largest).astype(self.dtype), clipped


@dataclass
class DicomOutputs:
    """The DICOM objects of one explanation by file name, the study they belong to, and notes for the user
    (a new study, clipped pixels, a class change); ``files`` is filled in once they are written.
    """

    objects: Mapping[str, Dataset]
    study_instance_uid: str
    new_study: bool
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


@dataclass
class _Context:
    """What every object of one explanation shares: the input's header and whether the outputs join its study."""

    explanation: Explanation
    model_set: dict
    header: Dataset | None  # the input's DICOM header, for class and geometry (also when anonymized)
    linked: bool  # the outputs join the input's study and reference its instance
    reader_space: bool  # the explanation's arrays are our reader's values of ``header``
    study: Dataset  # patient and study attributes of every object
    notes: list[str]

    @property
    def linked_sources(self) -> list[Dataset]:
        """The input's header as the one source to reference when the outputs are linked to it, else none."""
        return [self.header] if self.linked and self.header is not None else []


@dataclass
class _ImagePlan:
    """One derived image before it is built: its values, how they are stored and where they come from."""

    name: str
    kind: str
    values: np.ndarray
    encoding: PixelEncoding
    sop_class: str
    window: tuple[float, float] | None
    description: str
    photometric: str = "MONOCHROME2"
    mirrored: bool = False
    copies_pixel_meaning: bool = False
    sources: list[Dataset] = field(default_factory=list)


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters, as DICOM's DS allows."""
    return format_number_as_ds(float(value))


def _ds_float(value: float) -> float:
    """``value`` as it reads back from the DS written for it, so rounding uses what readers will use."""
    return float(_ds(value))


def rescaled_encoding(low: float, high: float, *, signed: bool = False) -> PixelEncoding:
    """16 bit with a rescale covering [low, high] (symmetric around 0 when signed), one step of margin."""
    if signed:
        half = max(abs(low), abs(high)) or 1.0
        return PixelEncoding(16, 16, True, _ds_float(half / 32766), 0.0, rescale=True)
    slope = _ds_float(((high - low) or 1.0) / 65533)
    return PixelEncoding(16, 16, False, slope, _ds_float(low - slope), rescale=True)


def fitted_encoding(reference: np.ndarray, values: np.ndarray) -> PixelEncoding:
    """An encoding chosen from the values: the smallest integer type holding the input's pixels
    (``reference``) when they are integers, else 16 bit with a rescale covering both.
    """
    if np.array_equal(reference, np.rint(reference)):
        for bits, signed in ((8, False), (16, False), (16, True)):
            candidate = PixelEncoding(bits, bits, signed)
            low, high = candidate.value_limits()
            if low <= float(reference.min()) and float(reference.max()) <= high:
                return candidate
    return rescaled_encoding(
        min(float(reference.min()), float(values.min())), max(float(reference.max()), float(values.max())),
    )


def source_encoding(header: Dataset, radiograph: Radiograph) -> PixelEncoding | None:
    """The input's own encoding, when the reader's values are its modality values (so writing them back
    in it is exact up to rounding); None when a VOI LUT, a modality LUT table or colour intervened.
    """
    window_from = str(radiograph.metadata.get("window_from", ""))
    if window_from == "VOI LUT sequence" or window_from.endswith("VOI function"):
        return None
    photometric = str(header.get("PhotometricInterpretation", "")).upper()
    bits_allocated = int(header.get("BitsAllocated", 0) or 0)
    tables_or_frames = any(key in header for key in ("ModalityLUTSequence", "SharedFunctionalGroupsSequence"))
    if not photometric.startswith("MONOCHROME") or tables_or_frames or bits_allocated not in (8, 16):
        return None
    return PixelEncoding(
        bits_allocated,
        int(header.get("BitsStored", bits_allocated)),
        int(header.get("PixelRepresentation", 0)) == 1,
        float(header.get("RescaleSlope", 1) or 1),
        float(header.get("RescaleIntercept", 0) or 0),
        rescale="RescaleSlope" in header,
    )


def source_header(radiograph: Radiograph) -> Dataset | None:
    """The header of the DICOM file the radiograph came from (its path, or the file behind a Slicer
    volume), or None when it did not come from one.
    """
    for candidate in (radiograph.source, radiograph.metadata.get("source_file")):
        if not candidate or not Path(candidate).is_file():
            continue
        try:
            return pydicom.dcmread(candidate, stop_before_pixels=True)
        except Exception:  # whatever the file is, not being DICOM only means a new study
            continue
    return None


def _new_study(anonymized: bool) -> Dataset:
    """Patient and study attributes of a new study: new UID, pseudonymous patient ID, created now."""
    study = Dataset()
    study.StudyInstanceUID = hd.UID()
    study.PatientID = "CXRCF-" + hashlib.sha256(study.StudyInstanceUID.encode()).hexdigest()[:12].upper()
    study.PatientName = ""
    now = datetime.datetime.now()
    study.StudyDate = now.strftime("%Y%m%d")
    study.StudyTime = now.strftime("%H%M%S")
    study.StudyID = "CXRCF"
    study.StudyDescription = "ChestXrayCounterfactual explanation"
    if anonymized:
        study.PatientIdentityRemoved = "YES"
        study.DeidentificationMethod = f"{MANUFACTURER} anonymize: new UIDs, no input attributes"
    return study


def _patient_and_study(header: Dataset) -> Dataset:
    """The input's header as highdicom copies patient and study modules from it: those modules are the same
    in every image IOD, so it is looked up as Secondary Capture, which highdicom knows whatever the input's class.
    """
    reference = copy.deepcopy(header)
    reference.SOPClassUID = SC
    return reference


def _context(explanation: Explanation, model_set: dict, anonymize: bool) -> _Context:
    radiograph = explanation.radiograph
    header = source_header(radiograph)
    linkable = header is not None and all(key in header for key in LINK_KEYS)
    notes = []
    if header is None:
        notes.append("the input is not a DICOM file: the DICOM outputs form a new study")
    elif not linkable:
        notes.append("the input's DICOM header lacks its study or instance UIDs: the DICOM outputs form a new study")
    elif anonymize:
        notes.append("anonymized: the DICOM outputs form a new study (pseudonymous patient, no link to the input)")
    linked = linkable and not anonymize
    return _Context(
        explanation=explanation,
        model_set=model_set,
        header=header,
        linked=linked,
        reader_space=header is not None and radiograph.metadata.get("format") == "dicom",
        study=_patient_and_study(header) if linked and header is not None else _new_study(anonymized=anonymize),
        notes=notes,
    )


def _sop_class(context: _Context, keeps_encoding: bool) -> str:
    """The input's class where its IOD allows the encoding (DX: only the input's own, and only when the input has
    the acquisition attributes DX requires, see :func:`dicom_iod.dx_gaps`), else Secondary Capture.
    """
    header = context.header
    input_class = str(header.get("SOPClassUID", SC)) if header is not None else SC
    if input_class in (CR, SC):
        return input_class
    if input_class in DX_CLASSES and keeps_encoding and header is not None and not dicom_iod.dx_gaps(header):
        return input_class
    return SC


def _photometric(context: _Context) -> tuple[str, bool]:
    """The counterfactual's photometric interpretation, and whether its values are mirrored as the reader
    mirrored the input's (MONOCHROME1, or an INVERSE presentation LUT shape that is copied with it). A
    Slicer volume shown inverted holds MONOCHROME1 values as they are.
    """
    radiograph = context.explanation.radiograph
    if not context.reader_space:
        return ("MONOCHROME1" if radiograph.inverted else "MONOCHROME2"), False
    photometric = "MONOCHROME1" if radiograph.metadata.get("photometric") == "MONOCHROME1" else "MONOCHROME2"
    return photometric, bool(radiograph.metadata.get("inverted_on_read"))


def _counterfactual_plan(context: _Context) -> _ImagePlan:
    explanation = context.explanation
    radiograph = explanation.radiograph
    encoding = (
        source_encoding(context.header, radiograph) if context.reader_space and context.header is not None else None
    )
    photometric, mirrored = _photometric(context)
    verdict = "flipped" if explanation.flipped else "not flipped"
    return _ImagePlan(
        name="counterfactual.dcm",
        kind="COUNTERFACTUAL",
        values=explanation.counterfactual,
        encoding=encoding or fitted_encoding(radiograph.pixels, explanation.counterfactual),
        sop_class=_sop_class(context, keeps_encoding=encoding is not None),
        window=radiograph.window,
        description=(
            f"Counterfactual ({explanation.method}): {explanation.finding} {PAST[explanation.direction]}, "
            f"p {explanation.p_original:.3f} -> {explanation.p_counterfactual:.3f} at threshold "
            f"{explanation.threshold:.3f}, {verdict}; model set {context.model_set['name']}. "
            "Computer-generated, not an acquired image."
        ),
        photometric=photometric,
        mirrored=mirrored,
        copies_pixel_meaning=context.reader_space and photometric.startswith("MONOCHROME"),
        sources=context.linked_sources,
    )


def _difference_plan(context: _Context, counterfactual: Dataset) -> _ImagePlan:
    difference = context.explanation.difference
    half = float(np.abs(difference).max()) or 1.0
    return _ImagePlan(
        name="difference.dcm",
        kind="DIFFERENCE",
        values=difference,
        encoding=rescaled_encoding(float(difference.min()), float(difference.max()), signed=True),
        sop_class=_sop_class(context, keeps_encoding=False),
        window=(-half, half),
        description=(
            "Counterfactual minus input, in the input's pixel units with bone bright: positive where the "
            "counterfactual adds density."
        ),
        sources=[*context.linked_sources, counterfactual],
    )


def _saliency_plan(context: _Context) -> _ImagePlan:
    explanation = context.explanation
    return _ImagePlan(
        name="saliency.dcm",
        kind="SALIENCY",
        values=explanation.saliency,
        encoding=PixelEncoding(16, 16, False, _ds_float(1 / 65535), 0.0, rescale=True),
        sop_class=_sop_class(context, keeps_encoding=False),
        window=None,
        description=(
            f"{explanation.saliency_method} saliency for {explanation.finding}, 0 to 1 "
            "(rescale slope and real world value mapping give the saliency)."
        ),
        sources=context.linked_sources,
    )


def _series_description(explanation: Explanation, name: str) -> str:
    return {
        "counterfactual.dcm": f"Counterfactual {explanation.method}: {explanation.direction} {explanation.finding}",
        "difference.dcm": f"Counterfactual difference: {explanation.finding}",
        "saliency.dcm": f"Saliency {explanation.saliency_method}: {explanation.finding}",
        "report.dcm": f"Findings and counterfactual report: {explanation.finding}",
    }[name][:64]


def _instance(context: _Context, name: str, sop_class: str) -> hd.SOPClass:
    """An empty instance of ``sop_class`` in a new series of the outputs' study, patient and study filled in."""
    header = context.header
    same_class = header is not None and str(header.get("SOPClassUID", "")) == sop_class
    instance = hd.SOPClass(
        study_instance_uid=context.study.StudyInstanceUID,
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBERS[name],
        sop_instance_uid=hd.UID(),
        sop_class_uid=sop_class,
        instance_number=1,
        modality=str(header.get("Modality", "OT")) if same_class and header is not None else "OT",
        manufacturer=MANUFACTURER,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=_series_description(context.explanation, name),
        manufacturer_model_name=str(context.model_set["name"])[:64],
    )
    if context.linked and header is not None and "SpecificCharacterSet" in header:
        instance.SpecificCharacterSet = header.SpecificCharacterSet  # the copied patient and study text's
    _apply_study(instance, context)
    return instance


def _apply_study(instance: hd.SOPClass, context: _Context) -> None:
    """Give an object the outputs' patient and study: the input's modules unchanged, or the new study's."""
    if context.linked:
        instance.copy_patient_and_study_information(context.study)
    else:
        instance.update(context.study)


def _copy_attributes(instance: Dataset, header: Dataset | None, keywords: tuple[str, ...]) -> None:
    for keyword in keywords:
        if header is not None and keyword in header:
            instance[keyword] = copy.deepcopy(header[keyword])


def _known_spacing(radiograph: Radiograph) -> tuple[float, float] | None:
    """(column, row) spacing when the input's file gave one; None when the reader assumed 1 mm."""
    if radiograph.metadata.get("spacing_from") == "assumed" or "spacing" in radiograph.metadata:
        return None
    return radiograph.spacing


def _set_geometry(instance: Dataset, context: _Context, plan: _ImagePlan) -> None:
    """The input's pixel grid and anatomy, in the tags of the instance's class."""
    header = context.header
    _copy_attributes(instance, header, ANY_CLASS_ATTRIBUTES)
    if "PatientOrientation" not in instance:
        instance.PatientOrientation = ""
    if header is not None and str(header.get("SOPClassUID", "")) == plan.sop_class:
        _copy_attributes(instance, header, SAME_CLASS_ATTRIBUTES)
        return
    spacing = _known_spacing(context.explanation.radiograph)
    if spacing is not None:
        instance.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
    if plan.sop_class == SC:
        instance.ConversionType = "WSD"


def _file_window(plan: _ImagePlan, window: tuple[float, float]) -> tuple[float, float]:
    """The LINEAR WindowCenter/Width whose bounds (PS3.3 C.11.2.1.2.1) are ``window`` (the plan's), mirrored back
    for MONOCHROME1, so viewers and the reader show the values in that window.
    """
    low, high = window
    if plan.mirrored:
        first, last = plan.encoding.value_limits()
        low, high = first + last - high, first + last - low
    return (low + high + 1) / 2, high - low + 1


def _set_pixels(instance: Dataset, plan: _ImagePlan) -> int:
    """Image Pixel, Modality LUT and VOI LUT attributes and the pixel data; returns the clipped pixel count."""
    encoding = plan.encoding
    stored, clipped = encoding.encode(plan.values, plan.mirrored)
    instance.SamplesPerPixel = 1
    instance.PhotometricInterpretation = plan.photometric
    instance.Rows, instance.Columns = (int(n) for n in stored.shape)
    instance.BitsAllocated = encoding.bits_allocated
    instance.BitsStored = encoding.bits_stored
    instance.HighBit = encoding.bits_stored - 1
    instance.PixelRepresentation = int(encoding.signed)
    if encoding.rescale:
        instance.RescaleIntercept = _ds(encoding.intercept)
        instance.RescaleSlope = _ds(encoding.slope)
        if "RescaleType" not in instance:
            instance.RescaleType = "US"
    if plan.window is not None:
        center, width = _file_window(plan, plan.window)
        instance.WindowCenter = _ds(center)
        instance.WindowWidth = _ds(width)
    instance.PixelData = np.ascontiguousarray(stored).tobytes()
    return clipped


def _source_item(source: Dataset) -> Dataset:
    """A SourceImageSequence item: the image this one was computed from."""
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    purpose = Dataset()
    code = codes.DCM.SourceImageForImageProcessingOperation
    purpose.CodeValue, purpose.CodingSchemeDesignator = code.value, code.scheme_designator
    purpose.CodeMeaning = code.meaning
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def _set_derivation(instance: Dataset, plan: _ImagePlan) -> None:
    instance.ImageType = ["DERIVED", "SECONDARY", plan.kind]
    instance.DerivationDescription = plan.description
    instance.ImageComments = NOT_FOR_DIAGNOSIS
    if plan.sources:
        instance.SourceImageSequence = [_source_item(source) for source in plan.sources]
    if "BurnedInAnnotation" not in instance:
        instance.BurnedInAnnotation = "NO"


def _saliency_mapping(instance: Dataset, plan: _ImagePlan) -> None:
    """A Real World Value Mapping from stored values to saliency, for viewers that read one."""
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="SALIENCY",
        lut_explanation=plan.description[:64],
        unit=codes.UCUM.NoUnits,
        value_range=(0, 65535),
        slope=plan.encoding.slope,
        intercept=0,
        quantity_definition=codes.DCM.Saliency,
    )
    instance.RealWorldValueMappingSequence = [mapping]


def _image(context: _Context, plan: _ImagePlan) -> hd.SOPClass:
    """Build one derived image from its plan."""
    instance = _instance(context, plan.name, plan.sop_class)
    _set_geometry(instance, context, plan)
    if plan.copies_pixel_meaning:
        _copy_attributes(instance, context.header, PIXEL_MEANING_ATTRIBUTES)
    clipped = _set_pixels(instance, plan)
    if clipped:
        context.notes.append(f"{plan.name}: {clipped} pixels outside the stored range were clipped")
    _set_derivation(instance, plan)
    if plan.kind == "SALIENCY":
        _saliency_mapping(instance, plan)
    dicom_iod.complete(instance, context.header)
    header_class = str(context.header.get("SOPClassUID", "")) if context.header is not None else ""
    if header_class and plan.sop_class != header_class:
        gaps = dicom_iod.dx_gaps(context.header) if header_class in DX_CLASSES and context.header is not None else []
        reason = "the input's SOP class cannot hold its pixels"
        if gaps:
            reason = f"the input lacks DX attributes ({', '.join(gaps)})"
        context.notes.append(f"{plan.name} is a Secondary Capture: {reason}")
    return instance


def _code(value: str, scheme: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _finding_code(finding: str) -> hd.sr.CodedConcept:
    """SNOMED CT where DICOM codes the finding, else a private code whose meaning is the model's label."""
    if finding in FINDING_CODES:
        value, meaning = FINDING_CODES[finding]
        return _code(value, "SCT", meaning)
    return _code(finding[:16], PRIVATE_SCHEME, finding[:64])


def _algorithm(explanation: Explanation, model_set: dict) -> hd.sr.AlgorithmIdentification:
    parameters = [
        f"explained finding: {explanation.finding}",
        f"counterfactual method: {explanation.method}",
        f"direction: {explanation.direction}",
        f"saliency method: {explanation.saliency_method}",
        *(f"sha256 {part}: {digest}" for part, digest in model_set.get("sha256", {}).items()),
    ]
    return hd.sr.AlgorithmIdentification(name=MANUFACTURER, version=str(model_set["name"]), parameters=parameters)


def _finding_group(
    finding: str,
    probability: float,
    threshold: float | None,
    where: str,
    sources: list[Dataset],
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group: a finding's probability on one image and its decision threshold (TID 300 rows)."""
    measurements = [hd.sr.Measurement(name=codes.DCM.Probability, value=probability, unit=codes.UCUM.NoUnits)]
    if threshold is not None:
        measurements.append(hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=threshold, unit=codes.UCUM.NoUnits))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier=f"{finding} on the {where}"[:64]),
        finding_type=_finding_code(finding),
        algorithm_id=algorithm,
        measurements=measurements,
        source_images=[hd.sr.SourceImageForMeasurementGroup(s.SOPClassUID, s.SOPInstanceUID) for s in sources] or None,
    )


def _thresholds(context: _Context) -> dict[str, float]:
    explanation = context.explanation
    return {**context.model_set.get("thresholds", {}), explanation.finding: explanation.threshold}


def _groups(context: _Context, counterfactual: Dataset) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """One group per finding on the input, one per finding on the counterfactual."""
    explanation = context.explanation
    algorithm = _algorithm(explanation, context.model_set)
    thresholds = _thresholds(context)
    on_input = context.linked_sources
    groups = [
        _finding_group(f, p, thresholds.get(f), "input image", on_input, algorithm)
        for f, p in explanation.probabilities.items()
    ]
    for finding, probability in explanation.counterfactual_probabilities.items():
        where = "counterfactual (explained)" if finding == explanation.finding else "counterfactual"
        groups.append(_finding_group(finding, probability, thresholds.get(finding), where, [counterfactual], algorithm))
    return groups


def _qualitative_evaluations(context: _Context) -> hd.sr.ContainerContentItem:
    """TID 1500 rows 12-13, the report's Qualitative Evaluations: each finding's decision on the input image
    (present or absent at its threshold) and whether the counterfactual flipped the explained finding's decision.

    They sit here, not in the TID 1501 groups, because the templates PixelMed's validator checks have no
    qualitative row in TID 1501; the counterfactual's decisions follow from its groups' probability and threshold.
    """
    explanation = context.explanation
    thresholds = _thresholds(context)
    items = [
        hd.sr.CodeContentItem(
            name=_finding_code(finding),
            value=codes.SCT.Present if probability >= thresholds[finding] else codes.SCT.Absent,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        for finding, probability in explanation.probabilities.items()
        if finding in thresholds
    ]
    items.append(
        hd.sr.CodeContentItem(
            name=_code("FLIPPED", PRIVATE_SCHEME, "Decision flipped by the counterfactual"),
            value=codes.SCT.Yes if explanation.flipped else codes.SCT.No,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
    )
    container = hd.sr.ContainerContentItem(
        name=_code("C0034375", "UMLS", "Qualitative Evaluations"),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _observer(model_set: dict) -> hd.sr.ObservationContext:
    """The device observer: this software with this model set (a UID derived from both, so it is stable)."""
    name = str(model_set["name"])
    uid = generate_uid(prefix=None, entropy_srcs=[MANUFACTURER, name, *model_set.get("sha256", {}).values()])
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=uid, name=MANUFACTURER, model_name=name[:64])
    observer = hd.sr.ObserverContext(observer_type=codes.cid270.Device, observer_identifying_attributes=device)
    return hd.sr.ObservationContext(observer_device_context=observer)


def _report(context: _Context, images: Sequence[Dataset]) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR (TID 1500) of the findings and the counterfactual, referencing the images: the SOP
    class IHE AI Results names for AI results; it holds everything Comprehensive SR does.
    """
    content = hd.sr.MeasurementReport(
        observation_context=_observer(context.model_set),
        procedure_reported=codes.cid100.ImagingProcedure,
        imaging_measurements=_groups(context, images[0]),
    )
    content[0].ContentSequence.append(_qualitative_evaluations(context))
    scheme = CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME, name=f"{MANUFACTURER} concepts", responsible_organization=MANUFACTURER,
    )
    with warnings.catch_warnings():  # highdicom doubts one-component patient names; we copy the input's as it is
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        report = hd.sr.Comprehensive3DSR(
            evidence=[*images, *context.linked_sources],
            content=content[0],
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBERS["report.dcm"],
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=True,
            series_description=_series_description(context.explanation, "report.dcm"),
            coding_schemes=[scheme],
        )
    _apply_study(report, context)
    return report


def build_dicom(explanation: Explanation, *, anonymize: bool = False) -> DicomOutputs:
    """The counterfactual, difference and saliency images and the report, in memory.

    The model set is named as the explanation records it (``explanation.model_set``: name, sha256 of every
    file, thresholds, so the report gives every finding's decision).
    """
    context = _context(explanation, explanation.model_set, anonymize)
    counterfactual = _image(context, _counterfactual_plan(context))
    difference = _image(context, _difference_plan(context, counterfactual))
    saliency = _image(context, _saliency_plan(context))
    images = [counterfactual, difference, saliency]
    objects = dict(zip(FILES, [*images, _report(context, images)], strict=True))
    return DicomOutputs(objects, str(context.study.StudyInstanceUID), not context.linked, context.notes)


def write_dicom(folder: Path, explanation: Explanation, *, anonymize: bool = False) -> DicomOutputs:
    """Write the DICOM outputs (see :func:`build_dicom`) into ``folder`` as ``FILES``; every object is
    built before the first file is written.
    """
    outputs = build_dicom(explanation, anonymize=anonymize)
    folder.mkdir(parents=True, exist_ok=True)
    for name, instance in outputs.objects.items():
        instance.save_as(folder / name, enforce_file_format=True)
        outputs.files.append(folder / name)
    return outputs
