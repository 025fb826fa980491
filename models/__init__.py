"""
The networks of the thesis (section 5): LeNet-300-100, LeNet-500-300, LeNet5 and the
fully-connected 1024-1024-2048 net, each as a DirMag Bayesian model
(:func:`dirmag_model`) and as a plain weight-normalized deterministic baseline
(:func:`deterministic_model`) with the same architecture.

Installed as :mod:`pyro_dirmag.models`. The architectures are written once, as
functions of layer factories (:func:`layers`), so other noise layers can reuse them.
"""

from .architectures import ARCHITECTURES, INPUT_SHAPE, NUM_CLASSES, AsImages, layers, mlp
from .classifier import (
    DirMagClassifier,
    NoLatents,
    PlainClassifier,
    deterministic_model,
    dirmag_model,
)
from .methods import (
    DIRMAG_OPTIONS,
    METHODS,
    NOISE_OPTIONS,
    build,
    evaluation_modes,
    is_variational,
    unused_options,
)

__all__ = [
    "ARCHITECTURES",
    "INPUT_SHAPE",
    "AsImages",
    "DIRMAG_OPTIONS",
    "METHODS",
    "NOISE_OPTIONS",
    "NUM_CLASSES",
    "DirMagClassifier",
    "NoLatents",
    "PlainClassifier",
    "build",
    "deterministic_model",
    "dirmag_model",
    "evaluation_modes",
    "is_variational",
    "layers",
    "mlp",
    "unused_options",
]
