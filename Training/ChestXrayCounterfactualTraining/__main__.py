"""Command line of the training pipeline.

    python -m ChestXrayCounterfactualTraining classifier  --data ../shared/data --run runs/main
    python -m ChestXrayCounterfactualTraining autoencoder --data ../shared/data --run runs/main
    python -m ChestXrayCounterfactualTraining auditor  --data ../shared/data --run runs/aud --arch shufflenet_v2
    python -m ChestXrayCounterfactualTraining publish-auditors --data ../shared/data --run runs/aud --weights weights
        --arch shufflenet_v2 mobilenet_v3_small --drop auditor-regnet_y_400mf
    python -m ChestXrayCounterfactualTraining companion  --data ../shared/data --run runs/comp --arch vgg-small
    python -m ChestXrayCounterfactualTraining publish-companions --data ../shared/data --run runs/comp --weights weights
        --arch vgg-small
    python -m ChestXrayCounterfactualTraining ood-reference --data ../shared/data --run runs/main --weights weights
    python -m ChestXrayCounterfactualTraining latent-basis --data ../shared/data --run runs/main --weights weights

``--data`` is a folder holding ``nih/labels.csv`` + ``nih/images/`` (or pass ``--labels`` for the
official ``Data_Entry_2017.csv``) and optionally ``mhh_covid19/`` (extra unlabelled anatomy for the
autoencoder). Every step is seeded, writes the patient split to ``RUN/splits.csv``, logs to
``RUN/*.log`` and resumes from its checkpoint when run again.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from ChestXrayCounterfactualLib.modelset import (
    AUDITOR_ARCHITECTURES,
    COMPANION_ARCHITECTURES,
    Auditor,
    Classifier,
    Companion,
)

from .auditors import publish_auditors
from .autoencoder import train_autoencoder
from .classifier import train_classifier
from .data import Record, read_records, split_of, write_split_file
from .latent_basis import publish_latent_basis
from .ood_reference import write_ood_reference
from .publish import publish

DEFAULT_FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Pneumothorax"]


def labelled_records(args: argparse.Namespace) -> list[Record]:
    label_file = Path(args.labels) if args.labels else Path(args.data) / "nih" / "labels.csv"
    image_root = Path(args.images) if args.images else label_file.parent / "images"
    records = read_records(label_file, args.findings, image_root)
    if not records:
        raise SystemExit(f"no images of {label_file} found under {image_root}")
    return records


def unlabelled_records(data: Path, n_findings: int) -> list[Record]:
    """The Hannover COVID-19 radiographs (no NIH labels): extra anatomy for the autoencoder."""
    table = data / "mhh_covid19" / "data.csv"
    if not table.exists():
        return []
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = data / "mhh_covid19" / "images"
    return [
        Record(images / f"{r['image_id']}.png", f"mhh-{r['patient_id']}", (0.0,) * n_findings)
        for r in rows
        if (images / f"{r['image_id']}.png").exists()
    ]


def extra_training_records(label_file: str, args: argparse.Namespace) -> list[Record]:
    """The images of one ``--extra-labels`` file whose patients fall in the training split."""
    records = read_records(Path(label_file), args.findings)
    return [r for r in records if split_of(r.patient, args.split_seed) == "train"]


def by_split(records: list[Record], seed: int) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {"train": [], "validation": [], "test": []}
    for r in records:
        out[split_of(r.patient, seed)].append(r)
    return out


def split_summary(splits: dict[str, list[Record]], findings: list[str]) -> dict:
    return {
        name: {
            "images": len(items),
            "patients": len({r.patient for r in items}),
            "positives": {f: int(sum(r.labels[i] for r in items)) for i, f in enumerate(findings)},
        }
        for name, items in splits.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ChestXrayCounterfactualTraining",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "step",
        choices=[
            "split",
            "classifier",
            "auditor",
            "companion",
            "autoencoder",
            "publish",
            "publish-auditors",
            "publish-companions",
            "ood-reference",
            "latent-basis",
        ],
    )
    parser.add_argument("--data", required=True, help="data folder (ours: ../shared/data)")
    parser.add_argument("--run", required=True, help="output folder for checkpoints, logs and weights")
    parser.add_argument("--labels", help="label CSV instead of DATA/nih/labels.csv (e.g. Data_Entry_2017.csv)")
    parser.add_argument("--images", help="image folder instead of the label file's images/ sibling")
    parser.add_argument("--findings", nargs="+", default=DEFAULT_FINDINGS)
    parser.add_argument(
        "--extra-labels",
        nargs="*",
        default=[],
        help="more label files (e.g. DATA/nih_64/labels.csv) whose training-split images are added "
        "to the classifier's training set; the patient split applies to them too",
    )
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--classifier", help="classifier.pt for the autoencoder's consistency loss")
    parser.add_argument("--consistency-weight", type=float, default=1.0)
    parser.add_argument(
        "--arch",
        nargs="+",
        choices=AUDITOR_ARCHITECTURES + COMPANION_ARCHITECTURES,
        help="auditor, companion: its architecture; publish-auditors: theirs",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.2,
        help="companion: the largest standard deviation of the Gaussian noise added to training images",
    )
    parser.add_argument(
        "--weights", default="weights", help="publish: the model set folder to write; ood-reference: the one to read",
    )
    parser.add_argument(
        "--drop", nargs="*", default=[], help="publish-auditors: auditors to remove from the model set (by name)",
    )
    parser.add_argument(
        "--dimensions", type=int, default=16, help="latent-basis: principal directions kept for the manifold method",
    )
    parser.add_argument("--init", help="classifier, auditor or autoencoder weights to start from (fine-tuning)")
    parser.add_argument(
        "--freeze",
        nargs="*",
        default=[],
        help="classifier/auditor: submodules kept fixed while fine-tuning (e.g. net.conv1 net.bn1 net.layer1)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=float("inf"),
        help="stop (and anneal the learning rate) within this wall time",
    )
    args = parser.parse_args(argv)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    extra = {k: v for k, v in {"epochs": args.epochs, "lr": args.lr}.items() if v is not None}
    if args.weight_decay is not None and args.step in ("classifier", "auditor", "companion"):
        extra["weight_decay"] = args.weight_decay
    extra["max_minutes"] = args.max_minutes
    records = labelled_records(args)
    write_split_file(records, args.split_seed, run / "splits.csv")
    splits = by_split(records, args.split_seed)
    if args.step == "split":
        for name, counts in split_summary(splits, args.findings).items():
            print(f"{name}: {counts}")
    elif args.step in ("classifier", "auditor", "companion"):
        kinds = {"auditor": (Auditor, AUDITOR_ARCHITECTURES), "companion": (Companion, COMPANION_ARCHITECTURES)}
        more = [r for f in args.extra_labels for r in extra_training_records(f, args)]
        if args.step in kinds:
            kind, allowed = kinds[args.step]
            if not args.arch or len(args.arch) != 1 or args.arch[0] not in allowed:
                parser.error(f"{args.step} needs one --arch of {', '.join(allowed)}")
            extra.update(model=kind(args.findings, args.arch[0]), name=f"{args.step}-{args.arch[0]}")
        if args.step == "companion":
            extra["noise"] = args.noise
        extra.update(init=Path(args.init) if args.init else None, frozen=tuple(args.freeze))
        train_classifier(
            splits["train"] + more,
            splits["validation"],
            args.findings,
            run,
            batch_size=args.batch_size,
            seed=args.seed,
            workers=args.workers,
            device=args.device,
            **extra,
        )
    elif args.step in ("publish-auditors", "publish-companions"):
        kind = args.step.removeprefix("publish-")
        publish_auditors(run, Path(args.weights), splits, args.arch or [], args.drop, kind)
    elif args.step == "publish":
        unlabelled = by_split(unlabelled_records(Path(args.data), len(args.findings)), args.split_seed)
        summary = {
            "source": "NIH ChestX-ray14 (staged subset, 320 px PNG)" if not args.labels else str(args.labels),
            "split_rule": f"patient-level, sha256(seed={args.split_seed}:patient) -> 70/15/15",
            "nih": split_summary(splits, args.findings),
            "autoencoder_extra": {
                "source": "Hannover Medical School COVID-19 (unlabelled)",
                **{k: len(v) for k, v in unlabelled.items()},
            },
        }
        if args.extra_labels:
            summary["classifier_extra"] = {
                "source": "more labelled images for the classifier only, training-split patients (--extra-labels)",
                **{f: len(extra_training_records(f, args)) for f in args.extra_labels},
            }
        publish(run, Path(args.weights), splits, unlabelled["test"], args.findings, summary)
    elif args.step == "ood-reference":
        unlabelled = by_split(unlabelled_records(Path(args.data), len(args.findings)), args.split_seed)
        print(f"wrote {write_ood_reference(Path(args.weights), splits, unlabelled)}")
    elif args.step == "latent-basis":
        unlabelled = by_split(unlabelled_records(Path(args.data), len(args.findings)), args.split_seed)
        print(publish_latent_basis(splits["train"] + unlabelled["train"], Path(args.weights), args.dimensions))
    else:
        extra["init"] = Path(args.init) if args.init else None
        unlabelled = by_split(unlabelled_records(Path(args.data), len(args.findings)), args.split_seed)
        classifier = None
        if args.classifier:
            classifier = Classifier(args.findings)
            state = torch.load(args.classifier, map_location="cpu", weights_only=True)
            classifier.load_state_dict({k: v.float() for k, v in state.items()})
        train_autoencoder(
            splits["train"] + unlabelled["train"],
            splits["validation"],
            run,
            classifier=classifier,
            consistency_weight=args.consistency_weight,
            batch_size=args.batch_size,
            seed=args.seed,
            workers=args.workers,
            device=args.device,
            **extra,
        )


if __name__ == "__main__":
    main()
