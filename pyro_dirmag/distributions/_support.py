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
    if torch._C._get_tracing_state() is not None or t.numel() == 0:
        return None
    if t.numel() == 1 or all(stride == 0 for stride in t.stride()):
        return t.reshape(-1)[0].detach()
    return None


def all_within(value, low, high, high_open=False):
    """
    Whether every entry of ``value`` lies in ``[low, high]`` (``[low, high)`` with
    ``high_open``), from one min/max pass. ``False`` when that cannot decide it: bounds
    that are not one shared value (see :func:`common_value`), tracing, no values, or a
    NaN among them.
    """
    if torch._C._get_tracing_state() is not None or value.numel() == 0:
        return False
    low, high = common_value(low), common_value(high)
    if low is None or high is None:
        return False
    v_min, v_max = torch.aminmax(value.detach())
    upper = v_max < high if high_open else v_max <= high
    return bool(v_min >= low) and bool(upper)
