"""Training of the bundled classifier and autoencoder (``python -m ChestXrayCounterfactualLib.training``)."""
