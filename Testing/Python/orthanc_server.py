"""A real PACS for the tests: Debian's Orthanc with its DICOMweb plugin, started on free loopback ports with its
storage in a temporary folder, stopped afterwards. It reads only the configuration written here (never the
system's /etc/orthanc, whose service, if any, keeps its own ports), so tests do not depend on a running service.

:func:`orthanc` is a pytest fixture (one server per test module); tests that use it skip, naming the packages,
where Orthanc or the plugin is not installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

AET = "TESTPACS"
#: The tests' own AE title for reading back over DICOM: Orthanc answers C-GET only to modalities it lists.
READER_AET = "CXRCFTEST"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_SECONDS = 60


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its DICOM node (``node``, AET@HOST:PORT), REST base URL and DICOMweb base URL."""

    dicom_port: int
    http_port: int

    @property
    def node(self) -> str:
        return f"{AET}@127.0.0.1:{self.dicom_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self, path: str) -> object:
        """GET a REST resource of Orthanc's own API, decoded from JSON."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return json.loads(response.read())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_up(server: Orthanc, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            server.rest("/system")
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"Orthanc did not answer within {START_SECONDS} s:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A fresh Orthanc (empty storage) for the test module, on free loopback ports."""
    executable = shutil.which("Orthanc")
    if executable is None or not PLUGIN.is_file():
        pytest.skip(f"needs Orthanc and its DICOMweb plugin ({PLUGIN}): apt-get install orthanc orthanc-dicomweb")
    folder = tmp_path_factory.mktemp("orthanc")
    server = Orthanc(dicom_port=_free_port(), http_port=_free_port())
    config = {
        "Name": AET,
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": server.http_port,
        "DicomPort": server.dicom_port,
        "DicomAet": AET,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {"tests": [READER_AET, "127.0.0.1", _free_port()]},
    }
    (folder / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = folder / "orthanc.log"
    with log.open("w") as output:
        process = subprocess.Popen([executable, str(folder / "orthanc.json")], stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(server, process, log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
