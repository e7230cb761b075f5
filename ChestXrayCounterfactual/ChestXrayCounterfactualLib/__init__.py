"""ChestXrayCounterfactual's engine: read a chest radiograph, classify it, and explain a finding with
a saliency map and a counterfactual image. Imports nothing from Slicer.

    from ChestXrayCounterfactualLib import ExplainOptions, Explainer, read_radiograph
    explanation = Explainer().explain(read_radiograph("chest.dcm"), ExplainOptions(finding="Cardiomegaly"))

Names are imported on first use, so ``import ChestXrayCounterfactualLib`` stays light (the training
code and Slicer's module scanner need neither captum nor torch at import).
"""

from importlib import import_module

_EXPORTS = {
    "CancelledError": "errors",
    "ExplainOptions": "options",
    "Explainer": "explain.pipeline",
    "Explanation": "explain.explanation",
    "NoFindingError": "errors",
    "ExplainerError": "errors",
    "InputError": "errors",
    "WeightsError": "errors",
    "ModelSet": "modelset",
    "load_model_set": "modelset",
    "Radiograph": "inputs.radiograph",
    "read_radiograph": "inputs.reader",
}
# Spelled out (not computed from _EXPORTS) so linters and IDEs can read it; a test checks the two agree.
__all__ = [
    "CancelledError",
    "ExplainOptions",
    "Explainer",
    "ExplainerError",
    "Explanation",
    "InputError",
    "ModelSet",
    "NoFindingError",
    "Radiograph",
    "WeightsError",
    "load_model_set",
    "read_radiograph",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
