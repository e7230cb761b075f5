"""The results index of an archive run, ``OUT/index.csv``: one CSV row per input, written only by the driver.

While a run goes on, every result is appended as one line and flushed to disk (fsync) before the next, so
a crash or a kill loses at most the line being written; reading ignores a trailing partial line and takes
the last row of an input that appears twice (a retried failure). At the end of a run the index is rewritten
atomically (a temporary file renamed over it): one row per input, in input order.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

NAME = "index.csv"
COLUMNS = (
    "input", "status", "error", "finding", "p_original", "p_counterfactual", "flipped", "seconds", "folder", "sent",
    "probabilities", "ood_score",
)
#: The columns of older indexes: before ``sent`` (what ``--send``/``--stow`` delivered) and ``probabilities``, and
#: before ``ood_score`` (the out-of-distribution score of an explained input).
OLDER_COLUMNS = (COLUMNS[:-3], COLUMNS[:-1])

#: One row: every column of :data:`COLUMNS`, as text ("" where it does not apply).
Row = dict[str, str]


def probabilities_text(probabilities: Mapping[str, float]) -> str:
    """Every finding's probability as one index cell: ``Atelectasis=0.123456;Cardiomegaly=0.987654;...``."""
    return ";".join(f"{finding}={p:.6f}" for finding, p in probabilities.items())


def make_row(**values: object) -> Row:
    """A row from keyword values named as :data:`COLUMNS`; missing ones are empty, text is kept on one line."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not index columns: {sorted(unknown)}")
    return {column: " ".join(str(values.get(column, "")).split()) for column in COLUMNS}


def _line(row: Mapping[str, str]) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow([row[column] for column in COLUMNS])
    return text.getvalue()


def _complete_text(path: Path) -> str:
    """The file's text up to its last newline: a line cut short by a crash is not a row."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return text[: text.rfind("\n") + 1]


def read_index(path: Path) -> dict[str, Row]:
    """The rows of the index at ``path`` by input (the last row of an input wins); empty if there is none.
    Lines cut short or with the wrong number of fields are ignored; rows of an older index (:data:`OLDER_COLUMNS`)
    get the columns it lacks empty.
    """
    rows: dict[str, Row] = {}
    lines = _complete_text(path).splitlines()
    for fields in csv.reader(lines[1:]):
        if len(fields) in {len(older) for older in OLDER_COLUMNS}:
            fields += [""] * (len(COLUMNS) - len(fields))
        if len(fields) == len(COLUMNS):
            row = dict(zip(COLUMNS, fields, strict=True))
            rows[row["input"]] = row
    return rows


class IndexAppender:
    """Appends rows to the index, each flushed and fsynced before :meth:`append` returns.

    Opening cuts off a partial last line left by a crash (so the next row starts on its own line) and writes
    the header if the file is new or empty.
    """

    def __init__(self, path: Path) -> None:
        complete = _complete_text(path)
        self._file = path.open("a+", encoding="utf-8", newline="")
        self._file.truncate(len(complete.encode("utf-8")))
        if not complete:
            self._file.write(_line(dict(zip(COLUMNS, COLUMNS, strict=True))))
        self._sync()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def append(self, row: Mapping[str, str]) -> None:
        """Write ``row`` as one line and make it durable."""
        self._file.write(_line(row))
        self._sync()

    def close(self) -> None:
        self._file.close()


def rewrite_index(path: Path, rows: Iterable[Mapping[str, str]]) -> None:
    """Replace the index with ``rows`` (header first) in one atomic rename."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with partial.open("w", encoding="utf-8", newline="") as file:
        file.write(_line(dict(zip(COLUMNS, COLUMNS, strict=True))))
        for row in rows:
            file.write(_line(row))
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)
