"""The fast broadcast shape agrees with torch's, errors included."""

import itertools

import pytest
import torch

from pyro_dirmag._shapes import broadcast_size


def test_broadcast_size_matches_torch():
    dims = [(), (1,), (3,), (0,), (2, 1), (1, 3), (4, 2, 3), (4, 1, 1), (5, 0, 1)]
    for a, b, c in itertools.product(dims, repeat=3):
        try:
            expected = torch.broadcast_shapes(a, b, c)
        except RuntimeError:
            with pytest.raises(ValueError):
                broadcast_size(a, b, c)
            continue
        got = broadcast_size(a, b, c)
        assert isinstance(got, torch.Size) and got == expected, (a, b, c)
