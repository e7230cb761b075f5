"""A volume node and the engine's radiograph, both ways: the radiograph a volume holds (its voxels, and how to
display them, learned from its source file), and a colour image as a plain scalar volume.

Qt-free, built on ``slicer.util`` and MRML classes only (tested on ``slicer-core``). The engine's reader imports
only numpy at file scope, so this module loads before the Python requirements are installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer

from ChestXrayCounterfactualLib.errors import UnsupportedImageError
from ChestXrayCounterfactualLib.inputs.radiograph import Radiograph, grey, validate
from ChestXrayCounterfactualLib.inputs.reader import read_radiograph

#: The prefix of every node attribute this module sets (``ChestXrayCounterfactual.Role``, ...).
ATTRIBUTE = "ChestXrayCounterfactual"


def source_file(volume_node) -> Path | None:
    """The file a volume was loaded from: its storage node, or the DICOM database entry."""
    storage = volume_node.GetStorageNode()
    if storage is not None and storage.GetFileName() and Path(storage.GetFileName()).is_file():
        return Path(storage.GetFileName())
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    database = getattr(slicer, "dicomDatabase", None)
    if uids and database is not None:
        path = database.fileForInstance(uids[0])
        if path and Path(path).is_file():
            return Path(path)
    return None


def radiograph_from_volume(volume_node) -> Radiograph:
    """The engine's view of a volume node: its voxels as they are, and how to display them.

    Whether the node holds MONOCHROME1 values (and its window) is learned by comparing its voxels
    with the source file read by the engine's reader, so it does not matter whether the loader
    inverted MONOCHROME1 (GDCM does, DCMTK and Slicer's DICOM plugin do not). The source file's header
    goes through the engine's input gate: a CT, MR, ... volume or a lateral view is refused with its
    sentence, and the gate's notes become the radiograph's warnings.
    """
    from ChestXrayCounterfactualLib.explain.gate import check_header  # torch: only once requirements are there

    pixels = slicer.util.arrayFromVolume(volume_node)
    if volume_node.IsA("vtkMRMLVectorVolumeNode"):
        pixels = _luminance(pixels)
    if pixels.ndim == 3 and pixels.shape[0] > 1:
        raise UnsupportedImageError(
            volume_node.GetName(), f"a 3D volume with {pixels.shape[0]} slices is not a radiograph",
        )
    if pixels.ndim == 3:
        pixels = pixels[0]
    pixels = np.asarray(pixels, dtype=np.float32).copy()
    column_spacing, row_spacing = volume_node.GetSpacing()[:2]
    spacing = (float(column_spacing), float(row_spacing))
    window, inverted, notes = None, False, []
    path = source_file(volume_node)
    if path is not None:
        try:
            reference = read_radiograph(path)
        except Exception:  # an unreadable source only means we fall back to the display settings
            reference = None
        if reference is not None:
            notes = check_header(reference)
        if reference is not None and reference.shape == pixels.shape:
            shown = reference.display().ravel()
            inside = (shown > 0.02) & (shown < 0.98)
            if inside.sum() > 100:
                x = pixels.ravel()[inside].astype(np.float64)
                y = shown[inside].astype(np.float64)
                slope = float(np.mean((x - x.mean()) * (y - y.mean())) / max(x.var(), 1e-12))
                offset = float(y.mean() - slope * x.mean())
                if abs(slope) > 0:
                    inverted = slope < 0
                    ends = sorted(((0 - offset) / slope, (1 - offset) / slope))
                    window = (float(ends[0]), float(ends[1]))
    if window is None:
        display = volume_node.GetDisplayNode()
        if display is not None and display.GetWindow() > 0:
            window = (display.GetLevel() - display.GetWindow() / 2, display.GetLevel() + display.GetWindow() / 2)
        else:
            window = (0.0, 0.0)  # validate() sets the percentile window
        inverted = volume_node.GetAttribute(f"{ATTRIBUTE}.Inverted") == "1"
    radiograph = Radiograph(
        pixels,
        window,
        spacing,
        inverted=inverted,
        source=volume_node.GetName(),
        metadata={"volume_node": volume_node.GetID(), "source_file": str(path or "")},
        warnings=notes,
    )
    return validate(volume_node.GetName(), radiograph)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Grey values of colour voxels, as the engine's reader makes them from a colour file."""
    return grey(np.asarray(rgb, dtype=np.float32))


def as_scalar_volume(volume_node):
    """The radiograph as a plain scalar volume: a colour image (loaded as a vector volume) is replaced by
    its grey values on the same grid; other volumes are returned as they are.
    """
    if not volume_node.IsA("vtkMRMLVectorVolumeNode"):
        return volume_node
    scalar = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", volume_node.GetName())
    scalar.CopyOrientation(volume_node)
    slicer.util.updateVolumeFromArray(scalar, _luminance(slicer.util.arrayFromVolume(volume_node)))
    scalar.CreateDefaultDisplayNodes()
    slicer.mrmlScene.RemoveNode(volume_node)
    return scalar


def first_radiograph():
    """The first plain scalar volume of the scene that this module did not make, or None."""
    for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
        if node.GetClassName() == "vtkMRMLScalarVolumeNode" and not node.GetAttribute(f"{ATTRIBUTE}.Role"):
            return node
    return None


def result_volume_ids() -> list[str]:
    """IDs of the volumes this module made (saliency, counterfactual, difference, animation frames)."""
    volumes = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
    return [node.GetID() for node in volumes if node.GetAttribute(f"{ATTRIBUTE}.Role")]
