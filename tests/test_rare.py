"""Locating rare entries: the screened path and the small-tensor path agree with a mask."""

import pytest
import torch

import pyro_dirmag._rare as rare


@pytest.mark.parametrize("shape", [(7,), (300, 400), (3, 200, 150)])
@pytest.mark.parametrize("above", [True, False])
def test_rare_indices_match_mask(shape, above, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=gen)
    bound = 0.999 if above else 0.001
    expected = ((x > bound) if above else (x < bound)).nonzero(as_tuple=True)
    for small in (1 << 30, 0):  # one mask, and screening, forced
        monkeypatch.setattr(rare, "_SMALL", small)
        got = rare.rare_indices(x, bound, above=above)
        if expected[0].numel() == 0:
            assert got is None
            continue
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
    assert rare.rare_indices(torch.zeros(5, 5), 1.0) is None
    assert rare.rare_indices(torch.zeros(0), 1.0) is None


@pytest.mark.parametrize("shape", [(7,), (300, 400), (3, 200, 150)])
def test_rare_indices_two_sided_match_mask(shape, monkeypatch):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen)
    expected = (x.abs() > 3.5).nonzero(as_tuple=True)
    for small in (1 << 30, 0):  # one mask, and screening, forced
        monkeypatch.setattr(rare, "_SMALL", small)
        got = rare.rare_indices(x, 3.5, two_sided=True)
        if expected[0].numel() == 0:
            assert got is None
            continue
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
    assert rare.rare_indices(torch.full((300, 400), -3.0), 3.5, two_sided=True) is None
