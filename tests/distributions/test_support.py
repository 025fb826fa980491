"""The one-pass support decision shared by the densities' fast paths."""

import math

import torch

from pyro_dirmag.distributions._support import all_within, common_value


def test_all_within():
    low, high = torch.tensor(0.0), torch.tensor(1.0)
    assert all_within(torch.tensor([0.0, 0.5, 1.0]), low, high)
    assert not all_within(torch.tensor([0.0, 0.5, 1.0]), low, high, high_open=True)
    assert not all_within(torch.tensor([-1e-9, 0.5]), low, high)
    assert not all_within(torch.tensor([0.5, math.nan]), low, high)
    assert not all_within(torch.tensor([]), low, high)
    # bounds broadcast from one value count as shared; distinct bounds do not
    assert all_within(torch.rand(3, 4), low.expand(4), high.expand(3, 4))
    assert not all_within(torch.rand(3, 4), torch.zeros(4), high)


def test_common_value():
    assert common_value(torch.tensor(2.0)).item() == 2.0
    assert common_value(torch.tensor([3.0]).expand(5, 2)).item() == 3.0
    assert common_value(torch.tensor([1.0, 1.0])) is None  # equal, but not one stored value
    # a view repeating rows of distinct values is not one shared value
    assert common_value(torch.tensor([1.0, 2.0]).expand(3, 2)) is None
