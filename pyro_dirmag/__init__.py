"""pyro_dirmag: direction and magnitude weight noise for Bayesian neural networks in Pyro."""
