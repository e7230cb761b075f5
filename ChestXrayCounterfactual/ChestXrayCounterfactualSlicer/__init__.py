"""The Slicer side of ChestXrayCounterfactual: scene and view code (``scene``), the Python requirements
install flow (``requirements``) and headless batch use (``batch``). Kept in a package, not beside the
module file, because Slicer's scripted-module factory loads every ``*.py`` beside it as a module.
"""
