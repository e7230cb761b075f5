"""The reader on real DICOM files: every transfer syntax, MONOCHROME1, spacing, windows, other formats."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from ChestXrayCounterfactualLib import read_radiograph
from ChestXrayCounterfactualLib.errors import (
    CorruptPixelDataError,
    InputError,
    NoPixelDataError,
    UnsupportedImageError,
)
from conftest import DX, FALSE_MONOCHROME1, JPEG_BASELINE, MONOCHROME1, SAMPLE, shared


@pytest.fixture(scope="module")
def reference():
    return read_radiograph(MONOCHROME1)


def _cropped_dataset(size: int = 256):
    """The 15-bit MONOCHROME1 sample cut to ``size`` px and decompressed, ready to re-encode."""
    ds = pydicom.dcmread(MONOCHROME1)
    pixels = ds.pixel_array[:size, :size].copy()
    ds.decompress()
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.tobytes()
    return ds, pixels


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian],
)
def test_lossless_encodings_decode_to_the_same_pixels(tmp_path, syntax):
    ds, pixels = _cropped_dataset()
    if syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    path = tmp_path / "encoded.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    image = read_radiograph(path)
    low, high = 0, 2**15 - 1
    np.testing.assert_array_equal(image.pixels, (low + high) - pixels.astype(np.float32))


def test_monochrome1_is_inverted_to_bone_bright(reference):
    raw = pydicom.dcmread(MONOCHROME1).pixel_array.astype(np.float32)
    np.testing.assert_array_equal(reference.pixels, 32767 - raw)
    assert reference.metadata["photometric"] == "MONOCHROME1" and reference.metadata["inverted_on_read"]
    # the file's window (centre 15000, width 30000: 0 to 29999 by PS3.3 C.11.2.1.2.1), mirrored with the pixels
    assert reference.window == (32767 - 29999, 32767 - 0)
    # bone is bright: the spine column (image centre) is brighter than the lung fields beside it
    d = reference.display()
    rows, cols = d.shape
    spine = d[rows // 3 : rows // 2, cols // 2 - 40 : cols // 2 + 40].mean()
    lung = d[rows // 3 : rows // 2, cols // 4 - 40 : cols // 4 + 40].mean()
    assert spine > lung


def test_zero_pixel_spacing_falls_back_to_1mm_with_a_warning(reference):
    assert reference.spacing == (1.0, 1.0)
    assert any("1 mm assumed" in w for w in reference.warnings)


def test_pixel_spacing_is_read_as_column_row():
    image = read_radiograph(DX)
    assert image.spacing == pytest.approx((1.2012, 1.2))
    assert image.metadata["modality"] == "DX" and image.metadata["spacing_from"] == "PixelSpacing"
    assert image.shape == (169, 211)
    sample = read_radiograph(JPEG_BASELINE)
    assert sample.spacing == pytest.approx((0.168, 0.168)) and sample.window == (0.0, 255.0)
    demo = read_radiograph(SAMPLE)
    assert demo.spacing == pytest.approx((1.1985, 1.1985)) and demo.metadata["modality"] == "CR"


def test_false_monochrome1_follows_the_header():
    """The header says MONOCHROME1 but the pixels are MONOCHROME2: we follow the header (documented)."""
    honest, lying = read_radiograph(JPEG_BASELINE), read_radiograph(FALSE_MONOCHROME1)
    np.testing.assert_allclose(lying.display(), 1.0 - honest.display(), atol=1e-6)


def test_jpeg_baseline_sample_reads_as_8bit_monochrome2():
    image = read_radiograph(JPEG_BASELINE)
    assert image.metadata["transfer_syntax"] == "JPEG Baseline (Process 1)"
    assert image.shape == (1024, 1024) and image.pixels.max() <= 255


def test_rgb_secondary_capture_becomes_grey_with_a_warning(tmp_path):
    ds = pydicom.dcmread(JPEG_BASELINE)
    grey = ds.pixel_array
    ds.decompress()
    rgb = np.repeat(grey[..., None], 3, axis=2)
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
    ds.PixelData = rgb.tobytes()
    path = tmp_path / "rgb.dcm"
    ds.save_as(path, enforce_file_format=True)
    image = read_radiograph(path)
    np.testing.assert_allclose(image.pixels, grey, atol=0.01)
    assert any("grey" in w for w in image.warnings)


def test_multiframe_uses_the_first_frame_with_a_warning(tmp_path):
    ds = pydicom.dcmread(JPEG_BASELINE)
    first = ds.pixel_array
    ds.decompress()
    ds.NumberOfFrames = 2
    ds.PixelData = first.tobytes() + (255 - first).tobytes()
    path = tmp_path / "frames.dcm"
    ds.save_as(path, enforce_file_format=True)
    image = read_radiograph(path)
    np.testing.assert_array_equal(image.pixels, first)
    assert any("first frame" in w for w in image.warnings)


def test_png_8_and_16_bit_and_nrrd_round_trip(tmp_path):
    from PIL import Image
    import SimpleITK as sitk

    sample = read_radiograph(JPEG_BASELINE)
    eight = tmp_path / "eight.png"
    Image.fromarray(sample.pixels.astype(np.uint8)).save(eight)
    np.testing.assert_array_equal(read_radiograph(eight).pixels, sample.pixels)
    sixteen = tmp_path / "sixteen.png"
    Image.fromarray((sample.pixels * 257).astype(np.uint16)).save(sixteen)
    image16 = read_radiograph(sixteen)
    np.testing.assert_array_equal(image16.pixels, sample.pixels * 257)
    assert np.corrcoef(image16.display().ravel(), sample.display().ravel())[0, 1] > 0.99  # percentile window
    volume = sitk.GetImageFromArray(sample.pixels)
    volume.SetSpacing((0.5, 0.25))
    nrrd = tmp_path / "image.nrrd"
    sitk.WriteImage(volume, str(nrrd))
    back = read_radiograph(nrrd)
    np.testing.assert_array_equal(back.pixels, sample.pixels)
    assert back.spacing == (0.5, 0.25)


@pytest.mark.parametrize(
    "name,tolerance",
    [
        ("RG1_UNCR.dcm", 0),
        ("RG1_J2KR.dcm", 0),
        ("RG1_derived_RLE.dcm", 0),
        ("RG1_derived_deflate.dcm", 0),
        ("RG1_JLSN.dcm", 4),
        ("RG1_J2KI.dcm", None),
    ],
)
def test_shared_encodings_match_the_uncompressed_reference(name, tolerance):
    reference = read_radiograph(shared("dicom", "RG1_UNCR.dcm"))
    image = read_radiograph(shared("dicom", name))
    assert image.shape == reference.shape and image.window == reference.window
    difference = np.abs(image.pixels - reference.pixels)
    if tolerance is None:  # lossy JPEG 2000: close on average, not bit-exact
        assert difference.mean() < 0.01 * (reference.window[1] - reference.window[0])
    else:
        assert difference.max() <= tolerance


def test_non_dicom_bytes_are_refused_with_one_sentence(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with pytest.raises(InputError) as error:
        read_radiograph(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_reading_never_changes_the_input(tmp_path):
    before = MONOCHROME1.read_bytes()
    read_radiograph(MONOCHROME1)
    assert MONOCHROME1.read_bytes() == before
    assert io.BytesIO(before).getbuffer().nbytes == MONOCHROME1.stat().st_size


def pydicom_file(name: str) -> Path:
    """One of pydicom's test files or pydicom-data's (never downloaded), or skip the test with the reason."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"needs {name} from pydicom-data (pip install pydicom-data)")
    return Path(path)


def _luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def test_raw_data_set_without_preamble_or_file_meta_is_read(tmp_path):
    ds, _ = _cropped_dataset()
    part10 = tmp_path / "part10.dcm"
    ds.save_as(part10, enforce_file_format=True)
    ds.file_meta, ds.preamble = FileMetaDataset(), None
    for implicit in (True, False):
        raw = tmp_path / f"raw_{implicit}.dcm"
        ds.save_as(raw, implicit_vr=implicit, little_endian=True)
        assert raw.read_bytes()[128:132] != b"DICM"
        np.testing.assert_array_equal(read_radiograph(raw).pixels, read_radiograph(part10).pixels)


def test_raw_palette_image_from_pydicom_data_is_read():
    path = pydicom_file("OT-PAL-8-face.dcm")
    image = read_radiograph(path)
    ds = pydicom.dcmread(path, force=True)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    np.testing.assert_array_equal(image.pixels, _luma(apply_color_lut(ds.pixel_array, ds)))


@pytest.mark.parametrize(
    "name,sop",
    [
        ("rtstruct.dcm", "RT Structure Set Storage"),
        ("ExplVR_LitEndNoMeta.dcm", "RT Ion Plan Storage"),
        ("ExplVR_BigEndNoMeta.dcm", "RT Ion Plan Storage"),
    ],
)
def test_raw_data_set_without_pixels_gets_the_no_pixel_sentence(name, sop):
    with pytest.raises(NoPixelDataError, match=f"without pixel data \\({sop}\\)"):
        read_radiograph(pydicom_file(name))


def _enhanced_dataset():
    """The cropped sample as an enhanced object: spacing and rescale in the shared functional groups, the window
    in the first frame's own; nothing at the top level.
    """
    ds, stored = _cropped_dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    for keyword in ("WindowCenter", "WindowWidth", "PixelSpacing", "ImagerPixelSpacing"):
        if keyword in ds:
            delattr(ds, keyword)
    measures = Dataset()
    measures.PixelSpacing = [0.25, 0.5]
    rescale = Dataset()
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 2, -1000, "US"
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PixelValueTransformationSequence = [measures], [rescale]
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 1000, 2001
    frame = Dataset()
    frame.FrameVOILUTSequence = [voi]
    ds.SharedFunctionalGroupsSequence, ds.PerFrameFunctionalGroupsSequence = [shared], [frame]
    ds.NumberOfFrames = 1
    return ds, stored


def test_enhanced_object_uses_its_functional_groups(tmp_path):
    ds, stored = _enhanced_dataset()
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    image = read_radiograph(path)
    np.testing.assert_array_equal(image.pixels, stored * 2.0 - 1000)
    assert image.window == (1000 - 0.5 - 1000, 1000 - 0.5 + 1000)
    assert image.spacing == (0.5, 0.25) and image.metadata["spacing_from"] == "PixelSpacing"
    assert not any("spacing" in w for w in image.warnings)


def test_enhanced_ct_from_pydicom_data_is_in_hounsfield_units():
    path = pydicom_file("eCT_Supplemental.dcm")
    image = read_radiograph(path)
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(image.pixels, pydicom.pixels.pixel_array(ds, index=0) - 1024.0)
    assert image.window == (49 - 0.5 - 50.5, 49 - 0.5 + 50.5)
    assert image.spacing == pytest.approx((0.388672, 0.388672))
    assert not any("spacing" in w for w in image.warnings)


@pytest.mark.parametrize("name", ["liver_1frame.dcm", "liver_expb_1frame.dcm"])
def test_segmentation_is_refused_as_not_a_radiograph(name):
    with pytest.raises(UnsupportedImageError, match=r"Segmentation.*not a radiograph"):
        read_radiograph(pydicom_file(name))


def test_dose_grid_is_refused_as_not_a_radiograph():
    with pytest.raises(UnsupportedImageError, match=r"RT Dose.*not a radiograph"):
        read_radiograph(pydicom_file("rtdose.dcm"))


def test_file_cut_inside_its_pixel_data_sequence_is_called_truncated(tmp_path):
    """pydicom returns an empty data set (with a warning) for an encapsulated file cut short: not 'no pixels'."""
    path = tmp_path / "cut.dcm"
    path.write_bytes(MONOCHROME1.read_bytes()[:-8])  # the sequence delimiter is gone
    with pytest.raises(CorruptPixelDataError, match=r"truncated.*Computed Radiography Image Storage"):
        read_radiograph(path)


def test_truncated_enhanced_mr_from_pydicom_data_is_called_truncated():
    with pytest.raises(CorruptPixelDataError, match="truncated"):
        read_radiograph(pydicom_file("emri_small_jpeg_2k_lossless_too_short.dcm"))


def test_ultrasound_region_calibration_gives_the_spacing(tmp_path):
    ds = pydicom.dcmread(JPEG_BASELINE)
    ds.decompress()
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in ds:
            delattr(ds, keyword)
    regions = []
    for units, delta_x, delta_y in ((4, 0.5, 0.0), (3, 0.02, 0.03)):  # seconds (ignored), then cm
        region = Dataset()
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = units
        region.PhysicalDeltaX, region.PhysicalDeltaY = delta_x, delta_y
        regions.append(region)
    ds.SequenceOfUltrasoundRegions = regions
    path = tmp_path / "us.dcm"
    ds.save_as(path, enforce_file_format=True)
    image = read_radiograph(path)
    assert image.spacing == pytest.approx((0.2, 0.3))
    assert image.metadata["spacing_from"] == "SequenceOfUltrasoundRegions"
    assert not any("1 mm assumed" in w for w in image.warnings)
    ultrasound = read_radiograph(pydicom_file("examples_ybr_color.dcm"))  # 0.05104970559 cm
    assert ultrasound.spacing == pytest.approx((0.5104970559, 0.5104970559))


def test_linear_window_follows_the_standard():
    """Displayed as pydicom's LINEAR VOI function (PS3.3 C.11.2.1.2.1) maps the values, to float precision."""
    path = pydicom_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    image = read_radiograph(path)
    assert image.window == (600 - 0.5 - 799.5, 600 - 0.5 + 799.5)
    low, high = -(2**15), 2**15 - 1  # signed 16 bit, no rescale: the VOI output range
    expected = (apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds) - low) / (high - low)
    np.testing.assert_allclose(image.display(), expected, atol=1e-6)


def _with_voi_lut(tmp_path) -> Path:
    """The cropped sample with a rescale (float modality values) and an inverting 16-bit VOI LUT."""
    ds, _ = _cropped_dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, 100
    item = Dataset()
    item.LUTDescriptor = [2**15, 100, 16]
    item.add_new(0x00283006, "OW", np.arange(65535, 0, -2, dtype="<u2").tobytes())  # LUT Data
    ds.VOILUTSequence = [item]
    path = tmp_path / "voi_lut.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_voi_lut_gets_integer_values(tmp_path, monkeypatch):
    seen = []

    def spy(arr, ds, *args, **kwargs):
        seen.append(arr.dtype)
        return apply_voi_lut(arr, ds, *args, **kwargs)

    monkeypatch.setattr(pydicom.pixels, "apply_voi_lut", spy)
    path = _with_voi_lut(tmp_path)
    image = read_radiograph(path)
    assert seen and all(np.issubdtype(dtype, np.integer) for dtype in seen)
    ds = pydicom.dcmread(path)
    expected = apply_voi_lut(ds.pixel_array.astype(np.int64) + 100, ds)
    np.testing.assert_array_equal(image.pixels, expected)
    assert image.window == (0.0, 65535.0) and image.metadata["window_from"] == "VOI LUT sequence"


def test_pydicom_warnings_never_reach_the_user(caplog):
    """MR_small_padded.dcm makes pydicom warn about padding: nothing is shown, as a warning or a log record."""
    with warnings.catch_warnings(), caplog.at_level(logging.DEBUG):
        warnings.simplefilter("error")
        image = read_radiograph(pydicom_file("MR_small_padded.dcm"))
    assert not [record for record in caplog.records if record.name.startswith("pydicom")]
    assert not any("padding" in w for w in image.warnings)


def test_meaningful_pydicom_warning_becomes_our_sentence(tmp_path):
    ds = pydicom.dcmread(JPEG_BASELINE)
    ds.decompress()
    ds.NumberOfFrames = 0
    path = tmp_path / "zero_frames.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert read_radiograph(path).warnings.count("the header's number of frames is invalid: one frame is assumed") == 1


@pytest.mark.parametrize("name", ["DICOMDIR", "DICOMDIR-implicit", "DICOMDIR-bigEnd"])
def test_dicomdir_is_refused_as_a_directory(name):
    with pytest.raises(NoPixelDataError, match=r"a DICOMDIR .*directory.*open the image files it lists instead"):
        read_radiograph(pydicom_file(name))
