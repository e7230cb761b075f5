"""Runs the Slicer module's Widget, .ui and Logic outside Slicer, on real Qt and real MRML, with
stand-ins generated from Slicer's and CTK's headers for the application's C++ side. Entry point:
``SlicerHarness.application.start``.
"""
