"""The outside DICOM validators, run on written files: dicom3tools' ``dciodvfy`` (one object against its IOD) and
``dcentvfy`` (patient/study/series consistency over a set), and PixelMed's ``DicomSRValidator`` (an SR against its
templates and context groups).

Each returns the lines the tool prints, split into errors and warnings, because none of them says so by its exit
code (dciodvfy exits 0 on errors). :func:`require` skips a test, with the reason and the Debian package to install,
where a tool is missing (``.ci/run`` installs them, so CI always runs the tests that use them).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
#: The XPath limits of current JDKs stop PixelMed's template rules at once unless lifted (see the shared notes).
JAVA_XPATH_LIMITS = (
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)
PACKAGES = {"dciodvfy": "dicom3tools", "dcentvfy": "dicom3tools", "java": "pixelmed-apps"}


@dataclass
class Verdict:
    """What one validator said: its error and warning lines, and everything it printed."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str = ""

    def __str__(self) -> str:
        return "\n".join(self.errors + self.warnings) or "(no errors, no warnings)"


def require(*tools: str) -> None:
    """Skip the calling test unless every tool is installed (``pixelmed`` means PixelMed's jar and a Java runtime)."""
    for tool in tools:
        if tool == "pixelmed":
            if not PIXELMED_JAR.is_file() or shutil.which("java") is None:
                pytest.skip(f"needs PixelMed's validator ({PIXELMED_JAR} and java): apt-get install pixelmed-apps")
        elif shutil.which(tool) is None:
            pytest.skip(f"needs {tool}: apt-get install {PACKAGES[tool]}")


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    return done.stdout + done.stderr


def _verdict(output: str, error: str, warning: str) -> Verdict:
    lines = [line.strip() for line in output.splitlines()]
    return Verdict(
        errors=[line for line in lines if line.startswith(error)],
        warnings=[line for line in lines if line.startswith(warning)],
        output=output,
    )


def dciodvfy(path: Path) -> Verdict:
    """dciodvfy's verdict on one object; warnings about what a DICOMDIR would need (expected outside media) dropped."""
    verdict = _verdict(_run(["dciodvfy", "-new", str(path)]), "Error", "Warning")
    verdict.warnings = [line for line in verdict.warnings if "DICOMDIR" not in line]
    return verdict


def dcentvfy(paths: list[Path]) -> Verdict:
    """dcentvfy's verdict on a set of objects taken together (the input with its outputs)."""
    return _verdict(_run(["dcentvfy", *map(str, paths)]), "Error", "Warning")


def sr_validator(path: Path) -> Verdict:
    """PixelMed's DicomSRValidator on an SR, checking template identifiers and content item order."""
    command = [
        "java",
        *JAVA_XPATH_LIMITS,
        "-cp",
        str(PIXELMED_JAR),
        "com.pixelmed.validate.DicomSRValidator",
        "-checktemplateid",
        "-checkcontentitemorder",
        str(path),
    ]
    return _verdict(_run(command), "Error", "Warning")
