"""The module's Python requirements inside Slicer: checked by installed version (never by trying an
import, which succeeds for an old copy Slicer already loaded), installed only with the user's consent
and never in testing mode, torch left to the PyTorch extension.

Supported: Slicer 5.12 and later. It ships pydicom 3.0.2 and highdicom 0.27.0 (its DICOM plugins import
them at start-up) and ``slicer.packaging``. A package that is installed already, Slicer's own or another
extension's, is never upgraded: the requirements accept Slicer 5.12's versions, and pip installs what is
missing under constraints that pin everything installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
import tempfile
from pathlib import Path

import slicer
from slicer.i18n import tr as _

MINIMUM_SLICER = (5, 12)
TORCH_REQUIREMENTS = ("torch>=2.4", "torchvision>=0.19")
REQUESTER = "Chest X-ray Counterfactual"


class RequirementsError(RuntimeError):
    """The requirements cannot be met here; the message says what the user can do."""


def check_slicer_version() -> None:
    """Raise :class:`RequirementsError` on a Slicer older than :data:`MINIMUM_SLICER`."""
    version = (int(slicer.app.majorVersion), int(slicer.app.minorVersion))
    if version < MINIMUM_SLICER:
        raise RequirementsError(
            _("Chest X-ray Counterfactual needs Slicer {needed} or later; this is Slicer {found}.").format(
                needed="{}.{}".format(*MINIMUM_SLICER), found="{}.{}".format(*version),
            ),
        )


def read_requirements(path: Path | str) -> list[str]:
    """The requirement lines of a requirements file (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line]


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions() -> dict[str, str]:
    """Every distribution installed in this Python, by canonical name: Slicer's own packages among them."""
    return {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions() if d.metadata["Name"]}


def unmet(requirements: list[str], installed: dict[str, str] | None = None) -> list[str]:
    """The requirements that are not installed at an accepted version (``installed``: the distributions
    to judge by, default what :func:`installed_distributions` finds).
    """
    from packaging.requirements import Requirement

    installed = installed_distributions() if installed is None else installed
    missing = []
    for line in requirements:
        requirement = Requirement(line)
        version = installed.get(canonical(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(line)
    return missing


def _refuse_upgrades(missing: list[str], installed: dict[str, str]) -> None:
    """Raise :class:`RequirementsError` when a requirement asks for another version of an installed package.

    Installed packages are Slicer's own (or another extension's): Slicer may have imported them already
    (its DICOM plugins import pydicom and highdicom at start-up) and was tested with exactly these versions,
    so they are never upgraded here; the module's requirements accept what Slicer ships.
    """
    from packaging.requirements import Requirement

    names = {line: canonical(Requirement(line).name) for line in missing}
    clashes = [(line, installed[name]) for line, name in names.items() if name in installed]
    if clashes:
        found = ", ".join(f"{line} (installed: {version})" for line, version in clashes)
        raise RequirementsError(
            _("These packages are installed at versions this module cannot use, and packages Slicer already has "
              "are never upgraded: {found}. Use a Slicer release this module supports.").format(found=found),
        )


def _constraints(installed: dict[str, str]) -> Path:
    """A pip constraints file pinning every installed distribution at its version, so that installing the
    missing requirements never upgrades or downgrades a package Slicer (or the PyTorch extension) installed.
    """
    path = Path(tempfile.mkdtemp(prefix="ChestXrayCounterfactual-")) / "constraints.txt"
    path.write_text("".join(f"{name}=={version}\n" for name, version in sorted(installed.items())))
    return path


def _install_torch() -> None:
    """torch and torchvision through the PyTorch extension (it picks the CUDA or CPU build)."""
    try:
        import PyTorchUtils
    except ModuleNotFoundError as error:
        raise RequirementsError(
            _("Install the PyTorch extension from the Extensions Manager, restart Slicer, and try again."),
        ) from error
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if logic.torchInstalled():
        installed = installed_distributions()
        found = ", ".join(f"{name} {installed.get(name, 'missing')}" for name in ("torch", "torchvision"))
        raise RequirementsError(
            _(
                "{needed} are needed; installed: {found}. Install them in the PyTorch Utils module, restart "
                "Slicer, and try again.").format(found=found, needed=", ".join(TORCH_REQUIREMENTS)),
        )
    minimum_torch, minimum_torchvision = (r.split(">=")[1] for r in TORCH_REQUIREMENTS)
    logic.installTorch(
        askConfirmation=False,
        torchVersionRequirement=f">={minimum_torch}",
        torchvisionVersionRequirement=f">={minimum_torchvision}",
    )


def ensure(requirements_file: Path | str, install: bool = True) -> bool:
    """True when every requirement is met. With ``install``, what is missing is installed first if the
    user agrees (asked once, before the wait cursor); without it (batch runs, the module's test) nothing is
    ever installed. Nothing installed is ever upgraded (:func:`_refuse_upgrades`, :func:`_constraints`).

    False when something is missing and may not be installed, when the user declines, or in testing mode
    (tests never install). Raises :class:`RequirementsError` when the requirements cannot be met.
    """
    check_slicer_version()
    requirements = read_requirements(requirements_file)
    installed = installed_distributions()
    missing = unmet([*TORCH_REQUIREMENTS, *requirements], installed)
    if not missing:
        return True
    if not install or slicer.app.testingEnabled():
        logging.info("Not installing (%s): %s", "testing mode" if install else "check only", ", ".join(missing))
        return False
    _refuse_upgrades(unmet(requirements, installed), installed)
    question = _(
        "Chest X-ray Counterfactual needs these Python packages: {packages}. Install them now? PyTorch comes "
        "through the PyTorch extension; the download can take several minutes.").format(packages=", ".join(missing))
    if not slicer.util.confirmOkCancelDisplay(question, windowTitle=REQUESTER):
        return False
    with slicer.util.WaitCursor():  # after the question
        if unmet(list(TORCH_REQUIREMENTS), installed):
            _install_torch()
            installed = installed_distributions()
        importlib.import_module("slicer.packaging").pip_ensure(
            unmet(requirements, installed),
            constraints=str(_constraints(installed)),
            prompt_install=False,
            prompt_restart=False,
            requester=REQUESTER,
        )
    importlib.invalidate_caches()
    still = unmet([*TORCH_REQUIREMENTS, *requirements])
    if still:
        raise RequirementsError(_("These requirements could not be installed: {}").format(", ".join(still)))
    return True
