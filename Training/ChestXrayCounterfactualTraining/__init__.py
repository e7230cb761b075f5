"""Training of the bundled classifier and autoencoder, and the figures of its model card
(``python -m ChestXrayCounterfactualTraining``).

Development only: this package lies outside the module folder, so it does not ship in the Slicer
extension. It imports the engine (``ChestXrayCounterfactualLib``); the engine never imports it.
"""
