"""The Slicer side of ChestXrayCounterfactual, and the only code that imports the engine: ``bridge`` (every call
into the engine), ``volumes`` (volume node <-> radiograph), ``results`` (an explanation's nodes), ``views`` (how
they are shown), ``database`` (loading and DICOM export through Slicer's DICOM database), ``requirements`` (the
install flow) and ``headless`` (the headless script). Kept in a package, not beside the module file, because
Slicer's scripted-module factory loads every ``*.py`` beside it as a module.
"""
