"""The public API is annotated (and the package ships py.typed, see test_packaging)."""

import inspect
import typing

import pytest

import pyro_dirmag
from pyro_dirmag import checkpoint
from pyro_dirmag.infer import (
    DirMagELBO,
    DirMagGuide,
    accuracy,
    expected_calibration_error,
    mean_weights,
    negative_log_likelihood,
    predict,
    prune,
)
from pyro_dirmag.nn import DirMagConv2d, DirMagLinear, DirMagModel, load_deterministic_, to_dirmag
from pyro_dirmag.nn.convert import plain_layers
from pyro_dirmag.nn.dirmag import direction_noise, dirmag_layers

PUBLIC = [
    pyro_dirmag.save,
    pyro_dirmag.load,
    checkpoint.check_params,
    checkpoint.example_inputs,
    to_dirmag,
    load_deterministic_,
    plain_layers,
    dirmag_layers,
    direction_noise.__wrapped__,
    DirMagModel.__init__,
    DirMagModel.forward,
    DirMagLinear.__init__,
    DirMagConv2d.__init__,
    DirMagLinear.load_weight_,
    DirMagLinear.initial_magnitude,
    DirMagLinear.weight_from,
    DirMagLinear.forward,
    DirMagELBO.trace_pair,
    DirMagGuide.__init__,
    DirMagGuide.posterior,
    DirMagGuide.log_alpha,
    DirMagGuide.posterior_mean,
    DirMagGuide.sample_posterior,
    predict,
    prune,
    mean_weights,
    accuracy,
    negative_log_likelihood,
    expected_calibration_error,
]


@pytest.mark.parametrize("fn", PUBLIC, ids=lambda f: f.__qualname__)
def test_annotated(fn):
    fn = inspect.unwrap(fn)
    signature = inspect.signature(fn)
    missing = [
        name
        for name, p in signature.parameters.items()
        if name != "self" and p.annotation is inspect.Parameter.empty
    ]
    assert not missing, f"{fn.__qualname__}: parameters without annotation {missing}"
    assert signature.return_annotation is not inspect.Signature.empty
    typing.get_type_hints(fn)  # the annotations resolve
