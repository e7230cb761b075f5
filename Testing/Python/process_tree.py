"""The Ray worker processes below this one, found in /proc (Linux): the archive test kills one of them, the
throughput benchmark reads their peak memory. Ray titles an archive actor ``ray::ArchiveWorker`` and, while it
explains a batch, ``ray::ArchiveWorker.explain``.
"""

from __future__ import annotations

import os
from pathlib import Path


def descendants(root: int) -> list[int]:
    """The process ids below ``root`` in the process tree."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # a process that ended while we looked
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def titled(prefix: bytes) -> list[int]:
    """The processes below this one whose title (command line) starts with ``prefix``."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(prefix):
                found.append(pid)
        except OSError:  # ended while we looked
            continue
    return found
