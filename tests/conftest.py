"""Shared test configuration.

Pyro's goodness-of-fit helpers compute the chi-square tail with a series that
returns 1.0 for statistics whose true p-value is ~1e-83, so every gof test would
pass.  We patch it with scipy's exact survival function for the whole session.
"""

import os

import pyro.distributions.testing.gof as gof
import pytest
import scipy.stats
import torch

gof.chi2sf = lambda x, df: float(scipy.stats.chi2.sf(float(x), int(df)))  # noqa: E731

torch.set_num_threads(int(os.environ.get("PYRO_DIRMAG_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed_everything():
    import pyro

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
