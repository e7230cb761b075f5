"""Which torch device the engine runs on: a user's request (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) made
into a ``torch.device`` this torch can use.

A request this machine cannot meet (no CUDA in this torch build or no card it sees, a card index out of range, a
card whose architecture this torch was not built for, no Apple GPU) is not an error: the engine runs on the CPU
and the caller gets one sentence saying what is missing and what to install, to show the user. A request that is
no device name at all is a bad option (``ValueError``), like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..methods import DEFAULT_DEVICE, check_device

_CPU = torch.device("cpu")


@dataclass(frozen=True)
class DeviceChoice:
    """The device to run on, and the sentence saying why it is the CPU although another was asked for (or None)."""

    device: torch.device
    warning: str | None = None


def resolve_device(request: str | torch.device | None = None) -> DeviceChoice:
    """The device ``request`` names (:func:`..methods.check_device`; None: ``methods.DEFAULT_DEVICE``), or the CPU
    with a one-sentence warning when this machine's torch cannot run on it.
    """
    name = check_device(str(request) if request is not None else DEFAULT_DEVICE)
    if name == "auto":
        if not torch.cuda.is_available():
            return DeviceChoice(torch.device("mps") if _mps_available() else _CPU)
        name = "cuda"  # a card torch sees but cannot use is reported as if asked for
    if name == "cpu":
        return DeviceChoice(_CPU)
    if name == "mps":
        if _mps_available():
            return DeviceChoice(torch.device("mps"))
        return _fallback(
            "mps was asked for but this torch sees no Apple GPU (mps needs Apple silicon, macOS 12.3 or later and "
            "an arm64 build of torch)",
        )
    if not torch.cuda.is_available():
        built = torch.version.cuda
        if built is None:
            reason = (
                f"this torch ({torch.__version__}) was built without CUDA; install a CUDA build of torch "
                "(https://pytorch.org/get-started/locally/)"
            )
        else:
            reason = f"this CUDA {built} build of torch sees no usable NVIDIA card; check the card and its driver"
        return _fallback(f"{name} was asked for but {reason}")
    index = int(name.partition(":")[2] or torch.cuda.current_device())
    count = torch.cuda.device_count()
    if index >= count:
        return _fallback(f"{name} was asked for but torch sees {count} CUDA card(s), numbered 0 to {count - 1}")
    problem = _cuda_problem(index)
    if problem is not None:
        return _fallback(f"{name} was asked for but {problem}")
    return DeviceChoice(torch.device("cuda", index))


def _fallback(reason: str) -> DeviceChoice:
    return DeviceChoice(_CPU, f"{reason}; running on the CPU instead")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _cuda_problem(index: int) -> str | None:
    """Why CUDA card ``index`` cannot run this torch's kernels (its architecture is not in the build), or None."""
    major, minor = torch.cuda.get_device_capability(index)
    built = torch.cuda.get_arch_list()
    if not built or f"sm_{major}{minor}" in built:
        return None
    # A card runs code built for its own major architecture at an equal or lower minor version, or PTX it can JIT.
    if any(_runs(arch, major, minor) for arch in built):
        return None
    return (
        f"card {index} ({torch.cuda.get_device_name(index)}, sm_{major}{minor}) is not among the architectures this "
        f"torch was built for ({' '.join(built)}); install a torch build for it (https://pytorch.org/get-started/locally/)"
    )


def _runs(arch: str, major: int, minor: int) -> bool:
    """Whether code for ``arch`` (``sm_86``, ``compute_90``) runs on a card of compute capability major.minor."""
    kind, _, digits = arch.partition("_")
    if not digits.isdigit():
        return False
    built_major, built_minor = int(digits[:-1]), int(digits[-1])
    if kind == "compute":  # PTX: compiled by the driver for any newer card
        return (built_major, built_minor) <= (major, minor)
    return built_major == major and built_minor <= minor
