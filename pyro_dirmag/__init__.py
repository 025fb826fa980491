"""pyro_dirmag: direction and magnitude weight noise for Bayesian neural networks in Pyro."""

from .checkpoint import load, save

__version__ = "0.1.0"

__all__ = ["__version__", "load", "save"]
