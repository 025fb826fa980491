from .convert import load_deterministic_, to_dirmag, to_noisy
from .dirmag import PHI_MODES, DirMagConv2d, DirMagLinear, direction_noise
from .evaluation import EVAL_MODES, noise_mode, predict_probs
from .model import DirMagModel
from .noise import DIRECTION_NOISES, MAGNITUDE_NOISES, NOISES
from .noisy_layers import NOISE_TARGETS, NoisyConv2d, NoisyLinear
from .noisy_mlp import noisy_mlp

__all__ = [
    "PHI_MODES",
    "DirMagConv2d",
    "DirMagLinear",
    "DirMagModel",
    "direction_noise",
    "load_deterministic_",
    "DIRECTION_NOISES",
    "EVAL_MODES",
    "MAGNITUDE_NOISES",
    "NOISES",
    "NOISE_TARGETS",
    "NoisyConv2d",
    "NoisyLinear",
    "noise_mode",
    "noisy_mlp",
    "predict_probs",
    "to_dirmag",
    "to_noisy",
]
