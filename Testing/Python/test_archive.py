"""Archive runs (``batch``): in this process and on a local Ray cluster with a worker killed mid-run, the same
outputs; an index with one row per input, bad inputs listed with their sentences; a rerun that redoes nothing;
an index line cut short by a crash; a file that kills every worker it is sent to fails alone; a cluster that is not
there stops the run with one sentence; the site summary beside the index, on NIH and Hannover images.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ChestXrayCounterfactualLib.errors import ArchiveError
from ChestXrayCounterfactualLib.runs.archive import list_inputs, run_archive
from ChestXrayCounterfactualLib.runs.index import COLUMNS, IndexAppender, make_row, read_index
from ChestXrayCounterfactualLib.runs.ray_actors import _Pool, init_arguments
from ChestXrayCounterfactualLib.options import ExplainOptions
from ChestXrayCounterfactualLib.runs.files import FileResult, output_stem
from ChestXrayCounterfactualLib.outputs.folder import FILES
from process_tree import titled
from conftest import DX, FALSE_MONOCHROME1, JPEG_BASELINE, ROOT, SAMPLE, shared

OPTIONS = ExplainOptions(finding="Cardiomegaly", method="latent-shift", frames=2)
SOURCES = (SAMPLE, JPEG_BASELINE, DX, FALSE_MONOCHROME1)
BAD = {"bad/empty.dcm": "the file is empty", "bad/notes.dcm": "not DICOM and not an image format we read"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Twelve radiographs, three per source file under colliding names in patient folders, two bad inputs, and
    a manifest listing them all.
    """
    root = tmp_path_factory.mktemp("archive")
    for i in range(12):
        source = SOURCES[i % len(SOURCES)]
        (root / f"patient{i:02d}").mkdir()
        (root / f"patient{i:02d}" / source.name).write_bytes(source.read_bytes())
    (root / "bad").mkdir()
    (root / "bad" / "empty.dcm").write_bytes(b"")
    (root / "bad" / "notes.dcm").write_text("not an image, whatever its name says\n")
    keys = sorted(path.relative_to(root).as_posix() for path in root.rglob("*.dcm"))
    (root / "manifest.csv").write_text("path\n" + "\n".join(keys) + "\n")
    return root


def index_rows(out: Path) -> list[dict[str, str]]:
    with (out / "index.csv").open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def in_process(archive, tmp_path_factory) -> Path:
    """The archive explained here, from its manifest, on one torch thread like each Ray worker."""
    import torch

    out = tmp_path_factory.mktemp("in_process")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        progress = run_archive(archive / "manifest.csv", out, OPTIONS)
    finally:
        torch.set_num_threads(threads)
    assert (progress.done, progress.failed, progress.total) == (12, 2, 14)
    return out


@pytest.fixture(scope="module")
def killed(archive, tmp_path_factory):
    """The archive folder explained on a local Ray cluster of two workers, in batches of two; at the first
    result that lands while a worker is explaining a batch, that worker process is killed (SIGKILL).
    """
    pytest.importorskip("ray")
    if not Path("/proc/self/stat").exists():
        pytest.skip("finds the worker processes to kill in /proc")
    import ray

    out = tmp_path_factory.mktemp("ray")
    victims: list[int] = []

    def kill_a_busy_worker(progress) -> None:
        if progress.last is not None and not victims:
            victims.extend(titled(b"ray::ArchiveWorker.explain\0"))
            for pid in victims:
                os.kill(pid, signal.SIGKILL)

    try:
        progress = run_archive(archive, out, OPTIONS, ray_address="local:2", batch_size=2, progress=kill_a_busy_worker)
    finally:
        ray.shutdown()
    assert victims, "a worker was killed in the middle of a batch"
    return out, progress


def test_killed_workers_lose_nothing_and_duplicate_nothing(archive, killed):
    out, progress = killed
    assert progress.workers_lost >= 1
    assert (progress.done, progress.failed, progress.total) == (12, 2, 14)
    lines = (out / "index.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 15
    rows = index_rows(out)
    expected = sorted(path.relative_to(archive).as_posix() for path in archive.rglob("*.dcm"))
    assert [row["input"] for row in rows] == expected, "one row per input, in input order"
    for row in rows:
        if row["input"] not in BAD:
            assert row["status"] == "done", row
            assert sorted(p.name for p in (out / row["folder"]).iterdir()) == sorted(FILES)
    folders = [row["folder"] for row in rows if row["status"] == "done"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*folders, "index.csv", "site_summary.json"]), (
        "no partial or hidden folder is left"
    )


def test_bad_inputs_are_listed_with_their_sentence(killed, in_process):
    for out in (killed[0], in_process):
        failed = {row["input"]: row for row in index_rows(out) if row["status"] == "failed"}
        assert set(failed) == set(BAD)
        for key, sentence in BAD.items():
            assert sentence in failed[key]["error"] and key in failed[key]["error"], failed[key]


def test_ray_and_in_process_give_the_same_outputs(killed, in_process):
    ray_rows, here_rows = index_rows(killed[0]), index_rows(in_process)
    assert [(r["input"], r["status"], r["folder"], r["finding"]) for r in ray_rows] == [
        (r["input"], r["status"], r["folder"], r["finding"]) for r in here_rows
    ]
    assert len({row["folder"] for row in ray_rows}) == 14, "colliding stems get distinct folders"
    for ray_row, here_row in zip(ray_rows, here_rows, strict=True):
        if ray_row["status"] == "done":
            for key in ("p_original", "p_counterfactual"):
                assert float(ray_row[key]) == pytest.approx(float(here_row[key]), abs=1e-5)
            ray_record = json.loads((killed[0] / ray_row["folder"] / "explanation.json").read_text())
            here_record = json.loads((in_process / here_row["folder"] / "explanation.json").read_text())
            assert ray_record["p_counterfactual"] == pytest.approx(here_record["p_counterfactual"], abs=1e-5)
            assert ray_row["p_counterfactual"] == str(ray_record["p_counterfactual"])


def test_rerun_skips_everything_complete_and_keeps_the_index(archive, killed):
    out = killed[0]
    index, summary = (out / "index.csv").read_text(), (out / "site_summary.json").read_text()
    records = {p: p.read_text() for p in out.glob("*/explanation.json")}
    result = subprocess.run(
        [sys.executable, "-m", "ChestXrayCounterfactualLib", "batch", archive, "--out", out,
         "--finding", "Cardiomegaly", "--method", "latent-shift", "--frames", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # the two bad inputs were retried and failed again
    assert "Traceback" not in result.stderr and "12/14 done, 2 failed" in result.stderr
    assert result.stdout.strip() == str(out / "index.csv")
    assert (out / "index.csv").read_text() == index and (out / "site_summary.json").read_text() == summary
    assert {p: p.read_text() for p in out.glob("*/explanation.json")} == records


def test_a_row_cut_short_by_a_crash_is_not_counted(tmp_path):
    path = tmp_path / "index.csv"
    appender = IndexAppender(path)
    appender.append(make_row(input="a.dcm", status="failed", error="a.dcm: the file\nis empty", folder="a"))
    appender.close()
    with path.open("a") as file:
        file.write("b.dcm,done,,Cardiomegaly,0.9,0.3")  # killed in the middle of a line
    assert list(read_index(path)) == ["a.dcm"] and read_index(path)["a.dcm"]["error"] == "a.dcm: the file is empty"
    appender = IndexAppender(path)
    appender.append(make_row(input="b.dcm", status="failed", error="b.dcm: truncated", folder="b"))
    appender.close()
    assert list(read_index(path)) == ["a.dcm", "b.dcm"] and len(path.read_text().splitlines()) == 3




class _ActorDied(Exception):
    actor_init_failed = False


class _Reference:
    """What a method call returns: its value, or the error of an actor that died running it."""

    def __init__(self, value) -> None:
        self.value = value


class _FakeRay:
    """Just enough of Ray's API for the pool, in this process: a method runs when called; an actor whose
    batch holds ``poison`` dies, as a worker process crashing on that file would.
    """

    exceptions = SimpleNamespace(RayActorError=_ActorDied)

    def __init__(self, poison: Path) -> None:
        self.poison = poison
        self.killed = 0

    def cluster_resources(self) -> dict:
        return {"CPU": 2.0}

    def remote(self, _actor_class):
        return SimpleNamespace(options=lambda **_resources: SimpleNamespace(remote=self._actor))

    def _actor(self, *_arguments):
        return SimpleNamespace(
            ready=SimpleNamespace(remote=lambda: _Reference((None, None))),
            explain=SimpleNamespace(remote=lambda batch: _Reference(self._explain(batch))),
        )

    def _explain(self, batch):
        if any(path == self.poison for path, _ in batch):
            return _ActorDied("The actor died unexpectedly before finishing this task.")
        return [FileResult(path, "done", folder, record={}) for path, folder in batch]

    def wait(self, references, num_returns):
        return references[:num_returns], references[num_returns:]

    def get(self, reference):
        if isinstance(reference.value, _ActorDied):
            raise reference.value
        return reference.value

    def kill(self, _actor) -> None:
        self.killed += 1


def test_a_file_that_kills_its_worker_fails_alone_after_three_deaths(tmp_path):
    fake = _FakeRay(tmp_path / "poison.dcm")
    work = [(tmp_path / name, tmp_path / "out" / name) for name in ("a.dcm", "poison.dcm", "b.dcm", "c.dcm")]
    lost: list[str] = []
    results = list(_Pool(fake, work, OPTIONS, None, None, 2, (lost.append, lost.append)).run(workers=2))
    assert sorted(position for position, _ in results) == [0, 1, 2, 3], "each input reported once"
    by_position = dict(results)
    assert [by_position[i].status for i in range(4)] == ["done", "failed", "done", "done"]
    assert "died 3 times" in by_position[1].error and str(work[1][0]) in by_position[1].error
    assert len(lost) == 3 and fake.killed == 3


def test_a_folder_scan_finds_dicom_files_without_a_suffix(tmp_path):
    """PACS exports and DICOM media name their images ``IM000001`` or by UID: a folder scan takes a file without a
    known suffix when its preamble says DICOM, and leaves out the media directory (``DICOMDIR``), files that are
    not DICOM, and the output folder.
    """
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "IM000001").write_bytes(SAMPLE.read_bytes())
    (tmp_path / "1.2.840.113619.2.55.3").write_bytes(DX.read_bytes())
    (tmp_path / "DICOMDIR").write_bytes(SAMPLE.read_bytes()[:132])
    (tmp_path / "README").write_text("a note, not an image\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "IM000002").write_bytes(SAMPLE.read_bytes())
    inputs = list_inputs(tmp_path, tmp_path / "out")
    assert [key for key, _ in inputs] == ["1.2.840.113619.2.55.3", "series/IM000001"]
    assert [output_stem(path) for _, path in inputs] == ["1.2.840.113619.2.55.3", "IM000001"]


def test_a_cluster_that_is_not_there_is_one_sentence_and_exit_2(tmp_path):
    """``--ray HOST:PORT`` where nothing listens (a free loopback port): the run stops at once with the sentence that
    names the address and how to start a cluster, exit 2, nothing explained; ``ray.init`` would retry for minutes.
    """
    pytest.importorskip("ray")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(SAMPLE.read_bytes())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(ArchiveError, match=f"no Ray cluster answers at {address} .*`ray start --head`"):
        run_archive(tmp_path / "in", tmp_path / "out", OPTIONS, ray_address=address)
    result = subprocess.run(
        [sys.executable, "-m", "ChestXrayCounterfactualLib", "batch", tmp_path / "in", "--out", tmp_path / "out",
         "--ray", address],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    sentence = (
        f"error: no Ray cluster answers at {address} (connection refused); start one with `ray start --head` on the "
        "head node (and `ray start --address=HEAD:PORT` on the others), or run on this machine with --ray local:N"
    )
    assert result.stderr.strip().splitlines() == [sentence]
    assert not any(path.is_dir() for path in (tmp_path / "out").iterdir())


def batch(*args):
    return subprocess.run(
        [sys.executable, "-m", "ChestXrayCounterfactualLib", "batch", *map(str, args)],
        capture_output=True, text=True, timeout=600, check=False,
    )


def test_an_image_without_a_finding_is_a_negative_result_not_a_failure(tmp_path):
    """Without ``--finding``, the committed samples with no finding above its threshold are recorded as negative,
    with every finding's probability and no folder, beside the positive one explained; exit 0. A rerun keeps them;
    ``--direction add`` gives a negative image a counterfactual that adds the absent finding nearest its threshold.
    """
    archive = tmp_path / "in"
    archive.mkdir()
    for source in (SAMPLE, JPEG_BASELINE, FALSE_MONOCHROME1):
        (archive / source.name).write_bytes(source.read_bytes())
    out = tmp_path / "out"
    result = batch(archive, "--out", out, "--method", "latent-shift", "--frames", "2")
    assert result.returncode == 0, result.stderr
    assert "3/3 done (2 negative), 0 failed" in result.stderr
    rows = {row["input"]: row for row in index_rows(out)}
    assert {key: row["status"] for key, row in rows.items()} == {
        SAMPLE.name: "done", JPEG_BASELINE.name: "negative", FALSE_MONOCHROME1.name: "negative",
    }
    assert rows[SAMPLE.name]["finding"] == "Cardiomegaly" and (out / rows[SAMPLE.name]["folder"]).is_dir()
    for row in rows.values():
        cells = dict(cell.split("=") for cell in row["probabilities"].split(";"))
        assert set(cells) == {"Atelectasis", "Cardiomegaly", "Effusion", "Pneumothorax"}
        assert all(0 <= float(p) <= 1 for p in cells.values())
    for key in (JPEG_BASELINE.name, FALSE_MONOCHROME1.name):
        assert rows[key]["folder"] == "" and rows[key]["error"].startswith("no finding is above its decision threshold")
    listed = sorted(path.name for path in out.iterdir())
    assert listed == ["index.csv", rows[SAMPLE.name]["folder"], "site_summary.json"]
    summary = json.loads((out / "site_summary.json").read_text())
    assert summary["classified"] == 3 and summary["out_of_distribution"]["scored"] == 1, "negatives have no score"
    index = (out / "index.csv").read_text()
    assert batch(archive, "--out", out, "--method", "latent-shift", "--frames", "2").returncode == 0
    assert (out / "index.csv").read_text() == index
    added = tmp_path / "added"
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / JPEG_BASELINE.name).write_bytes(JPEG_BASELINE.read_bytes())
    result = batch(tmp_path / "one", "--out", added, "--method", "latent-shift", "--frames", "2", "--direction", "add")
    assert result.returncode == 0, result.stderr
    (row,) = index_rows(added)
    assert row["status"] == "done" and row["finding"]
    record = json.loads((added / row["folder"] / "explanation.json").read_text())
    assert record["direction"] == "add" and record["p_original"] < record["threshold"]


class _GpuCluster(_FakeRay):
    """The fake Ray of a cluster with 16 CPUs and 2 GPUs, recording the resources the pool asks its actors for."""

    def __init__(self) -> None:
        super().__init__(Path("none"))
        self.resources: dict = {}

    def cluster_resources(self) -> dict:
        return {"CPU": 16.0, "GPU": 2.0}

    def remote(self, _actor_class):
        def options(**resources):
            self.resources = resources
            return SimpleNamespace(remote=self._actor)

        return SimpleNamespace(options=options)


@pytest.mark.parametrize(
    ("device", "share", "gpus", "capacity", "actor_device"),
    [
        ("cuda:1", 1.0, 1.0, 2, "cuda"),  # Ray shows an actor only its own card, which torch numbers 0
        ("auto", 0.5, 0.5, 4, "cuda"),
        ("cpu", 1.0, 0, 16, "cpu"),
        ("mps", 1.0, 0, 16, "mps"),
    ],
)
def test_actors_reserve_a_gpu_only_when_their_device_is_one(device, share, gpus, capacity, actor_device):
    cluster = _GpuCluster()
    pool = _Pool(cluster, [], OPTIONS, None, device, 2, (print, print), share)
    assert cluster.resources["num_gpus"] == gpus and cluster.resources["num_cpus"] == 1
    assert (pool.capacity, pool.device) == (capacity, actor_device)


def test_a_local_ray_instance_gets_gpus_only_for_a_device_that_may_use_them():
    assert init_arguments("local:2", "cpu")["num_gpus"] == 0
    assert "num_gpus" not in init_arguments("local:2", "cuda")  # Ray counts the cards itself
    assert init_arguments("10.0.0.1:6379", "cuda") == {"address": "10.0.0.1:6379"}
    with pytest.raises(ValueError, match="GPUs per worker"):
        run_archive(Path("."), Path("out"), OPTIONS, ray_address="local:1", gpus_per_worker=0)


#: Hannover images the bundled classifier calls Pneumothorax positive (5 of the first 7 by name), chosen so that the
#: site summary's warning is seen end to end; they say nothing of the Hannover images as a whole.
HANNOVER_PNEUMOTHORAX = ("006f3a8a.png", "0578e08b.png", "09258248.png", "0957ce54.png", "0a7faa2a.png")


def site_batch(tmp_path: Path, images: list[Path]) -> tuple[subprocess.CompletedProcess, Path, dict]:
    """``batch`` over copies of ``images``: its result, output folder and site summary, checked against the index:
    every finding's count of inputs at or above the card's threshold, every explained input's score as recorded.
    """
    (tmp_path / "in").mkdir()
    for image in images:
        (tmp_path / "in" / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "out"
    result = batch(tmp_path / "in", "--out", out, "--method", "latent-shift", "--frames", "2")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "site_summary.json").read_text())
    rows = index_rows(out)
    thresholds = json.loads((ROOT / "weights" / "model_card.json").read_text())["thresholds"]
    probabilities = [dict(cell.split("=") for cell in row["probabilities"].split(";")) for row in rows]
    assert summary["classified"] == len(images) == len(rows)
    for finding, entry in summary["findings"].items():
        assert entry["called_positive"] == sum(float(p[finding]) >= thresholds[finding] for p in probabilities)
    scores = []
    for row in rows:
        if row["status"] == "done":
            record = json.loads((out / row["folder"] / "explanation.json").read_text())
            assert float(row["ood_score"]) == record["out_of_distribution"]["score"]
            scores.append(record["out_of_distribution"]["score"])
    ood = summary["out_of_distribution"]
    assert ood["scored"] == len(scores) and ood["max"] == max(scores)
    return result, out, summary


def test_the_site_summary_of_nih_test_images_warns_of_nothing(tmp_path):
    """The first three NIH test-split images (by the split file): three explained, no finding flagged, no warning."""
    with (ROOT / "weights" / "splits.csv").open(newline="") as file:
        names = [row["file"] for row in csv.DictReader(file) if row["split"] == "test"][:3]
    result, _, summary = site_batch(tmp_path, [shared("nih", "images", name) for name in names])
    assert summary["warnings"] == [] and "wrong for this site" not in result.stderr
    assert summary["findings"]["Pneumothorax"]["expected_rate"] == round(76 / 300, 4)


def test_hannover_images_all_called_pneumothorax_positive_end_the_batch_with_a_warning(tmp_path):
    """Five Hannover images the classifier calls Pneumothorax positive: 100% against the 25% of its NIH test split,
    and even the low end of the 95% interval (57%) is above twice that, so the batch ends with one sentence on
    stderr, the one the summary stores; the findings called positive on two of the five are not flagged.
    """
    images = [shared("mhh_covid19", "images", name) for name in HANNOVER_PNEUMOTHORAX]
    result, _, summary = site_batch(tmp_path, images)
    flagged = [finding for finding, entry in summary["findings"].items() if entry["flagged"]]
    assert flagged == ["Pneumothorax"] and summary["findings"]["Pneumothorax"]["share"] == 1.0
    (warning,) = summary["warnings"]
    assert warning.startswith("Pneumothorax was called positive in 100% of this run's 5 classified images")
    assert result.stderr.strip().splitlines()[-1] == f"warning: {warning}"
