"""Files in and out through Slicer's DICOM database: a radiograph file loaded as a volume in its patient's study,
and an explanation exported as DICOM series of the input's study.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import slicer
from slicer.i18n import tr as _

from . import volumes


def load_file(path: str):
    """A file as a volume node. DICOM goes through Slicer's DICOM database when one is open, so the
    patient and study are kept; otherwise (and for other images) the file is loaded directly.
    """
    with open(path, "rb") as f:
        f.seek(128)
        isDicom = f.read(4) == b"DICM"
    database = getattr(slicer, "dicomDatabase", None)
    if not isDicom or not database or not database.isOpen:
        if isDicom:
            logging.info("No DICOM database is open: %s is loaded without its patient and study", path)
        return volumes.as_scalar_volume(slicer.util.loadVolume(path, {"singleFile": True}))
    import ctk
    from DICOMLib import DICOMUtils

    indexer = ctk.ctkDICOMIndexer()
    indexer.addFile(database, path, False)
    indexer.waitForImportFinished()
    if not database.seriesForFile(path):
        raise RuntimeError(_("Slicer's DICOM database could not index {path}").format(path=path))
    # This file only, not its whole series (a PA and a lateral view can share one).
    loadablesByPlugin, _loadEnabled = DICOMUtils.getLoadablesFromFileLists([[path]])
    DICOMUtils.selectHighestConfidenceLoadables(loadablesByPlugin)
    nodes = [slicer.mrmlScene.GetNodeByID(i) for i in DICOMUtils.loadLoadables(loadablesByPlugin)]
    found = [node for node in nodes if node is not None and node.IsA("vtkMRMLScalarVolumeNode")]
    if not found:
        raise RuntimeError(_("Slicer's DICOM plugins could not load {path} as an image").format(path=path))
    return volumes.as_scalar_volume(found[0])


def export_dicom(explanation, folder: str | None = None):
    """Write an explanation as DICOM (new series in the input's study; see
    ``ChestXrayCounterfactualLib.outputs.dicom``) and add them to Slicer's DICOM database, so they
    appear under the input's patient and study. ``folder``: where to keep the files (default: only
    in the database).
    """
    from DICOMLib import DICOMUtils

    from ChestXrayCounterfactualLib.outputs.dicom import write_dicom  # highdicom: once requirements are there

    database = slicer.dicomDatabase
    if not database or not database.isOpen:
        raise RuntimeError(_("Open a DICOM database first (DICOM module), then export again."))
    target = folder or tempfile.mkdtemp(prefix="ChestXrayCounterfactual-")
    try:
        outputs = write_dicom(Path(target) / "dicom", explanation)
        if not DICOMUtils.importDicom(str(Path(target) / "dicom"), database, copyFiles=folder is None):
            raise RuntimeError(_("Slicer's DICOM database could not import {folder}").format(folder=target))
    finally:
        if folder is None:
            shutil.rmtree(target, ignore_errors=True)
    return outputs
