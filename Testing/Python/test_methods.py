"""Method names exist once (ChestXrayCounterfactualLib.methods) and every name has its implementation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ChestXrayCounterfactualLib import methods
from ChestXrayCounterfactualLib.explain import counterfactual, saliency


def test_every_method_name_has_one_implementation_and_nothing_else():
    assert list(counterfactual.COUNTERFACTUALS) == list(methods.COUNTERFACTUAL_METHODS)
    assert list(saliency.SALIENCIES) == list(methods.SALIENCY_METHODS)
    assert methods.DEFAULT_COUNTERFACTUAL in methods.COUNTERFACTUAL_METHODS
    assert methods.DEFAULT_SALIENCY in methods.SALIENCY_METHODS


def test_the_names_load_without_torch():
    """The CLI, the Slicer module and the batch script offer the choices before torch is installed."""
    code = "import sys, ChestXrayCounterfactualLib.methods; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize(("arguments", "wrong"), [(("nope", "grad-cam"), "method"), (("local", "nope"), "saliency"),
                                                  (("local", "grad-cam", "sideways"), "direction")])
def test_unknown_names_are_refused_with_the_choices(arguments, wrong):
    with pytest.raises(ValueError, match=f"unknown {wrong}.*choose"):
        methods.check(*arguments)
