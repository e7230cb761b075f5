"""Reduced precision against float32 on held-out positives: whether the decisions agree, and what it saves.

    .venv/bin/python Testing/benchmarks/precision.py [--device cpu] [--precisions bf16] [--cases 6]
    .venv/bin/python Testing/benchmarks/precision.py --device cuda --precisions bf16 fp16

Per finding (``--findings``), the first ``--cases`` test-split images the model calls positive (NIH-boxed ones first,
then by name: ``benchmark.positive_cases``), each explained with the default method and strength in float32 and at
each precision asked for, one right after the other (so the machine's load falls on all alike), after one untimed
explanation at each precision. Per case: whether the delivered image flipped the classifier, the auditors' verdict
(how many changed their mind), p after and the seconds of ``Explainer.explain``. Prints the table and writes
``results/precision.json`` beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark import positive_cases, split_rows
from ChestXrayCounterfactualLib import Explainer, methods
from ChestXrayCounterfactualLib.explain.explanation import Explanation
from ChestXrayCounterfactualLib.modelset import default_weights_dir
from ChestXrayCounterfactualLib.options import ExplainOptions

HERE = Path(__file__).resolve().parent


def decisions(explanation: Explanation) -> dict:
    """What a reduced precision must not change: the flip, how many auditors changed their mind, p after; and the
    seconds it took.
    """
    return {
        "flipped": explanation.flipped,
        "auditors_agreeing": sum(entry["agrees"] for entry in explanation.audit.values()),
        "p_after": explanation.p_counterfactual,
        "seconds": explanation.seconds["total"],
        "precision": explanation.precision,
    }


def compare(explainer: Explainer, cases: list[dict], finding: str, precisions: list[str]) -> list[dict]:
    """Each case explained at float32 and at each of ``precisions``, one after the other: its decisions at each."""
    options = ExplainOptions(finding=finding)
    rows = []
    for case in cases:
        row: dict = {"file": case["file"], "finding": finding, "p_before": case["p"]}
        for precision in ["fp32", *precisions]:
            row[precision] = decisions(explainer.explain(case["image"], replace(options, precision=precision)))
        rows.append(row)
        print(f"{finding} {case['file']}: " + ", ".join(
            f"{p} flip {row[p]['flipped']} auditors {row[p]['auditors_agreeing']} p {row[p]['p_after']:.3f} "
            f"{row[p]['seconds']:.2f} s" for p in ["fp32", *precisions]
        ), flush=True)
    return rows


def summary(rows: list[dict], precision: str) -> dict:
    """How often ``precision`` gave float32's flip and verdict, how far p after moved, and the seconds of each."""
    delta = [abs(r[precision]["p_after"] - r["fp32"]["p_after"]) for r in rows]
    fp32 = float(np.median([r["fp32"]["seconds"] for r in rows]))
    reduced = float(np.median([r[precision]["seconds"] for r in rows]))
    return {
        "cases": len(rows),
        "same_flip": sum(r[precision]["flipped"] == r["fp32"]["flipped"] for r in rows),
        "same_verdict": sum(r[precision]["auditors_agreeing"] == r["fp32"]["auditors_agreeing"] for r in rows),
        "p_after_abs_difference_median": float(np.median(delta)),
        "p_after_abs_difference_max": float(max(delta)),
        "seconds_median_fp32": fp32,
        "seconds_median": reduced,
        "speed_up": fp32 / reduced,
    }


def markdown(report: dict) -> str:
    """The table of a report, with the machine it ran on."""
    m = report["machine"]
    lines = [
        (
            f"Date {report['date']}, {m['device']}, {m['cpus']} CPUs (load average {m['load_average']} at the "
            f"start), torch {m['torch']}, {m['torch_threads']} torch threads; {report['method']} / "
            f"{report['strength']} (default), test-split positives of {', '.join(report['findings'])}."
        ),
        "",
        (
            "| precision | cases | same flip as fp32 | same verdict as fp32 | abs. difference of p after, median "
            "(max) | s median, fp32 → this | speed-up |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for precision, s in report["summary"].items():
        lines.append(
            f"| {precision} | {s['cases']} | {s['same_flip']}/{s['cases']} | {s['same_verdict']}/{s['cases']} | "
            f"{s['p_after_abs_difference_median']:.4f} ({s['p_after_abs_difference_max']:.4f}) | "
            f"{s['seconds_median_fp32']:.2f} → {s['seconds_median']:.2f} | {s['speed_up']:.2f}x |",
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    parser.add_argument("--splits", type=Path, default=default_weights_dir() / "splits.csv")
    parser.add_argument("--device", default=methods.DEFAULT_DEVICE, help=methods.DEVICE_HELP)
    reduced = [precision for precision in methods.PRECISIONS if precision != "fp32"]
    parser.add_argument("--precisions", nargs="+", default=["bf16"], choices=reduced)
    parser.add_argument("--findings", nargs="+", default=["Cardiomegaly", "Effusion"])
    parser.add_argument("--cases", type=int, default=6, help="positives per finding")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if not (args.data / "nih" / "images").is_dir():
        print(f"precision: skipped, no NIH images at {args.data / 'nih' / 'images'} (give --data DIR)")
        return
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    explainer = Explainer(device=args.device)
    rows_of_split = split_rows(args.data, args.splits)
    rows = []
    for finding in args.findings:
        cases = positive_cases(args.data, rows_of_split, finding, explainer, args.cases)
        for precision in ["fp32", *args.precisions]:  # first-call costs of each precision, untimed
            explainer.explain(cases[0]["image"], ExplainOptions(finding=finding, precision=precision))
        rows += compare(explainer, cases, finding, args.precisions)
    report = {
        "date": date.today().isoformat(),
        "machine": {
            "device": str(explainer.device),
            "cpus": len(os.sched_getaffinity(0)),
            "load_average": load,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
        "method": methods.DEFAULT_COUNTERFACTUAL,
        "strength": methods.DEFAULT_STRENGTH,
        "findings": args.findings,
        "summary": {precision: summary(rows, precision) for precision in args.precisions},
        "cases": rows,
    }
    table = markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print()
    print(table, end="")


if __name__ == "__main__":
    main()
