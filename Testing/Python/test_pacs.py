"""The DICOM outputs in and out of a real PACS (Orthanc on loopback, see :mod:`orthanc_server`): C-STORE and STOW-RS
land every object in the input's study, read back intact over DICOM (C-GET) and DICOMweb (WADO-RS); a failed send is
retried, reported in the index and delivered by a rerun, once; ``batch`` pulls a study from the PACS and sends its
results back into the same study, and a rerun finds it done.
"""

from __future__ import annotations

import csv
import shutil
import socket

import pydicom
import pytest
from pydicom.dataset import Dataset

from ChestXrayCounterfactualLib import ExplainOptions, read_radiograph
from ChestXrayCounterfactualLib.runs.cli import main
from ChestXrayCounterfactualLib.outputs.dicom import write_dicom
from ChestXrayCounterfactualLib.outputs.pacs import Destination, deliver, sent_record
from conftest import SAMPLE
from dicom_inputs import make_input
from orthanc_server import AET, READER_AET, orthanc  # noqa: F401 - the fixture, used by name

FAST = ["--method", "latent-shift", "--frames", "2", "--finding", "Cardiomegaly"]


def _dead_node() -> str:
    """A loopback node where nothing listens (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"{AET}@127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture(scope="module")
def written(explainer, tmp_path_factory):
    """The sample's DICOM outputs (latent-shift, Cardiomegaly) in a folder that tests copy before sending from."""
    folder = tmp_path_factory.mktemp("outputs")
    options = ExplainOptions(finding="Cardiomegaly", method="latent-shift")
    explanation = explainer.explain(read_radiograph(SAMPLE), options)
    return folder, write_dicom(folder / "dicom", explanation)


def _fresh_copy(written, tmp_path):
    folder, outputs = written
    copy = tmp_path / "sample"
    shutil.copytree(folder, copy)
    return copy, sorted(copy / "dicom" / file.name for file in outputs.files)


def _c_get(server, study: str) -> list[Dataset]:
    """Every instance of ``study``, retrieved from the PACS over DICOM (C-GET, study root)."""
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet
    from pydicom.uid import (
        Comprehensive3DSRStorage,
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForProcessing,
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
    )

    received: list[Dataset] = []

    def store(event):
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        received.append(dataset)
        return 0x0000

    classes = [
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForProcessing,
        SecondaryCaptureImageStorage,
        Comprehensive3DSRStorage,
    ]
    ae = AE(ae_title=READER_AET)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in classes:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", study
    association = ae.associate(
        "127.0.0.1",
        server.dicom_port,
        ae_title=AET,
        ext_neg=[build_role(sop_class, scp_role=True) for sop_class in classes],
        evt_handlers=[(evt.EVT_C_STORE, store)],
    )
    assert association.is_established
    try:
        replies = association.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        statuses = [status.Status for status, _ in replies]
    finally:
        association.release()
    assert statuses[-1] == 0x0000
    return received


def _wado(server, study: str) -> list[Dataset]:
    from dicomweb_client import DICOMwebClient

    return DICOMwebClient(server.dicomweb).retrieve_study(study)


def _assert_intact(files, retrieved: list[Dataset]) -> None:
    """Every written object is among ``retrieved``, in its study, with the same pixels (images) or content (SR)."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in retrieved}
    for file in files:
        written = pydicom.dcmread(file)
        back = by_uid[str(written.SOPInstanceUID)]
        assert back.StudyInstanceUID == written.StudyInstanceUID and back.SOPClassUID == written.SOPClassUID
        if "PixelData" in written:
            assert back.PixelData == written.PixelData and back.pixel_array.shape == written.pixel_array.shape
        else:
            assert back.ContentSequence == written.ContentSequence


@pytest.mark.parametrize("protocol", ["c-store", "stow-rs"])
def test_every_object_lands_in_the_input_study_and_reads_back_intact(orthanc, written, tmp_path, protocol):
    folder, files = _fresh_copy(written, tmp_path)
    target = Destination("dicom", orthanc.node) if protocol == "c-store" else Destination("dicomweb", orthanc.dicomweb)
    assert deliver(folder, files, [target]) == []
    study = pydicom.dcmread(SAMPLE, stop_before_pixels=True).StudyInstanceUID
    _assert_intact(files, _c_get(orthanc, study))
    _assert_intact(files, _wado(orthanc, study))
    assert sorted(sent_record(folder)[target.address]) == sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in files)


def test_a_failed_send_is_retried_reported_and_a_rerun_delivers_once(orthanc, written, tmp_path):
    folder, files = _fresh_copy(written, tmp_path)
    dead = Destination("dicom", _dead_node())
    failures = deliver(folder, files, [dead], attempts=2, pause=0.1)
    assert len(failures) == 1 and "failed 2 times" in failures[0] and dead.address in failures[0]
    assert dead.address not in sent_record(folder) and all(file.is_file() for file in files)
    live = Destination("dicom", orthanc.node)
    assert deliver(folder, files, [live]) == [] and deliver(folder, files, [live]) == []
    study = pydicom.dcmread(SAMPLE, stop_before_pixels=True).StudyInstanceUID
    from dicomweb_client import DICOMwebClient

    stored = [item["00080018"]["Value"][0] for item in DICOMwebClient(orthanc.dicomweb).search_for_instances(study)]
    assert len(stored) == len(set(stored)), "an instance was stored twice"
    assert {str(pydicom.dcmread(f).SOPInstanceUID) for f in files} <= set(stored)


def _index(out) -> list[dict]:
    with (out / "index.csv").open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_batch_sends_its_results_and_a_rerun_delivers_what_failed(orthanc, tmp_path):
    inputs = tmp_path / "inputs"
    make_input("cr-monochrome1-sparse", inputs)
    make_input("secondary-capture", inputs)
    out = tmp_path / "out"
    assert main(["batch", str(inputs), "--out", str(out), *FAST, "--send", _dead_node()]) == 1
    rows = _index(out)
    assert [row["status"] for row in rows] == ["done", "done"]
    assert all(row["sent"].startswith("sending to") for row in rows)
    assert all(len(list((out / row["folder"] / "dicom").glob("*.dcm"))) == 4 for row in rows)
    both = ["--send", orthanc.node, "--stow", orthanc.dicomweb]
    assert main(["batch", str(inputs), "--out", str(out), *FAST, *both]) == 0
    rows = _index(out)
    assert [(row["status"], row["sent"]) for row in rows] == [("done", "yes"), ("done", "yes")]
    study = pydicom.dcmread(SAMPLE, stop_before_pixels=True).StudyInstanceUID
    retrieved = _wado(orthanc, study)
    for row in rows:
        _assert_intact(sorted((out / row["folder"] / "dicom").glob("*.dcm")), retrieved)


def _new_study(paths) -> str:
    """Give the input files one new study (as if acquired together) and return its UID."""
    study = pydicom.uid.generate_uid()
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study
        ds.save_as(path)
    return study


def test_batch_pulls_a_study_explains_it_and_sends_the_results_back_into_it(orthanc, tmp_path):
    inputs = [make_input(kind, tmp_path / "inputs") for kind in ("cr-monochrome1-sparse", "dx-for-processing")]
    study = _new_study(inputs)
    assert deliver(tmp_path, inputs, [Destination("dicom", orthanc.node)]) == []
    out = tmp_path / "out"
    back = ["--stow", orthanc.dicomweb]
    command = ["batch", "--pull", orthanc.dicomweb, "--study", study, "--out", str(out), *FAST, *back]
    assert main(command) == 0
    rows = _index(out)
    expected = sorted(f"{study}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm" for ds in map(pydicom.dcmread, inputs))
    assert sorted(row["input"] for row in rows) == expected
    assert [(row["status"], row["sent"]) for row in rows] == [("done", "yes"), ("done", "yes")]
    results = [file for row in rows for file in sorted((out / row["folder"] / "dicom").glob("*.dcm"))]
    retrieved = _c_get(orthanc, study)
    _assert_intact(results, retrieved)
    assert len(retrieved) == len(inputs) + len(results)
    records = [(out / row["folder"] / "explanation.json").stat().st_mtime_ns for row in rows]
    assert main(command) == 0, "a rerun pulls the inputs again (not the results) and finds them done"
    assert [(row["status"], row["sent"]) for row in _index(out)] == [("done", "yes"), ("done", "yes")]
    assert [(out / row["folder"] / "explanation.json").stat().st_mtime_ns for row in rows] == records
    assert len(_c_get(orthanc, study)) == len(inputs) + len(results)


def test_a_send_cut_off_midway_is_completed_by_a_rerun_without_duplicates(orthanc, explainer, tmp_path):
    """The state a killed send leaves: some objects stored, none recorded as sent. A rerun stores all, once."""
    path = make_input("secondary-capture", tmp_path / "inputs")
    study = _new_study([path])
    options = ExplainOptions(finding="Cardiomegaly", method="latent-shift")
    explanation = explainer.explain(read_radiograph(path), options)
    files = write_dicom(tmp_path / "result" / "dicom", explanation).files
    node = Destination("dicom", orthanc.node)
    node.send([pydicom.dcmread(file) for file in files[:2]])
    assert sent_record(tmp_path / "result") == {}
    assert deliver(tmp_path / "result", files, [node]) == []
    from dicomweb_client import DICOMwebClient

    stored = [item["00080018"]["Value"][0] for item in DICOMwebClient(orthanc.dicomweb).search_for_instances(study)]
    assert sorted(stored) == sorted(str(pydicom.dcmread(file).SOPInstanceUID) for file in files)


def test_malformed_destinations_and_pull_options_stop_the_run_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["explain", str(SAMPLE), "--out", str(tmp_path / "a"), "--send", "PACS:104"])
    assert stopped.value.code == 2 and "expected AET@HOST:PORT" in capsys.readouterr().err
    assert main(["batch", str(tmp_path), "--out", str(tmp_path / "b"), "--stow", "pacs:8042/dicom-web"]) == 2
    assert "not a DICOMweb URL" in capsys.readouterr().err
    assert main(["batch", str(tmp_path), "--study", "1.2.3", "--out", str(tmp_path / "c")]) == 2
    assert "give --pull too" in capsys.readouterr().err
    assert main(["batch", "--pull", "http://127.0.0.1:9/dicom-web", "--out", str(tmp_path / "d")]) == 2
    assert "needs --study UID or --query" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_explain_send_delivers_its_objects_and_a_rerun_does_not_resend(orthanc, tmp_path):
    path = make_input("cr-without-type2", tmp_path / "inputs")
    _new_study([path])
    out = tmp_path / "out"
    command = ["explain", str(path), "--out", str(out), *FAST, "--send", orthanc.node]
    assert main(command) == 0
    folder = out / path.stem
    record = sent_record(folder)
    files = sorted((folder / "dicom").glob("*.dcm"))
    assert sorted(record[orthanc.node]) == sorted(str(pydicom.dcmread(file).SOPInstanceUID) for file in files)
    sent = (folder / "sent.json").stat().st_mtime_ns
    assert main(command) == 0
    assert (folder / "sent.json").stat().st_mtime_ns == sent, "acknowledged objects are not sent again"
