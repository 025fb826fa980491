from . import kl  # noqa: F401  (registers KL pairs)
from .hemisphere_angle import HemisphereAngle
from .log_uniform import LogUniform, SymmetricLogUniform
from .plane_rotation import PlaneRotation
from .stretched_symmetric_beta import StretchedSymmetricBeta
from .tangent_projected_normal import TangentNormalAngle, TangentProjectedNormal
from .truncated_normal import TruncatedNormal

__all__ = [
    "HemisphereAngle",
    "LogUniform",
    "PlaneRotation",
    "StretchedSymmetricBeta",
    "SymmetricLogUniform",
    "TangentNormalAngle",
    "TangentProjectedNormal",
    "TruncatedNormal",
]
