"""How the demo sample DICOM was made: one NIH ChestX-ray14 test-split radiograph (a patient never
used for training or tuning) wrapped as a CR DICOM file with its real pixel spacing.

    .venv/bin/python Testing/data/make_demo_sample.py ../shared/data 00012345_000.png OUT.dcm
"""

from __future__ import annotations

import csv
import gzip
import sys
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage as CRImageStorage
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def make(data: Path, name: str, out: Path) -> None:
    pixels = np.asarray(Image.open(data / "nih" / "images" / name).convert("L"), dtype=np.uint8)
    row = next(r for r in csv.DictReader(open(data / "nih" / "labels.csv")) if r["file"] == name)
    with gzip.open(data / "nih" / "official" / "Data_Entry_2017_v2020.csv.gz", "rt", newline="") as handle:
        entry = next(e for e in csv.DictReader(handle) if e["Image Index"] == name)
    spacing = float(entry["OriginalImagePixelSpacing[x"]) * int(entry["OriginalImage[Width"]) / pixels.shape[1]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[name, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[name, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[name, "series"])
    ds.PatientName, ds.PatientID = f"NIH^{row['patient_id']}", f"NIH-{row['patient_id']}"
    ds.PatientSex, ds.PatientAge = row["sex"], f"{int(row['age']):03d}Y"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", row["view"]
    ds.StudyDescription = "CHEST (NIH ChestX-ray14 " + name + ")"
    ds.SeriesDescription = f"{row['view']} (NIH labels: {row['finding_labels']})"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelSpacing = ds.ImagerPixelSpacing = [round(spacing, 4), round(spacing, 4)]
    ds.PixelData = pixels.tobytes()
    ds.save_as(out, enforce_file_format=True)


if __name__ == "__main__":
    make(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
