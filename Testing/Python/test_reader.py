"""The reader on real DICOM files: every transfer syntax, MONOCHROME1, spacing, windows, other formats."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from ChestXrayCounterfactualLib import read_radiograph
from ChestXrayCounterfactualLib.errors import InputError
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
    "syntax", [ExplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian]
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
    # the file's window 15000 +- 15000, mirrored with the pixels
    assert reference.window == (32767 - 30000, 32767 - 0)
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
