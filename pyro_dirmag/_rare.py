"""
Locating the rare entries of a large tensor that a sampler must redo.

Rejection samplers and guarded solvers flag a few entries in 10^3 to 10^5 for a second
pass. On CPU a boolean mask over the whole tensor, its count and ``nonzero`` cost as
much as drawing the values; a float reduction per row costs far less, so the rows are
screened first and the mask is built on the rows with a hit only.
"""

import torch

__all__ = ["rare_indices"]

# Below this many values a single mask costs less than the per-row screening.
_SMALL = 1 << 16


def rare_indices(x, bound, above=True, two_sided=False):
    """
    Indices (as ``nonzero(as_tuple=True)`` gives them) of the entries of ``x`` above
    ``bound`` (``above=True``) or below it, or ``None`` if there are none. With
    ``two_sided``, the entries with ``|x| > bound`` (``above`` is then ignored).

    :param torch.Tensor x: values, any shape.
    :param float bound: the threshold (entries equal to it are not returned).
    :param bool above: which side of ``bound`` to look for.
    :param bool two_sided: look for ``|x| > bound`` instead.
    """

    def found(t):
        if two_sided:
            return t.abs() > bound
        return (t > bound) if above else (t < bound)

    if x.numel() == 0:
        return None
    if x.numel() <= _SMALL or x.dim() < 2:  # one mask is cheaper than screening
        idx = found(x).nonzero(as_tuple=True)
        return idx if idx[0].numel() else None
    rows = x.reshape(-1, x.shape[-1])
    # (per-row amax and amin: torch.aminmax along a dimension is 4x slower on CPU)
    if two_sided:
        hit = (rows.amax(-1) > bound) | (rows.amin(-1) < -bound)
    elif above:
        hit = rows.amax(-1) > bound
    else:
        hit = rows.amin(-1) < bound
    hit = hit.nonzero(as_tuple=True)[0]
    if hit.numel() == 0:
        return None
    r, c = found(rows[hit]).nonzero(as_tuple=True)
    if x.dim() == 2:
        return hit[r], c
    return torch.unravel_index(hit[r] * rows.shape[-1] + c, x.shape)
