"""The reader over a corpus it was not written for: every file of pydicom's test files and of pydicom-data.

Each file is read once per session, under a time limit. Every file must give an image or one of our own errors;
every image must be pydicom's own decode of the file (after the documented modality/VOI handling, colour to grey,
and the MONOCHROME1 mirroring); every refusal must say something pydicom confirms.
"""

from __future__ import annotations

import re
import signal
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import DATA_ROOT
from pydicom.data.data_manager import external_data_sources
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from ChestXrayCounterfactualLib import Radiograph, read_radiograph
from ChestXrayCounterfactualLib.errors import (
    ConstantImageError,
    CorruptPixelDataError,
    ExplainerError,
    ImageSizeError,
    MissingDecoderError,
    NoPixelDataError,
    NotAnImageError,
    UnsupportedImageError,
)

#: Seconds one file may take before it counts as a hang, and the whole corpus (about 5 s on a 2-core machine).
PER_FILE_LIMIT = 30
TOTAL_LIMIT = 120
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DICOMDIR = "1.2.840.10008.1.3.10"
#: What holds pixels but is not a picture of a patient: never read as an image.
NOT_PICTURES = ("SEG", "RTDOSE")
NATIVE_SYNTAXES = {
    (True, True): pydicom.uid.ImplicitVRLittleEndian,
    (False, True): pydicom.uid.ExplicitVRLittleEndian,
    (False, False): pydicom.uid.ExplicitVRBigEndian,
}
FRAME_MACROS = (
    "PixelMeasuresSequence",
    "FramePixelDataPropertiesSequence",
    "PixelValueTransformationSequence",
    "FrameVOILUTSequence",
)


@dataclass
class Outcome:
    path: Path
    radiograph: Radiograph | None
    error: BaseException | None
    seconds: float


@pytest.fixture(scope="session")
def corpus() -> list[Path]:
    """Every file of pydicom's test files and pydicom-data (Python files aside), gathered once."""
    sources = external_data_sources()
    if "pydicom-data" not in sources:
        pytest.skip("needs pydicom-data (pip install pydicom-data), the reader's conformance corpus")
    roots = [Path(DATA_ROOT) / "test_files", Path(sources["pydicom-data"].data_path)]
    return sorted(
        path
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    )


@contextmanager
def _time_limit(seconds: int):
    """Turn a hang into a TimeoutError where the platform has SIGALRM (elsewhere the elapsed time is checked)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def stop(signum, frame):
        raise TimeoutError(f"reading took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def outcomes(corpus) -> list[Outcome]:
    results = []
    for path in corpus:
        start = time.perf_counter()
        radiograph = error = None
        try:
            with _time_limit(PER_FILE_LIMIT):
                radiograph = read_radiograph(path)
        except Exception as caught:  # recorded: the tests below say which were ours
            error = caught
        results.append(Outcome(path, radiograph, error, time.perf_counter() - start))
    return results


def _dataset(path: Path) -> Dataset | None:
    """pydicom's reading of the file, as forgiving as it gets (force, a native transfer syntax guessed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
    except Exception:
        return None
    if "TransferSyntaxUID" not in ds.file_meta and ds.original_encoding in NATIVE_SYNTAXES:
        ds.file_meta.TransferSyntaxUID = NATIVE_SYNTAXES[ds.original_encoding]
    return ds


def _truncated(path: Path) -> bool:
    """Whether pydicom finds the file cut short (it then returns what it read before the end, or nothing)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _dataset(path)
    return any("End of file reached" in str(warning.message) for warning in caught)


def _first_frame(ds: Dataset | None) -> np.ndarray | None:
    """pydicom's own decode of the first frame (through its all-frames path), or None if pydicom cannot."""
    if ds is None or not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = ds.pixel_array
    except Exception:
        return None
    return frames[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else frames


def _first_frame_attributes(ds: Dataset) -> Dataset:
    """The data set with the first frame's functional group attributes at the top level, where pydicom reads them."""
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for macro in FRAME_MACROS if ds.get(keyword) else ():
            if ds[keyword][0].get(macro):
                ds.update(ds[keyword][0][macro][0])
    return ds


def _pydicom_view(path: Path, radiograph: Radiograph) -> np.ndarray:
    """The first frame as pydicom's functions give it: palette looked up, colour as BT.601 luma, grey through the
    modality LUT and, where the reader shows the VOI's output, the VOI LUT or function.
    """
    ds = _first_frame_attributes(_dataset(path))
    array = _first_frame(ds)
    assert array is not None, "the reader read an image pydicom cannot decode"
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        array = apply_color_lut(array, ds)
    if array.ndim == 3:
        rgb = array.astype(np.float32)
        return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    values = apply_modality_lut(array, ds)
    if radiograph.metadata["window_from"] in ("VOI LUT sequence", "SIGMOID VOI function"):
        integral = values if np.issubdtype(values.dtype, np.integer) else np.rint(values).astype(np.int64)
        values = apply_voi_lut(integral, ds, index=0, prefer_lut=True)
    return values


def _name(outcome: Outcome) -> str:
    return f"{outcome.path.parent.name}/{outcome.path.name}"


def test_every_file_gives_an_image_or_our_error_in_time(outcomes):
    foreign = [f"{_name(o)}: {o.error!r}" for o in outcomes if o.error and not isinstance(o.error, ExplainerError)]
    assert not foreign, "errors that are not ours:\n" + "\n".join(foreign)
    slow = [f"{_name(o)}: {o.seconds:.1f} s" for o in outcomes if o.seconds > PER_FILE_LIMIT]
    assert not slow, "files over the time limit:\n" + "\n".join(slow)
    assert sum(o.seconds for o in outcomes) < TOTAL_LIMIT
    assert sum(o.radiograph is not None for o in outcomes) >= 100, "most of the corpus's images must be read"


def test_every_image_read_is_pydicoms_decode(outcomes):
    """Equal to float32 rounding (most bit for bit): the reader's pixels are pydicom's view of the file, mirrored
    inside a constant range when the reader inverted a MONOCHROME1 image.
    """
    wrong = []
    for outcome in (o for o in outcomes if o.radiograph is not None):
        image = outcome.radiograph
        if image.metadata["modality"] in NOT_PICTURES:
            wrong.append(f"{_name(outcome)}: a {image.metadata['modality']} object is not a radiograph")
        expected = np.asarray(_pydicom_view(outcome.path, image), dtype=np.float64)
        if expected.shape != image.shape:
            wrong.append(f"{_name(outcome)}: shape {image.shape}, pydicom {expected.shape}")
            continue
        if image.metadata["inverted_on_read"]:
            expected = float(np.median(image.pixels + expected)) - expected
        tolerance = 4 * np.finfo(np.float32).eps * max(1.0, float(np.abs(expected).max()))
        difference = float(np.abs(image.pixels - expected).max())
        if difference > tolerance:
            wrong.append(f"{_name(outcome)}: differs from pydicom's decode by up to {difference:g}")
    assert not wrong, "\n".join(wrong)


def _is_refused_truly(outcome: Outcome) -> bool:
    """Whether pydicom confirms what the refusal's sentence says."""
    error, ds = outcome.error, _dataset(outcome.path)
    has_pixels = ds is not None and any(keyword in ds for keyword in PIXEL_KEYWORDS)
    if isinstance(error, NotAnImageError):
        return ds is None or not ("SOPClassUID" in ds or has_pixels)
    if isinstance(error, NoPixelDataError):
        directory = "DirectoryRecordSequence" in ds or ds.file_meta.get("MediaStorageSOPClassUID") == DICOMDIR
        return not has_pixels and not _truncated(outcome.path) and directory == ("DICOMDIR" in error.reason)
    if isinstance(error, (CorruptPixelDataError, MissingDecoderError)):
        return _first_frame(ds) is None or "Rows" not in ds
    if isinstance(error, ImageSizeError):
        columns, rows = map(int, re.search(r"image is (\d+)x(\d+) pixels", error.reason).groups())
        return (rows, columns) == (ds.Rows, ds.Columns) and (min(rows, columns) < 64 or max(rows, columns) > 16384)
    if isinstance(error, ConstantImageError):
        frame = _first_frame(ds)
        return frame is not None and frame.min() == frame.max()
    if isinstance(error, UnsupportedImageError):
        what = f"{ds.get('SOPClassUID', '')!r} {getattr(ds.get('SOPClassUID'), 'name', '')} {ds.get('Modality', '')}"
        kinds = {"Segmentation": ("Segmentation", "SEG"), "RT Dose": ("RT Dose", "RTDOSE")}
        return any(kind in error.reason and any(w in what for w in words) for kind, words in kinds.items())
    return False


def test_every_refusal_is_true(outcomes):
    untrue = [f"{_name(o)}: {o.error}" for o in outcomes if o.error is not None and not _is_refused_truly(o)]
    assert not untrue, "refusals pydicom contradicts:\n" + "\n".join(untrue)
