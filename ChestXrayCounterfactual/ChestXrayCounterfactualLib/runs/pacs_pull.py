"""Pull radiographs from a DICOMweb service for ``batch --pull URL``: the studies listed (``--study``) and those a
QIDO-RS query matches (``--query KEY=VALUE``), each image instance retrieved by WADO-RS into a folder laid out as
``STUDY/SERIES/INSTANCE.dcm``.

The layout is made of UIDs, so an archive run over the folder names every input the same way on every pull: a rerun
(pulled again into a new temporary folder) finds its index rows and output folders and skips what is done. Only
radiograph classes are pulled (CR, DX, Secondary Capture), never this program's own results (series whose
Manufacturer is ours), so results sent back into a study are not explained on the next run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import SendError
from ..outputs.dicom import CR, DX_CLASSES, MANUFACTURER, SC
from ..outputs.pacs import TIMEOUT

#: SOP classes pulled as inputs.
PULLED_CLASSES = (CR, *DX_CLASSES, SC)
#: DICOM JSON tags of the search results read here.
STUDY_UID, SERIES_UID, INSTANCE_UID = "0020000D", "0020000E", "00080018"
SOP_CLASS, MANUFACTURER_TAG = "00080016", "00080070"


def _value(item: Mapping, tag: str) -> str:
    """The first value of ``tag`` in a DICOM JSON object, or ""."""
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def parse_query(terms: Iterable[str]) -> dict[str, str]:
    """QIDO-RS search filters from ``KEY=VALUE`` terms (DICOM keywords, e.g. ``ModalitiesInStudy=CR``)."""
    filters = {}
    for term in terms:
        key, equals, value = term.partition("=")
        if not equals or not key:
            raise SendError(f"{term!r} is not a query term: expected KEY=VALUE, e.g. ModalitiesInStudy=CR")
        filters[key] = value
    return filters


def studies_to_pull(client, studies: Iterable[str], query: Mapping[str, str]) -> list[str]:
    """The listed studies, then those the query matches (when it has terms), each once, in that order."""
    found = list(studies)
    if query:
        matches = client.search_for_studies(search_filters=dict(query), get_remaining=True)
        found += [_value(item, STUDY_UID) for item in matches]
    return list(dict.fromkeys(uid for uid in found if uid))


def pull(url: str, into: Path, studies: Iterable[str] = (), query: Mapping[str, str] | None = None) -> int:
    """Retrieve the image instances of the chosen studies from the DICOMweb service at ``url`` into ``into``;
    returns how many were written. Raises :class:`SendError` if the service cannot be searched or read.
    """
    from dicomweb_client import DICOMwebClient
    from requests import RequestException

    client = DICOMwebClient(url=url, timeout=TIMEOUT)
    written = 0
    try:
        for study in studies_to_pull(client, studies, query or {}):
            ours = {
                _value(series, SERIES_UID)
                for series in client.search_for_series(study, fields=["Manufacturer"])
                if _value(series, MANUFACTURER_TAG) == MANUFACTURER
            }
            for item in client.search_for_instances(study, get_remaining=True):
                series, instance = _value(item, SERIES_UID), _value(item, INSTANCE_UID)
                if series in ours or _value(item, SOP_CLASS) not in PULLED_CLASSES:
                    continue
                dataset = client.retrieve_instance(study, series, instance)
                if str(dataset.get("Manufacturer", "")) == MANUFACTURER:
                    continue
                path = into / study / series / f"{instance}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                dataset.save_as(path, enforce_file_format=True)
                written += 1
    except RequestException as error:
        raise SendError(f"{url}: {error}") from error
    return written
