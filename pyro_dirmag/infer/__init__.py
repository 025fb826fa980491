"""Inference for DirMag models: guide, prediction, metrics, pruning, safe SVI."""

from .elbo import DirMagELBO
from .evaluate import METRICS, classification_metrics, evaluate, predict_modes
from .guide import LOG_ALPHA_MAX, LOG_ALPHA_MIN, DirMagGuide
from .kl_weight import KLWeightMessenger, kl_weight
from .metrics import (
    accuracy,
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    predictive_entropy,
    reliability_bins,
)
from .predict import PREDICT_MODES, PredictiveMoments, predict
from .pretrain import pretrain_, train_deterministic
from .prune import PruneReport, SelectFeatures, mean_weights, prune
from .recipe import (
    FlatThenLinear,
    LinearWarmup,
    Recipe,
    choose_thresholds,
    fit,
    param_groups,
)
from .reparam import PlaneRotationReparam
from .training import FiniteSVI, NonFiniteLossError

__all__ = [
    "LOG_ALPHA_MAX",
    "LOG_ALPHA_MIN",
    "METRICS",
    "PREDICT_MODES",
    "DirMagELBO",
    "DirMagGuide",
    "FlatThenLinear",
    "KLWeightMessenger",
    "LinearWarmup",
    "Recipe",
    "choose_thresholds",
    "fit",
    "kl_weight",
    "param_groups",
    "FiniteSVI",
    "NonFiniteLossError",
    "PlaneRotationReparam",
    "PredictiveMoments",
    "PruneReport",
    "SelectFeatures",
    "accuracy",
    "brier_score",
    "classification_metrics",
    "evaluate",
    "expected_calibration_error",
    "mean_weights",
    "negative_log_likelihood",
    "predict",
    "predict_modes",
    "predictive_entropy",
    "pretrain_",
    "prune",
    "reliability_bins",
    "train_deterministic",
]
