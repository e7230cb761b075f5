"""Bad input, for real: a corpus of broken files made from the real samples, each refused with the
expected error class and one sentence naming the file; a fuzz test of the reader; no network; an
interrupted batch that loses nothing.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import UID

from ChestXrayCounterfactualLib import read_radiograph
from ChestXrayCounterfactualLib.errors import (
    ConstantImageError,
    CorruptPixelDataError,
    ImageSizeError,
    InputError,
    MissingDecoderError,
    NoPixelDataError,
    NotAnImageError,
    UnsupportedImageError,
)
from conftest import DX, JPEG_BASELINE, MONOCHROME1, SAMPLE


def _dataset(source: Path = SAMPLE) -> pydicom.Dataset:
    return pydicom.dcmread(source)


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def truncated(tmp: Path) -> Path:
    data = SAMPLE.read_bytes()
    return _write(tmp / "truncated.dcm", data[: len(data) * 2 // 3])


def bit_flipped(tmp: Path) -> Path:
    """Bits flipped in the JPEG 2000 codestream's main header (a decoder cannot see flips in the
    entropy-coded body: those decode to a wrong image, which no reader can detect).
    """
    data = bytearray(MONOCHROME1.read_bytes())
    start = data.index(b"\xff\x4f\xff\x51")  # SOC + SIZ markers
    for i in range(start + 4, start + 40):
        data[i] ^= 0x5A
    return _write(tmp / "bitflipped.dcm", bytes(data))


def header_only(tmp: Path) -> Path:
    ds = _dataset()
    del ds.PixelData
    return _save(ds, tmp / "header_only.dcm")


def structured_report(tmp: Path) -> Path:
    ds = _dataset()
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
    ds.Modality = "SR"
    return _save(ds, tmp / "report.dcm")


def wrong_photometric(tmp: Path) -> Path:
    ds = _dataset()
    ds.PhotometricInterpretation = "HSV"
    return _save(ds, tmp / "hsv.dcm")


def zero_size(tmp: Path) -> Path:
    return _write(tmp / "empty.dcm", b"")


def one_pixel(tmp: Path) -> Path:
    ds = _dataset()
    ds.Rows = ds.Columns = 1
    ds.PixelData = b"\x80"
    return _save(ds, tmp / "one_pixel.dcm")


def huge_header(tmp: Path) -> Path:
    ds = _dataset()
    ds.Rows = ds.Columns = 16000
    return _save(ds, tmp / "claims_16k.dcm")


def unknown_syntax(tmp: Path) -> Path:
    ds = _dataset(JPEG_BASELINE)
    ds.file_meta.TransferSyntaxUID = UID("1.2.826.0.1.3680043.99.1.2.3")
    return _save(ds, tmp / "unknown_syntax.dcm")


def constant(tmp: Path) -> Path:
    ds = _dataset()
    ds.PixelData = bytes(len(ds.PixelData))
    return _save(ds, tmp / "constant.dcm")


def not_an_image(tmp: Path) -> Path:
    return _write(tmp / "notes.txt", b"patient notes, not an image\n")


def truncated_png(tmp: Path) -> Path:
    from PIL import Image

    path = tmp / "truncated.png"
    Image.fromarray((read_radiograph(SAMPLE).display() * 255).astype(np.uint8)).save(path)
    return _write(path, path.read_bytes()[:4000])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CORPUS = [
    (truncated, CorruptPixelDataError),
    (bit_flipped, CorruptPixelDataError),
    (header_only, NoPixelDataError),
    (structured_report, NoPixelDataError),
    (wrong_photometric, UnsupportedImageError),
    (zero_size, NotAnImageError),
    (one_pixel, ImageSizeError),
    (huge_header, ImageSizeError),
    (unknown_syntax, MissingDecoderError),
    (constant, ConstantImageError),
    (not_an_image, NotAnImageError),
    (truncated_png, CorruptPixelDataError),
]


@pytest.mark.parametrize("make,expected", CORPUS, ids=[m.__name__ for m, _ in CORPUS])
def test_bad_file_is_refused_with_its_class_and_one_sentence(tmp_path, make, expected):
    path = make(tmp_path)
    before = path.read_bytes()
    with pytest.raises(InputError) as error:
        read_radiograph(path)
    assert type(error.value) is expected, f"{error.value!r}"
    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message and len(message) < 400
    assert path.read_bytes() == before, "the input must never be modified"


def test_structured_report_names_what_it_is(tmp_path):
    with pytest.raises(NoPixelDataError, match="Basic Text SR"):
        read_radiograph(structured_report(tmp_path))


def test_missing_decoder_says_which_syntax(tmp_path):
    with pytest.raises(MissingDecoderError, match=re.escape("1.2.826.0.1.3680043.99.1.2.3")):
        read_radiograph(unknown_syntax(tmp_path))


SEED_BYTES = DX.read_bytes()


@settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.integers(0, len(SEED_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=40),
    st.integers(132, len(SEED_BYTES)),
)
def test_fuzzed_dicom_gives_an_image_or_our_error(tmp_path, flips, cut):
    data = bytearray(SEED_BYTES)
    for position, value in flips:
        data[position] = value
    path = tmp_path / "fuzzed.dcm"
    path.write_bytes(bytes(data[:cut]))
    try:
        image = read_radiograph(path)
    except InputError:
        return
    assert image.pixels.ndim == 2 and np.isfinite(image.pixels).all()
    assert image.window[1] > image.window[0]


def test_engine_runs_air_gapped(tmp_path):
    """The whole explain path with every socket creation refused in the process."""
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k):\n    raise OSError('network access attempted')\n"
        "socket.socket.connect = refuse\nsocket.create_connection = refuse\nsocket.getaddrinfo = refuse\n"
        "from ChestXrayCounterfactualLib.runs.cli import main\n"
        f"sys.exit(main(['explain', {str(SAMPLE)!r}, '--out', {str(tmp_path / 'out')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "network access attempted" not in result.stderr


def test_interrupted_batch_leaves_only_complete_outputs_and_rerun_finishes(tmp_path):
    inputs = []
    for i in range(4):
        copy = tmp_path / "in" / f"case{i}.dcm"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(SAMPLE, copy)
        inputs.append(copy)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ChestXrayCounterfactualLib", "explain", *map(str, inputs), "--out", str(out)]
    # A shell's background job inherits SIGINT ignored (and Python then keeps ignoring it), and exec passes an
    # ignored signal on: while the child starts, give SIGINT a handler here (exec resets a handled signal to its
    # default), so the child reacts to SIGINT as a terminal's Ctrl-C makes it react. Unlike preexec_fn, this runs
    # no Python code between fork and exec, which is unsafe while torch's threads run.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "case0").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    finished = sorted(p.name for p in out.iterdir())
    assert all(not name.startswith(".") for name in finished), f"partial output left: {finished}"
    for name in finished:
        assert len(list((out / name).iterdir())) == 6
    assert 1 <= len(finished) < 4
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"case{i}" for i in range(4)]
    assert rerun.stderr.count("skipped") == len(finished)
    assert all(p.read_bytes() == SAMPLE.read_bytes() for p in inputs), "inputs must never be modified"
