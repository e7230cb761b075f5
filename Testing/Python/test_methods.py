"""Method names exist once (ChestXrayCounterfactualLib.methods) and every name has its implementation; the options
exist once (ChestXrayCounterfactualLib.options), checked when they are made, and every front end offers them all.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from ChestXrayCounterfactualLib import methods
from ChestXrayCounterfactualLib.explain import counterfactual, saliency
from ChestXrayCounterfactualLib.options import ExplainOptions
from ChestXrayCounterfactualLib.runs.cli import _parser, add_options, options_from


def test_every_method_name_has_one_implementation_and_nothing_else():
    assert list(counterfactual.COUNTERFACTUALS) == list(methods.COUNTERFACTUAL_METHODS)
    assert list(saliency.SALIENCIES) == list(methods.SALIENCY_METHODS)
    assert methods.DEFAULT_COUNTERFACTUAL in methods.COUNTERFACTUAL_METHODS
    assert methods.DEFAULT_SALIENCY in methods.SALIENCY_METHODS


@pytest.mark.parametrize(("arguments", "wrong"), [(("nope", "grad-cam"), "method"), (("local", "nope"), "saliency"),
                                                  (("local", "grad-cam", "sideways"), "direction")])
def test_unknown_names_are_refused_with_the_choices(arguments, wrong):
    with pytest.raises(ValueError, match=f"unknown {wrong}.*choose"):
        methods.check(*arguments)


@pytest.mark.parametrize(
    ("options", "wrong"),
    [
        ({"method": "nope"}, "unknown method"),
        ({"saliency": "nope"}, "unknown saliency"),
        ({"direction": "sideways"}, "unknown direction"),
        ({"strength": "far"}, "unknown strength"),
        ({"precision": "fp64"}, "unknown precision"),
        ({"frames": 1}, "frames must be"),
        ({"frames": 2.5}, "frames must be"),
    ],
)
def test_options_are_checked_when_they_are_made(options, wrong):
    with pytest.raises(ValueError, match=wrong):
        ExplainOptions(**options)


def test_the_command_line_offers_every_option_and_reads_back_the_defaults():
    parser = argparse.ArgumentParser()
    add_options(parser)
    assert {action.dest for action in parser._actions} - {"help"} == {option.name for option in fields(ExplainOptions)}
    assert options_from(parser.parse_args([])) == ExplainOptions()
    assert options_from(parser.parse_args(["--precision", "bf16"])).precision == "bf16"
    assert ExplainOptions().precision == methods.DEFAULT_PRECISION == "fp32"
    with pytest.raises(ValueError, match="frames must be"):
        options_from(parser.parse_args(["--frames", "1"]))


@pytest.mark.parametrize(
    "command", [["predict", "x.png"], ["explain", "x.png", "--out", "o"], ["batch", "d", "--out", "o"]],
)
def test_the_device_is_a_model_loading_flag_of_every_command_that_loads_models(command):
    """``--device`` is where the models run, not what is explained: each command that loads models takes it, and it
    is no field of the options (so the flags of :func:`add_options` stay exactly the options' fields).
    """
    parser = _parser()
    assert parser.parse_args(command).device == "cpu"
    assert parser.parse_args([*command, "--device", "CUDA:1"]).device == "cuda:1"
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--device", "gpu"])
    assert "device" not in {option.name for option in fields(ExplainOptions)}
