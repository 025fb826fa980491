"""Argument checks shared by the layers."""

__all__ = ["int_pair"]


def int_pair(value, name, allow_zero=False):
    """
    ``(value, value)`` for an int, else ``tuple(value)``, checked to be two ints at least 1
    (at least 0 with ``allow_zero``).

    :raises ValueError: naming ``name`` otherwise.
    """
    pair = (value, value) if isinstance(value, int) else tuple(value)
    low = 0 if allow_zero else 1
    if len(pair) != 2 or not all(isinstance(v, int) and v >= low for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints >= {low}, got {value!r}")
    return pair
