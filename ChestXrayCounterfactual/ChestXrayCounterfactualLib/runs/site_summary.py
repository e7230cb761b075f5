"""The site summary of an archive run, ``OUT/site_summary.json``: does the model set behave at this site as it did
where it was tested?

Per finding it holds the share of the run's classified inputs called positive at the stored threshold, against the
expected rate: the share the classifier calls positive at the same threshold on the model card's held-out NIH test
split, counted from the card's test sensitivity, specificity and label counts. That rate, not the label prevalence
(also given, from the validation split), is what thresholds chosen by Youden's J produce on the population they
were chosen for: such thresholds call findings positive well above their prevalence there (see the README).
A finding is flagged, with one sentence in ``warnings``, when even the low end of the 95% interval of its share
is above twice the expected rate, so that a handful of images seldom flags one by chance. The summary also gives the
out-of-distribution scores (:mod:`..explain.gate`) of the explained inputs; negative inputs are not reconstructed
and have none.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

NAME = "site_summary.json"
#: A finding is flagged when it is called positive at more than this many times its expected rate.
FACTOR = 2.0
#: The normal quantile of the two-sided 95% interval of a share (Wilson's score interval).
Z = 1.96


@dataclass(frozen=True)
class SiteReference:
    """What a run's shares are compared with, from the model card: ``expected`` (the share called positive on the
    card's test split, of ``test_images``) and ``prevalence`` (the validation split's label prevalence) per finding,
    and ``ood_cut``, the highest out-of-distribution score of a validation radiograph (None: not scored).
    """

    model_set: str
    thresholds: dict[str, float]
    expected: dict[str, float]
    prevalence: dict[str, float]
    test_images: int
    ood_cut: float | None = None


def reference_from_card(card: Mapping, ood_cut: float | None = None) -> SiteReference:
    """The reference a model card (``weights/model_card.json``, parsed) gives; findings without test metrics
    or validation counts get no expected rate or prevalence.
    """
    metrics = card.get("test_metrics", {})
    images = int(metrics.get("test_images", 0))
    expected = {}
    for finding, m in metrics.get("classifier", {}).items():
        calls = round(m["sensitivity"] * m["positives"]) + round((1 - m["specificity"]) * m["negatives"])
        expected[finding] = calls / (m["positives"] + m["negatives"])
    validation = card.get("training_data", {}).get("nih", {}).get("validation", {})
    prevalence = {f: n / validation["images"] for f, n in validation.get("positives", {}).items()}
    thresholds = {f: float(t) for f, t in card["thresholds"].items()}
    return SiteReference(card.get("name", "bundled"), thresholds, expected, prevalence, images, ood_cut)


def load_reference(models: str | Path | None) -> SiteReference | None:
    """The reference of the model set ``models`` names (as ``--models`` takes it), or None if it has no model card
    (a spec file): nothing to compare with.
    """
    from ..explain.gate import load_ood_reference
    from ..modelset import CARD_NAME, default_weights_dir

    folder = Path(models) if models is not None else default_weights_dir()
    if not (folder / CARD_NAME).is_file():
        return None
    card = json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))
    ood = load_ood_reference()
    applies = ood.autoencoder_sha256 == card.get("files", {}).get("autoencoder", {}).get("sha256")
    return reference_from_card(card, ood.cut if applies else None)


def wilson_interval(count: int, n: int) -> tuple[float, float]:
    """The 95% score interval of the share ``count / n`` (Wilson), which stays inside [0, 1] for small ``n``."""
    share = count / n
    centre = (share + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * math.sqrt(share * (1 - share) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _probabilities(row: Mapping[str, str]) -> dict[str, float]:
    """The index's ``probabilities`` cell as a dict (empty for a failed input)."""
    cells = (cell.split("=") for cell in row["probabilities"].split(";") if cell)
    return {finding: float(p) for finding, p in cells}


def _finding(finding: str, calls: int, n: int, reference: SiteReference) -> dict:
    low, high = wilson_interval(calls, n)
    expected = reference.expected.get(finding)
    return {
        "threshold": round(reference.thresholds[finding], 4),
        "called_positive": calls,
        "share": round(calls / n, 4),
        "share_95ci": [round(low, 4), round(high, 4)],
        "expected_rate": round(expected, 4) if expected is not None else None,
        "ratio": round(calls / n / expected, 2) if expected else None,
        "validation_prevalence": round(reference.prevalence[finding], 4) if finding in reference.prevalence else None,
        "flagged": bool(expected and low > FACTOR * expected),
    }


def _warning(finding: str, entry: dict, n: int, reference: SiteReference) -> str:
    return (
        f"{finding} was called positive in {entry['share']:.0%} of this run's {n} classified images "
        f"({entry['called_positive']}; 95% interval {entry['share_95ci'][0]:.0%}-{entry['share_95ci'][1]:.0%}), "
        f"more than {FACTOR:g} times the {entry['expected_rate']:.0%} it is called positive at the same threshold "
        f"({entry['threshold']:.2f}) on the {reference.test_images} images of its NIH test split: its threshold "
        "may be wrong for this site"
    )


def _ood(scores: list[float], cut: float | None) -> dict:
    """The explained inputs' out-of-distribution scores: how many, their median, 95th percentile and maximum, and
    how many are above ``cut``.
    """
    if not scores:
        return {"scored": 0}
    ordered = sorted(scores)
    return {
        "scored": len(ordered),
        "median": round(statistics.median(ordered), 4),
        "p95": round(ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)], 4),
        "max": round(ordered[-1], 4),
        "cut": round(cut, 4) if cut is not None else None,
        "above_cut": sum(score > cut for score in ordered) if cut is not None else None,
    }


def summarise(rows: Iterable[Mapping[str, str]], reference: SiteReference) -> dict:
    """The site summary of an index's ``rows`` (see the module's docstring); its ``warnings`` are sentences.

    An input counts as classified when its row has probabilities (explained, negative, or found complete); a finding
    counts as called positive when its probability is at or above its threshold, as the engine decides.
    """
    rows = list(rows)
    classified = [p for p in map(_probabilities, rows) if p]
    n = len(classified)
    findings = {
        finding: _finding(finding, sum(p[finding] >= threshold for p in classified), n, reference)
        for finding, threshold in reference.thresholds.items()
    } if n else {}
    scores = [float(row["ood_score"]) for row in rows if row["ood_score"]]
    return {
        "model_set": reference.model_set,
        "inputs": len(rows),
        "classified": n,
        "expected_rate": f"share called positive at the same threshold on the {reference.test_images} images of the "
        "model card's NIH test split",
        "flag_rule": f"the low end of the 95% interval of the share is above {FACTOR:g} times the expected rate",
        "findings": findings,
        "out_of_distribution": _ood(scores, reference.ood_cut),
        "warnings": [
            _warning(finding, entry, n, reference) for finding, entry in findings.items() if entry["flagged"]
        ],
    }


def write_summary(path: Path, summary: Mapping) -> None:
    """Write ``summary`` as JSON at ``path`` in one atomic rename (a temporary file beside it first)."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with partial.open("w", encoding="utf-8") as file:
        json.dump(summary, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)
