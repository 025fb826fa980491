"""
One min/max pass deciding that a whole tensor of values lies in a law's support.

The generic support check compares every value with the broadcast bounds, several
passes over ``batch x units`` per-example copies at every step; when the bounds are one
value shared by every law (a layer's prior, an angle posterior's ``[0, pi/2]``) a single
``aminmax`` decides it, and densities can skip their per-value masks.
"""

import torch

__all__ = ["all_within", "common_value"]


def common_value(t):
    """The value shared by every element of ``t`` (detached) if it is a one-element tensor
    or a broadcast (all strides 0) view of one, else ``None``."""
    if torch.jit.is_tracing() or t.numel() == 0:
        return None
    if t.numel() == 1 or all(stride == 0 for stride in t.stride()):
        return t.reshape(-1)[0].detach()
    return None


def _common_float(t):
    """:func:`common_value` as a Python float (exact for float32 and float64), or ``None``."""
    if t.dim() == 0:  # the usual scalar bound: one call instead of three
        return t.item()
    value = common_value(t)
    return None if value is None else value.item()


def all_within(value, low, high, high_open=False):
    """
    Whether every entry of ``value`` lies in ``[low, high]`` (``[low, high)`` with
    ``high_open``), from one min/max pass. ``False`` when that cannot decide it: bounds
    that are not one shared value (see :func:`common_value`), tracing, no values, or a
    NaN among them.
    """
    if torch.jit.is_tracing() or value.numel() == 0:
        return False
    low, high = _common_float(low), _common_float(high)
    if low is None or high is None:
        return False
    # (compared as Python floats: the values convert exactly, NaN compares false)
    v_min, v_max = (m.item() for m in torch.aminmax(value.detach()))
    return v_min >= low and (v_max < high if high_open else v_max <= high)
