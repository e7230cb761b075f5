"""How the results are shown: layers and their opacity and colours in every slice view, the side-by-side
comparison, and the animation's playback. Qt-free (tested on ``slicer-core``).
"""

from __future__ import annotations

import slicer

from .results import application_logic, color_node
from .volumes import ATTRIBUTE


def show_layers(background, foreground, opacity: float = 0.4) -> None:
    """``background`` with ``foreground`` (or nothing) over it, in every slice view of the scene."""
    for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(opacity)


def set_saliency_opacity(opacity: float) -> None:
    """Opacity of the foreground (saliency) layer in every slice view."""
    for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
        composite.SetForegroundOpacity(opacity)


def set_saliency_colors(saliency_node, name: str) -> None:
    """Show the saliency with the colour table ``name`` (see :func:`color_node`)."""
    node = color_node(name)
    if node is None:
        raise ValueError(f"there is no colour table called {name!r} in this scene")
    saliency_node.GetDisplayNode().SetAndObserveColorNodeID(node.GetID())


def _slice_logics(views):
    app_logic = application_logic()
    for view in views:
        logic = app_logic.GetSliceLogicByLayoutName(view) if app_logic is not None else None
        if logic is not None:
            yield view, logic


def compare_side_by_side(volume_node, counterfactual_node) -> None:
    """Side-by-side layout: the original in the Red view, the counterfactual in the Yellow view, each
    view turned to the radiograph's own plane (a DX or NIfTI radiograph need not lie axial), with
    linked slice controls. Fit the views (:func:`fit_views`) once the layout has sized them.
    """
    layout = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is not None:
        layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
    volumes = {"Red": volume_node, "Yellow": counterfactual_node}
    for view, logic in _slice_logics(volumes):
        composite = logic.GetSliceCompositeNode()
        composite.SetBackgroundVolumeID(volumes[view].GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetLinkedControl(True)
        logic.RotateSliceToLowestVolumeAxes()


def fit_views(views) -> None:
    """Fit each named slice view to its background volume."""
    for _view, logic in _slice_logics(views):
        logic.FitSliceToBackground()


def play(browser_node, playing: bool, still_node) -> None:
    """Loop the latent-shift frames in every slice view; on stop, give each view back the background it
    had (``still_node`` where that is gone).
    """
    browser_node.SetPlaybackActive(playing)
    proxy = browser_node.GetProxyNode(browser_node.GetMasterSequenceNode())
    key = f"{ATTRIBUTE}.StillBackground"
    for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
        if playing and proxy is not None:
            if composite.GetBackgroundVolumeID() != proxy.GetID():
                composite.SetAttribute(key, composite.GetBackgroundVolumeID() or "")
            composite.SetBackgroundVolumeID(proxy.GetID())
        elif not playing:
            still = slicer.mrmlScene.GetNodeByID(composite.GetAttribute(key) or "") or still_node
            composite.SetBackgroundVolumeID(still.GetID())
