"""A bare Slicer MRML scene from the PyPI package slicer-core, set up as the Slicer application
sets up its own (see ../shared/notes/headless-slicer.md), so scene code runs on real MRML here.
"""

from __future__ import annotations

import slicer
import vtk


def new_scene(cache_dir: str):
    scene = slicer.vtkMRMLScene()
    scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())  # the Colors module does this in the app
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetViewLogics(vtk.vtkCollection())
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
    app_logic.SetModuleLogic("Colors", app_logic.GetColorLogic())
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(app_logic)
    volumes.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Volumes", volumes)
    subject_hierarchy = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    subject_hierarchy.SetMRMLScene(scene)
    app_logic.SetModuleLogic("SubjectHierarchy", subject_hierarchy)
    sequences = slicer.vtkSlicerSequencesLogic()
    sequences.SetMRMLScene(scene)
    sequences.SetMRMLApplicationLogic(app_logic)
    app_logic.SetModuleLogic("Sequences", sequences)
    remote_io = slicer.vtkMRMLRemoteIOLogic()
    remote_io.SetMRMLScene(scene)
    remote_io.SetMRMLApplicationLogic(app_logic)
    remote_io.GetCacheManager().SetRemoteCacheDirectory(cache_dir)
    data_io = slicer.vtkDataIOManagerLogic()
    data_io.SetMRMLScene(scene)
    data_io.SetMRMLApplicationLogic(app_logic)
    data_io.SetAndObserveDataIOManager(remote_io.GetDataIOManager())
    remote_io.AddDataIOToScene()
    slice_logic = slicer.vtkMRMLSliceLogic()
    slice_logic.SetMRMLApplicationLogic(app_logic)
    slice_logic.SetMRMLScene(scene)
    slice_node = slice_logic.AddSliceNode("Red")
    slice_node.SetOrientation("Axial")
    app_logic.GetSliceLogics().AddItem(slice_logic)
    slicer.mrmlScene = scene
    slicer.appLogic = app_logic
    return scene, app_logic, volumes, slice_logic, (remote_io, data_io, subject_hierarchy, sequences)


def load_dicom_file(volumes_logic, path) -> object:
    """One DICOM file as a volume node, the way Slicer's archetype loader reads it (single file)."""
    node = volumes_logic.AddArchetypeVolume(str(path), path.stem, 4, None)
    assert node is not None, f"Slicer could not load {path}"
    return node
