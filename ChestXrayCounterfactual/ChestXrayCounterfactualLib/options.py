"""What to explain and how: the one object every front end (command line, archive runs, Ray actors, the Slicer
panel and its headless script) makes and hands to the engine, and the only place the options are listed.

Torch-free (it imports only :mod:`.methods`), so a front end can make and check it before any model is loaded.
It is checked once, when it is made: a bad option raises ``ValueError`` with a sentence, never ``SystemExit``
(which inside Slicer would close the application).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import methods

#: Frames of the animation from the input to the counterfactual unless told otherwise.
DEFAULT_FRAMES = 8


@dataclass(frozen=True, kw_only=True)
class ExplainOptions:
    """What to explain (``finding``; None: the most probable above its threshold), how (``method``, ``saliency``,
    ``direction``, None: remove the finding if present, add it if absent; ``strength``, None: the default for the
    model set, see :data:`methods.DEFAULT_STRENGTH`; ``frames`` of the animation) and how the results are written
    (``overwrite`` existing folders, ``anonymize``, also ``dicom``). ``precision`` is the arithmetic of the
    counterfactual search's network passes (:data:`methods.PRECISIONS`); what is reported is measured in float32.
    """

    finding: str | None = None
    method: str = methods.DEFAULT_COUNTERFACTUAL
    saliency: str = methods.DEFAULT_SALIENCY
    direction: str | None = None
    strength: str | None = None
    frames: int = DEFAULT_FRAMES
    precision: str = methods.DEFAULT_PRECISION
    overwrite: bool = False
    anonymize: bool = False
    dicom: bool = False

    def __post_init__(self) -> None:
        """Raise ``ValueError`` naming the first option that cannot work."""
        methods.check(self.method, self.saliency, self.direction, self.strength, self.precision)
        if not isinstance(self.frames, int) or isinstance(self.frames, bool) or self.frames < 2:
            raise ValueError(f"frames must be a whole number of at least 2, not {self.frames!r}")
