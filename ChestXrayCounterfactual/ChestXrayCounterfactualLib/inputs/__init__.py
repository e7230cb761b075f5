"""Files to radiographs: DICOM, PNG/JPEG and NRRD/NIfTI/MHA read as a viewer shows them, or refused with one
sentence. Imports no model code (``Testing/Python/test_layers.py``).
"""
