"""Make each derived image a valid instance of its IOD on its own, whatever the input's header omitted.

The derived images copy the input's geometry, anatomy and pixel-meaning attributes, so an input with gaps (a CR
without BodyPartExamined, a DX without its Type 1 DX attributes) used to give outputs with the same gaps, which
dciodvfy reports as errors and strict archives may refuse. Here:

* an attribute that is **Type 2** in the output's IOD and absent is added empty (the standard's way of saying
  "unknown"): BodyPartExamined, ViewPosition, the DX positioning and detector attributes, and Laterality (Type 2C:
  required for a paired body part) when the body part is not known;
* a **Type 1** attribute whose value follows from what we know is written: PresentationIntentType from the SOP
  class, the identity rescale DX requires, PresentationLUTShape from the photometric interpretation (as DX
  requires), LossyImageCompression from the input's transfer syntax and its own flag, ConversionType WSD (a
  workstation made it) for every Secondary Capture;
* a **Type 1** DX attribute that only the acquisition knows (:data:`DX_FROM_ACQUISITION`) is never made up: a DX
  input without one gives a Secondary Capture counterfactual (:func:`dx_gaps`), valid without them;
* values the output's IOD forbids are not written: a window on a For Processing image, a zero pixel spacing.
"""

from __future__ import annotations

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    HTJ2K,
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    SecondaryCaptureImageStorage,
)

CR = str(ComputedRadiographyImageStorage)
DX_PRESENTATION = str(DigitalXRayImageStorageForPresentation)
DX_PROCESSING = str(DigitalXRayImageStorageForProcessing)
SC = str(SecondaryCaptureImageStorage)
#: Type 1 attributes of the DX modules that describe the acquisition: only the input can give them.
DX_FROM_ACQUISITION = ("PatientOrientation", "ImageLaterality", "PixelIntensityRelationship",
                       "PixelIntensityRelationshipSign", "ImagerPixelSpacing")
LOSSY_SYNTAXES = {str(uid) for uid in (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000, HTJ2K)}
#: Type 2 attributes of the Patient and General Study modules, in every IOD we write: the input may lack them, but
#: all our objects have them (empty if unknown), so they agree with each other and with the report highdicom makes.
PATIENT_AND_STUDY_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
#: Type 2 attributes (absent means unknown, written empty) by the SOP classes whose IODs require them.
TYPE2 = {
    CR: ("BodyPartExamined", "ViewPosition"),
    DX_PRESENTATION: ("AnatomicRegionSequence", "DetectorType", "PositionerType", "ViewPosition",
                      "AcquisitionContextSequence"),
}
TYPE2[DX_PROCESSING] = TYPE2[DX_PRESENTATION]
#: The Anatomic Region code of Body Part Examined CHEST (PS3.16 CID 4031), for a DX header that has only the term.
CHEST = ("816094009", "SCT", "Chest")
#: Image Type values the DX IOD allows (PS3.3 C.8.11.7 Value 3 is not defined for derived images we make).
DX_IMAGE_TYPE = ("DERIVED", "SECONDARY")


def _has_value(header: Dataset, keyword: str) -> bool:
    value = header.get(keyword)
    return value is not None and value != "" and not (isinstance(value, list | tuple) and not any(value))


def dx_gaps(header: Dataset) -> list[str]:
    """The acquisition-only Type 1 DX attributes ``header`` lacks (or has empty or zero): a DX counterfactual
    needs every one of them, so with any missing it is written as a Secondary Capture instead.
    """
    missing = [keyword for keyword in DX_FROM_ACQUISITION if not _has_value(header, keyword)]
    if "ImagerPixelSpacing" not in missing and _has_zero(header, "ImagerPixelSpacing"):
        missing.append("ImagerPixelSpacing")
    return missing


def _has_zero(dataset: Dataset, keyword: str) -> bool:
    """Whether the (numeric, one or more valued) attribute holds a zero: a spacing no reader can use."""
    value = dataset[keyword].value
    return any(float(v) == 0 for v in (value if isinstance(value, list | tuple | MultiValue) else [value]))


def lossy(header: Dataset | None) -> bool:
    """Whether the input's pixels may have gone through lossy compression: its own flag says so, or it does not say
    and its transfer syntax is one that can be lossy (JPEG 2000 and HTJ2K are lossy or lossless, so they count).
    """
    if header is None:
        return False
    flag = str(header.get("LossyImageCompression", ""))
    if flag in ("00", "01"):
        return flag == "01"
    file_meta = getattr(header, "file_meta", Dataset())
    return str(file_meta.get("TransferSyntaxUID", "")) in LOSSY_SYNTAXES


def complete(instance: Dataset, header: Dataset | None) -> None:
    """Add what the instance's IOD requires and the copy from ``header`` (the input's, or None) left out, and
    drop what it forbids; see the module docstring for the rules.
    """
    sop_class = str(instance.SOPClassUID)
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in instance and _has_zero(instance, keyword):
            del instance[keyword]
    for keyword in (*PATIENT_AND_STUDY_TYPE2, *TYPE2.get(sop_class, ())):
        if keyword not in instance:
            instance.add(_empty(keyword))
    if sop_class == SC:
        instance.ConversionType = "WSD"
    if sop_class not in (DX_PRESENTATION, DX_PROCESSING):  # DX attributes the copied pixel meaning brought along
        for keyword in ("PixelIntensityRelationship", "PixelIntensityRelationshipSign"):
            instance.pop(keyword, None)
    if lossy(header):
        instance.LossyImageCompression = "01"
    if not _has_value(instance, "BodyPartExamined") and "Laterality" not in instance:
        instance.add(_empty("Laterality"))
    if sop_class in (DX_PRESENTATION, DX_PROCESSING):
        _complete_dx(instance, sop_class)


def _empty(keyword: str) -> DataElement:
    """The attribute with no value: an empty sequence or an empty string, as its VR has it."""
    tag = Tag(keyword)
    vr = dictionary_VR(tag)
    return DataElement(tag, vr, [] if vr == "SQ" else "")


def _complete_dx(instance: Dataset, sop_class: str) -> None:
    """The DX modules' Type 1 attributes that follow from the class, the encoding and the input's compression."""
    processing = sop_class == DX_PROCESSING
    instance.PresentationIntentType = "FOR PROCESSING" if processing else "FOR PRESENTATION"
    instance.ImageType = list(DX_IMAGE_TYPE)
    if "RescaleSlope" not in instance:
        instance.RescaleIntercept, instance.RescaleSlope = "0", "1"
    if "RescaleType" not in instance:
        instance.RescaleType = "US"
    if "PresentationLUTShape" not in instance:
        monochrome1 = instance.PhotometricInterpretation == "MONOCHROME1"
        instance.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
    if "LossyImageCompression" not in instance:
        instance.LossyImageCompression = "00"
    if not instance.get("AnatomicRegionSequence") and str(instance.get("BodyPartExamined", "")).upper() == "CHEST":
        chest = Dataset()
        chest.CodeValue, chest.CodingSchemeDesignator, chest.CodeMeaning = CHEST
        instance.AnatomicRegionSequence = [chest]
    if processing:
        for keyword in ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTFunction"):
            instance.pop(keyword, None)
