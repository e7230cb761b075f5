"""After an archive run, send each finished input's DICOM objects to the ``--send``/``--stow`` destinations and say
in ``OUT/index.csv`` (column ``sent``) what happened: ``yes``, or the sentence of the last failed attempt.

It runs over the whole index, so a rerun also delivers what an earlier run explained but could not send (or was
killed while sending); what a destination acknowledged is never sent again (see :mod:`.pacs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..outputs.folder import DICOM_FOLDER
from ..outputs.pacs import Destination, deliver
from .index import NAME, read_index, rewrite_index


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM objects of one output folder, in name order (none if it was written without ``--dicom``)."""
    return sorted((folder / DICOM_FOLDER).glob("*.dcm"))


def deliver_folder(folder: Path, targets: Sequence[Destination], attempts: int = 3) -> str:
    """Deliver one output folder; returns the ``sent`` column's text: "yes" or why not."""
    files = dicom_files(folder)
    if not files:
        return f"no DICOM objects in {folder / DICOM_FOLDER} (rerun with --dicom --overwrite)"
    failures = deliver(folder, files, targets, attempts)
    return "; ".join(failures) if failures else "yes"


def deliver_archive(
    out: Path, targets: Sequence[Destination], say: Callable[[str], None] | None = None, attempts: int = 3,
) -> int:
    """Deliver every finished input of the index at ``out`` and record the outcome in its ``sent`` column; returns
    how many inputs could not be delivered (each named through ``say``).
    """
    rows = read_index(out / NAME)
    failed = 0
    for row in rows.values():
        if row["status"] == "failed" or not row["folder"]:
            continue
        row["sent"] = deliver_folder(out / row["folder"], targets, attempts)
        if row["sent"] != "yes":
            failed += 1
            if say:
                say(f"error: {row['input']}: {row['sent']}")
    rewrite_index(out / NAME, rows.values())
    return failed
