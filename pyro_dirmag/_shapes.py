"""
Broadcast shapes without ``torch.broadcast_shapes``, which goes through ``torch._refs``
and costs far more a call on CPU: the densities and KL terms of a training step ask
for a dozen broadcast shapes.
"""

import torch
from pyro.distributions.util import broadcast_shape

__all__ = ["broadcast_size", "shape_mismatch"]


def broadcast_size(*shapes):
    """
    The broadcast of ``shapes``, as ``torch.broadcast_shapes`` gives it (a ``torch.Size``),
    without going through ``torch._refs``.

    :raises ValueError: if the shapes do not broadcast.
    """
    return torch.Size(broadcast_shape(*shapes))


def shape_mismatch(**shapes):
    """
    The ``ValueError`` for parameters whose shapes do not broadcast, naming the first
    parameter (in the order given) that does not broadcast with those before it. For
    the error path of a constructor: build the message only once broadcasting failed.

    :param shapes: parameter names mapped to their shapes (batch shapes for laws on
        events, ``()`` for Python numbers).
    :rtype: ValueError
    """
    shape, seen = torch.Size(), []
    for name, s in shapes.items():
        try:
            shape = broadcast_size(shape, s)
        except ValueError:
            return ValueError(
                f"Expected parameter {name} (shape {tuple(s)}) to broadcast with "
                f"{', '.join(seen)} (shape {tuple(shape)})"
            )
        seen.append(name)
    return ValueError(f"Expected parameters {', '.join(shapes)} to broadcast")
