"""Explanation quality and speed of our methods against the published baselines, on the same models
and the same held-out test images, in one process.

    .venv/bin/python Testing/benchmarks/benchmark.py --data ../shared/data [--cases 6] [--out DIR]

Per finding and method: validity (flip rate, p before/after), proximity (L1 and SSIM to the input,
in model space and on the original grid), locality (share of |change| inside the top-10% saliency
region and inside NIH expert boxes), realism proxies (autoencoder reconstruction error of the
counterfactual, movement of the other findings) and cost (median/p95 seconds, peak memory); plus
the pointing game of every saliency method on the NIH boxes. Writes results.json, results.csv and
table.md (the table of the README beside this file).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import published_latent_shift, seed_local_counterfactual  # noqa: E402

from ChestXrayCounterfactualLib import Explainer, read_radiograph  # noqa: E402
from ChestXrayCounterfactualLib.engine import visible_change_on_grid  # noqa: E402
from ChestXrayCounterfactualLib.modelset import default_weights_dir  # noqa: E402
from ChestXrayCounterfactualLib.methods import SALIENCY_METHODS  # noqa: E402
from ChestXrayCounterfactualLib.saliency import saliency_map  # noqa: E402
from ChestXrayCounterfactualTraining.metrics import ssim  # noqa: E402

METHODS = ("latent-shift", "local", "directions", "baseline-seed-local", "baseline-latent-shift")


def test_cases(data: Path, split_file: Path, finding: str, explainer: Explainer, limit: int) -> list[dict]:
    """Test-split images the model calls positive for ``finding``; boxed ones first, then by name."""
    split = {r["file"]: r["split"] for r in csv.DictReader(open(split_file))}
    boxes: dict[str, list] = {}
    for b in csv.DictReader(open(data / "nih" / "boxes.csv")):
        if b["finding"] == finding or (finding == "Effusion" and b["finding"] == "Effusion"):
            boxes.setdefault(b["file"], []).append(b)
    rows = [r for r in csv.DictReader(open(data / "nih" / "labels.csv")) if split.get(r["file"]) == "test"]
    rows.sort(key=lambda r: (r["file"] not in boxes, r["file"]))
    cases = []
    for r in rows:
        image = read_radiograph(data / "nih" / "images" / r["file"])
        p = explainer.predict(image)[finding]
        if p >= explainer.models.thresholds[finding]:
            cases.append(
                {
                    "file": r["file"],
                    "image": image,
                    "p": p,
                    "boxes": boxes.get(r["file"], []),
                    "staged_px": int(r["staged_px"]),
                },
            )
        if len(cases) == limit:
            break
    return cases


def box_mask(case: dict, geometry) -> np.ndarray | None:
    if not case["boxes"]:
        return None
    mask = np.zeros(case["image"].shape, np.float32)
    scale = case["staged_px"] / 1024
    for b in case["boxes"]:
        x, y, w, h = (float(b[k]) * scale for k in ("x", "y", "w", "h"))
        mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = 1
    return geometry.to_model(mask)[0, 0].numpy() > 0.5


def measure(explainer: Explainer, case: dict, finding: str, method: str) -> dict:
    models = explainer.models
    target = models.index(finding)
    x, geometry = explainer.model_input(case["image"])
    valid = geometry.valid_mask().float()
    start = time.perf_counter()
    if method.startswith("baseline"):
        with torch.no_grad():
            saliency_map(models.classifier, x, target, "grad-cam", valid)  # both baselines need the CAM first
        runner = seed_local_counterfactual if method == "baseline-seed-local" else published_latent_shift
        counterfactual, reconstruction = runner(models, x, target)
        seconds = time.perf_counter() - start
    else:
        e = explainer.explain(case["image"], finding=finding, method=method)
        seconds = e.seconds["total"]
        reconstruction = torch.from_numpy(e.model_reconstruction)[None, None]
        counterfactual = reconstruction + torch.from_numpy(e.model_change)[None, None]  # the decoded counterfactual
    with torch.no_grad():
        sal = saliency_map(models.classifier, x, target, "grad-cam", valid)
        p_before = torch.sigmoid(models.classifier(x))[0]
        p_decoded = torch.sigmoid(models.classifier(counterfactual))[0]
        change = (counterfactual - reconstruction)[0, 0] * valid
        on_grid = visible_change_on_grid(geometry, change.numpy())
        delivered = (x[0, 0] + geometry.to_model(on_grid)[0, 0]).clamp(0, 1)[None, None]
        p_delivered = torch.sigmoid(models.classifier(delivered))[0]
        ae_error = float((models.autoencoder(counterfactual) - counterfactual).abs().mean())
    threshold = models.thresholds[finding]
    magnitude = change.abs().numpy()
    valid_np = valid.numpy() > 0.5
    top = sal.numpy() >= np.quantile(sal.numpy()[valid_np], 0.9)
    total = magnitude.sum() + 1e-12
    others = [i for i in range(len(models.findings)) if i != target]
    boxes = box_mask(case, geometry)
    return {
        "file": case["file"],
        "finding": finding,
        "method": method,
        "seconds": seconds,
        "p_before": float(p_before[target]),
        "p_after": float(p_delivered[target]) if not method.startswith("baseline") else float(p_decoded[target]),
        "p_after_delivered": float(p_delivered[target]),
        "confident": float(p_before[target]) >= threshold + 0.1,
        "flipped": (float(p_delivered[target]) if not method.startswith("baseline") else float(p_decoded[target]))
        < threshold,
        "flipped_delivered": float(p_delivered[target]) < threshold,
        "l1_model": float((delivered - x).abs()[0, 0][valid_np].mean()),
        "ssim_model": float(ssim(delivered, x)),
        "l1_grid": float(
            np.abs(case["image"].display_change_to_pixels(on_grid)).mean()
            / (case["image"].window[1] - case["image"].window[0]),
        ),
        "share_in_top10_saliency": float(magnitude[top].sum() / total),
        "share_in_box": float(magnitude[boxes].sum() / total) if boxes is not None else None,
        "box_area_share": float(boxes[valid_np].mean()) if boxes is not None else None,
        "ae_error": ae_error,
        "others_abs_dp": float(
            ((p_delivered if not method.startswith("baseline") else p_decoded)[others] - p_before[others]).abs().mean(),
        ),
    }


def pointing_game(explainer: Explainer, cases: list[dict], finding: str) -> dict:
    target = explainer.models.index(finding)
    hits = {m: [] for m in SALIENCY_METHODS}
    for case in cases:
        x, geometry = explainer.model_input(case["image"])
        boxes = box_mask(case, geometry)
        if boxes is None:
            continue
        for method in SALIENCY_METHODS:
            s = saliency_map(explainer.models.classifier, x, target, method, geometry.valid_mask().float()).numpy()
            hits[method].append(bool(boxes.flat[int(np.argmax(s))]))
    return {m: {"hits": int(sum(v)), "cases": len(v)} for m, v in hits.items()}


def summarise(rows: list[dict]) -> dict:
    def mean(key):
        values = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(values)) if values else None

    seconds = [r["seconds"] for r in rows]
    confident = [r for r in rows if r["confident"]]
    return {
        "cases": len(rows),
        "flip_rate": mean("flipped"),
        "flip_rate_delivered": mean("flipped_delivered"),
        "flip_rate_confident": float(np.mean([r["flipped"] for r in confident])) if confident else None,
        "confident_cases": len(confident),
        "p_before_mean": mean("p_before"),
        "p_before_median": float(np.median([r["p_before"] for r in rows])),
        "p_after_mean": mean("p_after"),
        "p_after_median": float(np.median([r["p_after"] for r in rows])),
        "l1_model": mean("l1_model"),
        "ssim_model": mean("ssim_model"),
        "l1_grid": mean("l1_grid"),
        "share_in_top10_saliency": mean("share_in_top10_saliency"),
        "share_in_box": mean("share_in_box"),
        "box_cases": sum(r["share_in_box"] is not None for r in rows),
        "box_area_share": mean("box_area_share"),
        "ae_error": mean("ae_error"),
        "others_abs_dp": mean("others_abs_dp"),
        "seconds_median": float(np.median(seconds)),
        "seconds_p95": float(np.percentile(seconds, 95)),
    }


def markdown(report: dict) -> str:
    """The README table of a report."""
    lines = [
        (
            f"Date {report['date']}, commit {report['commit']}, {report['machine']}, "
            f"peak RSS {report['peak_rss_mb']:.0f} MB."
        ),
        "",
        (
            "| finding / method | n | flip | p before → after (median) | L1 model / grid | SSIM | change in top-10% "
            "saliency | change in NIH box (box area) | AE error | others' abs dp | s median (p95) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, s in report["summary"].items():
        box = (
            f"{s['share_in_box']:.2f} ({s['box_area_share']:.2f}, n={s['box_cases']})"
            if s["share_in_box"]
            else "\N{EN DASH}"
        )
        lines.append(
            f"| {key} | {s['cases']} | {s['flip_rate']:.2f} | {s['p_before_median']:.2f} → {s['p_after_median']:.2f} | "
            f"{s['l1_model']:.4f} / {s['l1_grid']:.4f} | {s['ssim_model']:.3f} | {s['share_in_top10_saliency']:.2f} | "
            f"{box} | {s['ae_error']:.4f} | {s['others_abs_dp']:.3f} | "
            f"{s['seconds_median']:.2f} ({s['seconds_p95']:.2f}) |",
        )
    lines += [
        "",
        "| ours vs the seed paper's method | flip rate ours / seed | speed-up (median s) | locality ours / seed |",
        "|---|---|---|---|",
    ]
    for key, r in report["ratios"].items():
        lines.append(
            f"| {key} | {r['flip_rate'][0]:.2f} / {r['flip_rate'][1]:.2f} | {r['speedup']:.1f}x | "
            f"{r['locality'][0]:.2f} / {r['locality'][1]:.2f} |",
        )
    lines += [
        "",
        "| pointing game (saliency argmax inside an NIH box) | " + " | ".join(SALIENCY_METHODS) + " |",
        "|---|" + "---|" * len(SALIENCY_METHODS),
    ]
    for finding, methods in report["pointing_game"].items():
        lines.append(f"| {finding} | " + " | ".join(f"{v['hits']}/{v['cases']}" for v in methods.values()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    parser.add_argument("--splits", type=Path, default=default_weights_dir() / "splits.csv")
    parser.add_argument("--findings", nargs="+", default=["Cardiomegaly", "Effusion"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--cases", type=int, default=6, help="test images per finding (the seed baseline takes ~1 min each)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    if not (args.data / "nih" / "labels.csv").exists():
        raise SystemExit(f"needs the labelled data folder (nih/labels.csv) at {args.data}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    explainer = Explainer()
    warm = read_radiograph(
        Path(__file__).resolve().parents[2]
        / "ChestXrayCounterfactual"
        / "Resources"
        / "SampleData"
        / "nih_chest_pa_cardiomegaly.dcm",
    )
    explainer.explain(warm, finding="Cardiomegaly")  # first-call costs (allocations, lazy imports) excluded
    rows, summary, pointing = [], {}, {}
    for finding in args.findings:
        cases = test_cases(args.data, args.splits, finding, explainer, args.cases)
        pointing[finding] = pointing_game(explainer, cases, finding)
        for method in args.methods:
            method_rows = [measure(explainer, case, finding, method) for case in cases]
            rows += method_rows
            summary[f"{finding}/{method}"] = summarise(method_rows)
            s = summary[f"{finding}/{method}"]
            print(
                f"{finding:13s} {method:22s} n={s['cases']:2d} flip {s['flip_rate']:.2f} "
                f"p {s['p_before_median']:.2f}->{s['p_after_median']:.2f} L1 {s['l1_model']:.4f} "
                f"SSIM {s['ssim_model']:.3f} in-saliency {s['share_in_top10_saliency']:.2f} "
                f"others {s['others_abs_dp']:.3f} {s['seconds_median']:.2f}s (p95 {s['seconds_p95']:.2f})",
                flush=True,
            )
    ratios = {}
    for finding in args.findings:
        base = summary.get(f"{finding}/baseline-seed-local")
        for method in ("latent-shift", "local", "directions"):
            ours = summary.get(f"{finding}/{method}")
            if base and ours:
                ratios[f"{finding}/{method} vs seed"] = {
                    "flip_rate": (ours["flip_rate"], base["flip_rate"]),
                    "speedup": base["seconds_median"] / ours["seconds_median"],
                    "locality": (ours["share_in_top10_saliency"], base["share_in_top10_saliency"]),
                }
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
    ).stdout.strip()
    report = {
        "date": date.today().isoformat(),
        "commit": commit,
        "machine": f"{platform.machine()}, "
        f"{torch.get_num_threads()} threads, {platform.python_version()}, torch {torch.__version__}",
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "summary": summary,
        "ratios": ratios,
        "pointing_game": pointing,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    with open(args.out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "table.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
