"""Which code a benchmark report was measured on: the commit, and whether tracked files had uncommitted changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def commit_label() -> str:
    """The short hash of HEAD, with " (uncommitted changes)" when tracked files differ from it ("" outside git)."""

    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], capture_output=True, text=True, check=False, cwd=HERE).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    dirty = commit and git("status", "--porcelain", "--untracked-files=no")
    return commit + (" (uncommitted changes)" if dirty else "")
