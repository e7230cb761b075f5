"""An explanation written to files: the output folder (:mod:`.folder`, NRRD, PNG, GIF, JSON) and the DICOM series
in the input's study (:mod:`.dicom`). Imports nothing from :mod:`..runs`.
"""
