"""The engine's own exceptions: each carries one sentence a user can act on.

Every entry point (library, CLI, Slicer logic) lets these through unchanged; anything else that
escapes the reader is a bug, and the CLI reports it as such.
"""

from __future__ import annotations


class ExplainerError(Exception):
    """Base of every error the engine reports to a user instead of a traceback."""


class InputError(ExplainerError):
    """An input file that cannot be read or explained. ``str(error)`` names the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(reason.split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")


class NotAnImageError(InputError):
    """Neither DICOM nor an image format we read (PNG, JPEG, NRRD, NIfTI, MHA)."""


class NoPixelDataError(InputError):
    """A DICOM object without an image (structured report, presentation state, RT plan, DICOMDIR, ...)."""


class UnsupportedImageError(InputError):
    """An image of a kind we do not explain (photometric interpretation, dimensionality), or pixels that are not a
    picture of a patient (a segmentation, a dose grid).
    """


class MissingDecoderError(InputError):
    """Compressed pixel data whose decoder package is not installed."""


class CorruptPixelDataError(InputError):
    """Pixel data that is truncated or cannot be decoded."""


class ImageSizeError(InputError):
    """An image too small to explain or too large to hold."""


class ConstantImageError(InputError):
    """An image with one value everywhere: nothing for a classifier to see."""


class NotExplainableError(InputError):
    """A readable image the models were not made for (a CT slice, an ultrasound frame, a lateral view): refused
    before explaining, by :func:`ChestXrayCounterfactualLib.explain.gate.check_header`.
    """


class WeightsError(ExplainerError):
    """Model files that are missing, altered (sha256 mismatch) or not loadable safely."""


class SpecError(ExplainerError):
    """A model-set spec that cannot be used; the message says which field and why."""


class NoFindingError(ExplainerError):
    """No finding is above its threshold and none was asked for: the image is negative, which is a result, not a
    failure. ``probabilities`` holds the classifier's probability of every finding (empty if not known).
    """

    def __init__(self, message: str, probabilities: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.probabilities = dict(probabilities or {})


class CancelledError(ExplainerError):
    """The caller's progress callback asked to stop."""


class ArchiveError(ExplainerError):
    """An archive run that cannot start or go on: no such input list, no Ray, workers without models."""


class SendError(ExplainerError):
    """A PACS destination or source that cannot be parsed, reached, or that refused an object."""
