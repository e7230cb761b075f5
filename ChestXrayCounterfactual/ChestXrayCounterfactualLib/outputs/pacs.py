"""Sending an explanation's DICOM objects to an archive: C-STORE to a DICOM node (``--send AET@HOST:PORT``,
pynetdicom) or STOW-RS to a DICOMweb service (``--stow URL``, dicomweb-client, which Slicer also ships).

Sending is a step after the output folder is complete, never part of it: a failed send leaves every file in place.
Each destination is tried ``attempts`` times with a pause between; what was delivered is recorded in the output
folder (``sent.json``: destination -> SOP Instance UIDs), so a rerun sends only what a destination has not
acknowledged (an interrupted send is redone). The objects keep their UIDs, so a resend replaces, never duplicates.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import SendError

SENT = "sent.json"
CALLING_AET = "CXRCF"
#: Seconds to wait for a DICOM association, a DIMSE reply or an HTTP response.
TIMEOUT = 30.0


@dataclass(frozen=True)
class Destination:
    """Where results go: ``kind`` "dicom" (``address`` AET@HOST:PORT, C-STORE) or "dicomweb" (``address`` the
    service's base URL, STOW-RS).
    """

    kind: str
    address: str

    def send(self, datasets: Sequence[Dataset]) -> None:
        """Store every dataset at this destination or raise :class:`SendError` naming what failed."""
        if self.kind == "dicom":
            _c_store(datasets, *parse_node(self.address))
        else:
            _stow(datasets, self.address)


def parse_node(address: str) -> tuple[str, str, int]:
    """(called AE title, host, port) from ``AET@HOST:PORT``; raises :class:`SendError` with the expected form."""
    aet, at, rest = address.partition("@")
    host, colon, port = rest.rpartition(":")
    if not (at and colon and aet and host and port.isdigit()) or len(aet) > 16:
        raise SendError(f"{address!r} is not a DICOM node: expected AET@HOST:PORT, e.g. PACS@10.0.0.5:104")
    return aet, host, int(port)


def destinations(send: Iterable[str] = (), stow: Iterable[str] = ()) -> list[Destination]:
    """The destinations named by ``--send`` and ``--stow`` options, each checked for its form and its package."""
    nodes = [Destination("dicom", address) for address in send]
    for node in nodes:
        parse_node(node.address)
    webs = [Destination("dicomweb", url) for url in stow]
    for web in webs:
        if not web.address.startswith(("http://", "https://")):
            raise SendError(f"{web.address!r} is not a DICOMweb URL (http:// or https://)")
    for targets, package, module in ((nodes, "pynetdicom", "pynetdicom"), (webs, "dicomweb-client", "dicomweb_client")):
        if targets and importlib.util.find_spec(module) is None:
            raise SendError(f"{package} is not installed: pip install 'chestxraycounterfactual[pacs]'")
    return nodes + webs


def _c_store(datasets: Sequence[Dataset], aet: str, host: str, port: int) -> None:
    from pynetdicom import AE

    ae = AE(ae_title=CALLING_AET)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate(host, port, ae_title=aet)
    if not association.is_established:
        raise SendError(f"{aet}@{host}:{port} did not accept an association (is it running, and does it know us?)")
    try:
        for ds in datasets:
            status = association.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None or (code != 0x0000 and code & 0xF000 != 0xB000):  # success, or a warning (stored)
                raise SendError(f"{aet}@{host}:{port} refused {ds.SOPInstanceUID} (status {code})")
    finally:
        association.release()


def _stow(datasets: Sequence[Dataset], url: str) -> None:
    from dicomweb_client import DICOMwebClient
    from requests import RequestException

    client = DICOMwebClient(url=url, timeout=TIMEOUT)
    try:
        for study in dict.fromkeys(str(ds.StudyInstanceUID) for ds in datasets):
            response = client.store_instances([ds for ds in datasets if ds.StudyInstanceUID == study], study)
            if response.get("FailedSOPSequence"):  # present and empty when every instance was stored
                failed = ", ".join(item.ReferencedSOPInstanceUID for item in response.FailedSOPSequence)
                raise SendError(f"{url} refused {failed}")
    except RequestException as error:
        raise SendError(f"{url}: {error}") from error


def sent_record(folder: Path) -> dict[str, list[str]]:
    """What earlier sends delivered from ``folder``: destination address -> SOP Instance UIDs."""
    try:
        return json.loads((folder / SENT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _record(folder: Path, record: dict[str, list[str]]) -> None:
    partial = folder / f".{SENT}.partial-{os.getpid()}"
    partial.write_text(json.dumps(record, indent=2), encoding="utf-8")
    partial.replace(folder / SENT)


def deliver(
    folder: Path, files: Sequence[Path], targets: Sequence[Destination], attempts: int = 3, pause: float = 2.0,
) -> list[str]:
    """Send ``files`` (an output folder's DICOM objects) to every target that has not acknowledged them all, each
    tried ``attempts`` times; returns one sentence per target that still failed (empty: all delivered).
    """
    datasets = [pydicom.dcmread(file) for file in files]
    uids = sorted(str(ds.SOPInstanceUID) for ds in datasets)
    record = sent_record(folder)
    failures = []
    for target in targets:
        if sorted(record.get(target.address, [])) == uids:
            continue
        for attempt in range(1, attempts + 1):
            try:
                target.send(datasets)
            except Exception as error:
                if attempt == attempts:
                    failures.append(f"sending to {target.address} failed {attempts} times: {error}")
                else:
                    time.sleep(pause)
                continue
            record[target.address] = uids
            _record(folder, record)
            break
    return failures
