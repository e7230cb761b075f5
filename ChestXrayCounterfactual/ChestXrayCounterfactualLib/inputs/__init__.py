"""Files to radiographs: :mod:`.reader` chooses the reader a file needs (:mod:`.dicom`, or :mod:`.images` for
PNG/JPEG and NRRD/NIfTI/MHA), each returns a :class:`.radiograph.Radiograph` read as a viewer shows it, or refuses
the file with one sentence. Imports no model code (``Testing/Python/test_layers.py``).
"""
