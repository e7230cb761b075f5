"""Reduced precision for the counterfactual search: a precision name (``methods.PRECISIONS``) made into the dtype the
search's network passes are autocast to on a device, and that autocast.

Only the search runs reduced: its dozens of decoder and classifier passes per image are nearly all of an
explanation's arithmetic. The input's classification, the saliency, the reconstruction's record and
out-of-distribution score, the classifier's check of the delivered image, the auditors and the animation stay in
float32, so every probability and verdict an explanation reports is a full-precision measurement of the image
delivered, whichever arithmetic steered the search to it.

float16 is offered on GPUs only: torch autocasts to it on the CPU too, but the project's 2-core CPU has no float16
arithmetic (there it was the slowest of the three) and its decisions were not checked on a CPU.
Asked for on the CPU, the search runs in float32 and the caller gets one sentence saying so, as a device that
cannot be used is reported (``modelset.device``): a warning, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The dtype each precision's search passes are autocast to (None: float32, no autocast).
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision the search runs at (``name``, its autocast ``dtype``; None: float32) and the sentence saying
    why it is not the one asked for (or None).
    """

    name: str
    dtype: torch.dtype | None
    warning: str | None = None


def resolve_precision(name: str, device: torch.device) -> PrecisionChoice:
    """The precision ``name`` (a key of :data:`DTYPES`, checked by ``ExplainOptions``) on ``device``; float16 on the
    CPU is float32 with a warning.
    """
    if name == "fp16" and device.type == "cpu":
        return PrecisionChoice(
            "fp32", None, "fp16 was asked for but it is offered on GPUs only; on the CPU the search ran in float32 "
            "(use bf16 for reduced precision there)",
        )
    return PrecisionChoice(name, DTYPES[name])


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """The network passes inside run at ``dtype`` on ``device``'s kind (float32 with None: autocast disabled)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
