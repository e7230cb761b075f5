"""The module's Python requirements inside Slicer: checked by installed version (never by trying an
import, which succeeds for an old copy Slicer already loaded), installed only with the user's consent
and never in testing mode, torch left to the PyTorch extension.

Supported: Slicer 5.12 and later. It ships pydicom 3 (5.10 ships 2.4.4, which its DICOM plugins import
at start-up, so upgrading it would need a restart and put those plugins on an untested pydicom) and
``slicer.packaging``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
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


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def unmet(requirements: list[str]) -> list[str]:
    """The requirements that are not installed at an accepted version."""
    from packaging.requirements import Requirement

    missing = []
    for line in requirements:
        requirement = Requirement(line)
        version = installed_version(requirement.name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(line)
    return missing


def _imported_distributions() -> dict[str, str | None]:
    """Installed version of every distribution that has a module imported in this process."""
    imported = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        if module in sys.modules:
            for distribution in distributions:
                imported[distribution] = installed_version(distribution)
    return imported


#: Installed packages pip must not replace: the PyTorch extension's torch build (CUDA or CPU), and
#: Slicer's own numpy (a requirement's older release could otherwise pull numpy down).
PINNED = ("torch", "torchvision", "numpy")


def _constraints() -> Path:
    """A pip constraints file pinning the installed :data:`PINNED` packages."""
    pins = [f"{name}=={installed_version(name)}" for name in PINNED if installed_version(name)]
    path = Path(tempfile.mkdtemp(prefix="ChestXrayCounterfactual-")) / "constraints.txt"
    path.write_text("\n".join(pins) + "\n")
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
        found = ", ".join(f"{name} {installed_version(name) or 'missing'}" for name in ("torch", "torchvision"))
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
    user agrees (asked once); without it (batch runs, the module's test) nothing is ever installed.

    False when something is missing and may not be installed, when the user declines, in testing mode
    (tests never install), or when an upgraded package was already imported (Slicer must restart; the
    user is offered a restart). Raises :class:`RequirementsError` when the requirements cannot be met.
    """
    check_slicer_version()
    requirements = read_requirements(requirements_file)
    missing = unmet([*TORCH_REQUIREMENTS, *requirements])
    if not missing:
        return True
    if not install or slicer.app.testingEnabled():
        logging.info("Not installing (%s): %s", "testing mode" if install else "check only", ", ".join(missing))
        return False
    question = _(
        "Chest X-ray Counterfactual needs these Python packages: {packages}. Install them now? PyTorch comes "
        "through the PyTorch extension; the download can take several minutes.").format(packages=", ".join(missing))
    if not slicer.util.confirmOkCancelDisplay(question, windowTitle=REQUESTER):
        return False
    if unmet(list(TORCH_REQUIREMENTS)):
        _install_torch()
    before = _imported_distributions()
    importlib.import_module("slicer.packaging").pip_ensure(
        unmet(requirements),
        constraints=str(_constraints()),
        prompt_install=False,
        prompt_restart=False,
        requester=REQUESTER,
    )
    still = unmet([*TORCH_REQUIREMENTS, *requirements])
    if still:
        raise RequirementsError(_("These requirements could not be installed: {}").format(", ".join(still)))
    stale = sorted(name for name, version in before.items() if installed_version(name) != version)
    if stale:
        if slicer.util.confirmYesNoDisplay(
            _("{packages} were upgraded while an older copy was in use. Restart Slicer now?").format(
                packages=", ".join(stale),
            ),
            windowTitle=REQUESTER,
        ):
            slicer.util.restart()
        return False
    importlib.invalidate_caches()
    return True
