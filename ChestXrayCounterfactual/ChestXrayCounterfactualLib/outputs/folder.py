"""Writing an explanation to disk: NRRD volumes on the input's own grid, an overview PNG, the
latent-shift GIF, a JSON record and, on request, DICOM objects in the input's study (``dicom/``, see
:mod:`.dicom`). A folder is written under a temporary name and renamed into place only when
complete, so an interrupted run never leaves a half-written result.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np

from ..explain.explanation import Explanation
from ..explain.records import INTENDED_USE, strength_line
from ..inputs.images import WINDOW_KEY
from ..inputs.radiograph import Radiograph

#: Characters per line of the overview's bottom text (16 inches at 10 pt).
OVERVIEW_LINE = 190
FILES = ("counterfactual.nrrd", "saliency.nrrd", "difference.nrrd", "overview.png", "frames.gif", "explanation.json")
DICOM_FOLDER = "dicom"


def write_volume(path: Path, array: np.ndarray, radiograph: Radiograph, window: tuple[float, float] | None) -> None:
    """A 2D NRRD with the radiograph's spacing, origin and direction (LPS), compressed."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(tuple(float(s) for s in radiograph.spacing))
    image.SetOrigin(tuple(float(o) for o in radiograph.origin[:2]))
    image.SetDirection(tuple(float(d) for d in np.asarray(radiograph.direction)[:2, :2].flatten()))
    if window is not None:
        image.SetMetaData(WINDOW_KEY, f"{window[0]:g} {window[1]:g}")
    sitk.WriteImage(image, str(path), useCompression=True)


def _thumbnail(array: np.ndarray, limit: int = 768) -> np.ndarray:
    step = max(1, int(np.ceil(max(array.shape) / limit)))
    return array[::step, ::step]


def write_overview(path: Path, explanation: Explanation) -> None:
    """Original | saliency overlay | counterfactual | difference, with the probabilities written on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = explanation.radiograph
    original = _thumbnail(r.display())
    shown_cf = Radiograph(explanation.counterfactual, r.window, inverted=r.inverted).display()
    change = _thumbnail(shown_cf - r.display())
    limit = max(float(np.abs(change).max()), 1e-3)
    fig, axes = plt.subplots(1, 4, figsize=(16, 5.4), dpi=100)
    panels = [
        ("original", original),
        (f"saliency ({explanation.saliency_method})", original),
        (f"counterfactual ({explanation.method})", _thumbnail(shown_cf)),
        ("difference", change),
    ]
    for ax, (title, image) in zip(axes, panels, strict=True):
        ax.imshow(
            image,
            cmap="gray" if title != "difference" else "RdBu_r",
            vmin=0 if title != "difference" else -limit,
            vmax=1 if title != "difference" else limit,
            interpolation="lanczos",
        )
        ax.set_title(title)
        ax.axis("off")
    axes[1].imshow(_thumbnail(explanation.saliency), cmap="inferno", alpha=0.45, vmin=0, vmax=1)
    verdict = "flipped" if explanation.flipped else "NOT flipped"
    fig.suptitle(
        f"{Path(r.source).name}: {explanation.finding} ({explanation.direction})   "
        f"p = {explanation.p_original:.3f} -> {explanation.p_counterfactual:.3f}   "
        f"threshold {explanation.threshold:.3f}: {verdict}",
        fontsize=13,
    )
    others = "   ".join(
        f"{f} {p:.2f}->{explanation.counterfactual_probabilities[f]:.2f}"
        for f, p in explanation.probabilities.items()
        if f != explanation.finding
    )
    audit = "   ".join(
        f"{name} {a['p_original']:.2f}->{a['p_counterfactual']:.2f} (threshold {a['threshold']:.2f})"
        for name, a in explanation.audit.items()
    )
    lines = [
        strength_line(explanation.record()),
        f"other findings: {others}   |   {INTENDED_USE}",
    ]
    if audit:
        lines.insert(0, f"independent models on {explanation.finding}: {audit}: {explanation.verdict}")
    wrapped = [part for line in lines for part in textwrap.wrap(line, OVERVIEW_LINE)]
    fig.text(0.5, 0.02, "\n".join(wrapped), ha="center", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.05 + 0.035 * len(wrapped), top=0.88, wspace=0.04)
    fig.savefig(path, pil_kwargs={"compress_level": 1})
    plt.close(fig)


def write_gif(path: Path, explanation: Explanation) -> None:
    """The animation from the input to the counterfactual, cropped to the image (no padding), at twice model size;
    the first frame across the decision threshold is marked and held longer.
    """
    from PIL import Image, ImageDraw

    g = explanation.geometry
    top, left = round(g.pad_top * g.size / g.side), round(g.pad_left * g.size / g.side)
    bottom, right = g.size - top, g.size - left
    images = []
    crossing = explanation.crossing_frame
    for index, (image, p) in enumerate(explanation.model_frames()):
        frame = (
            Image.fromarray(np.uint8(np.clip(image[top:bottom, left:right], 0, 1) * 255))
            .resize(((right - left) * 2, (bottom - top) * 2), Image.Resampling.BICUBIC)
            .convert("P")
        )
        mark = "  threshold crossed" if index == crossing else ""
        ImageDraw.Draw(frame).text((6, 6), f"{explanation.finding} p={p:.2f}{mark}", fill=255)
        images.append(frame)
    durations = [600 if index == crossing else 150 for index in range(len(images) - 1)] + [900]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)


def write_dicom_outputs(folder: Path, explanation: Explanation, anonymize: bool) -> dict:
    """The DICOM objects in ``folder``; returns what the JSON record says of them (files relative to the
    explanation's folder, their study, and notes such as a new study for a non-DICOM input).
    """
    from .dicom import write_dicom

    written = write_dicom(folder, explanation, anonymize=anonymize)
    return {
        "files": [f"{folder.name}/{path.name}" for path in written.files],
        "study_instance_uid": written.study_instance_uid,
        "new_study": written.new_study,
        "notes": written.notes,
    }


def write_explanation(
    folder: Path,
    explanation: Explanation,
    *,
    overwrite: bool = False,
    anonymize: bool = False,
    dicom: bool = False,
) -> dict:
    """Write every output file into ``folder`` atomically; returns the JSON record written.

    With ``dicom`` the DICOM objects are written into its ``dicom/`` subfolder, inside the same atomic
    write, listed in the record's ``files`` and described under its ``dicom`` key.
    """
    import time

    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        start = time.perf_counter()
        r = explanation.radiograph
        write_volume(partial / "counterfactual.nrrd", explanation.counterfactual, r, r.window)
        write_volume(partial / "saliency.nrrd", explanation.saliency, r, (0.0, 1.0))
        write_volume(partial / "difference.nrrd", explanation.difference, r, None)
        write_overview(partial / "overview.png", explanation)
        write_gif(partial / "frames.gif", explanation)
        explanation.record_time("write", time.perf_counter() - start)
        dicom_record = None
        if dicom:
            dicom_start = time.perf_counter()
            dicom_record = write_dicom_outputs(partial / DICOM_FOLDER, explanation, anonymize)
            explanation.record_time("dicom", time.perf_counter() - dicom_start)
        record = explanation.record(anonymize)
        record["files"] = list(FILES) + (dicom_record["files"] if dicom_record else [])
        if dicom_record:
            record["dicom"] = {key: value for key, value in dicom_record.items() if key != "files"}
        (partial / "explanation.json").write_text(json.dumps(record, indent=2) + "\n")
        if folder.exists():
            if not overwrite:
                raise FileExistsError(f"{folder} already exists")
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            folder.replace(old)
            partial.replace(folder)
            shutil.rmtree(old)
        else:
            partial.replace(folder)
        return record
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
