"""
The networks of the thesis (section 5): LeNet-300-100, LeNet-500-300, LeNet5 and the
fully-connected 1024-1024-2048 net, each as a DirMag Bayesian model
(:func:`dirmag_model`) and as a plain weight-normalized deterministic baseline
(:func:`deterministic_model`) with the same architecture.

Installed as :mod:`pyro_dirmag.models`. The architectures are written once, as
functions of layer factories (:func:`layers`), so other noise layers can reuse them.
"""

from .architectures import ARCHITECTURES, INPUT_SHAPE, NUM_CLASSES, AsImages, layers
from .classifier import DirMagClassifier, deterministic_model, dirmag_model

__all__ = [
    "ARCHITECTURES",
    "INPUT_SHAPE",
    "NUM_CLASSES",
    "AsImages",
    "DirMagClassifier",
    "deterministic_model",
    "dirmag_model",
    "layers",
]
