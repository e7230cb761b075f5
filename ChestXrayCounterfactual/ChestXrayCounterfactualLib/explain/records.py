"""Reading an explanation's record (``Explanation.record()``, ``explanation.json``) without torch, so the
Slicer panel and the batch code can word a result before any model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping

INTENDED_USE = "research and education, not for diagnosis"


def outcome_line(record: Mapping) -> str:
    """"Cardiomegaly p 0.880 -> 0.410 (threshold 0.460, flipped; 2 of 3 independent models agree) in 2.3 s on cpu"
    from an explanation's record (the verdict only when the model set has auditors, the device when recorded).
    """
    flipped = "flipped" if record["flipped"] else "not flipped"
    verdict = f"; {record['verdict']}" if record.get("verdict") else ""
    return (
        f"{record['finding']} p {record['p_original']:.3f} -> {record['p_counterfactual']:.3f} "
        f"(threshold {record['threshold']:.3f}, {flipped}{verdict}) in {record['seconds']['total']:.1f} s"
        + (f" on {record['device']}" if record.get("device") else "")
    )


def strength_line(record: Mapping) -> str:
    """"strength typical: the default: to 0.08, the median probability of ...; the animation crosses the threshold
    at frame 5 of 8" from an explanation's record (frames counted from 1, the original being the first).
    """
    line = f"strength {record['strength']}: {record['strength_reason']}"
    crossing, frames = record.get("crossing_frame"), record.get("frames")
    if crossing is not None and frames:
        line += f"; the animation crosses the threshold at frame {crossing + 1} of {frames}"
    return line


def input_lines(record: Mapping) -> list[str]:
    """How usual the input is and what to know about it: the out-of-distribution score (when the model set has a
    reference) and every warning, one line each.
    """
    ood = record.get("out_of_distribution")
    lines = []
    if ood:
        lines.append(
            f"out-of-distribution score {ood['score']:.2f}: above {ood['percentile']:.0f}% of the "
            f"{ood['validation_images']} validation radiographs (warned above {ood['cut']:.2f})",
        )
    return lines + [f"warning: {warning}" for warning in record.get("warnings", [])]
