"""Guard for the hand-written backward passes of the library's autograd Functions."""

import functools

import torch

__all__ = ["first_order_only"]


def first_order_only(backward):
    """
    Decorates the ``backward`` of a :class:`torch.autograd.Function` whose derivatives
    are hand-written from saved tensors and are not themselves differentiable.

    Called with ``create_graph=True`` (grad mode on during the backward pass), it raises
    instead of returning gradients whose own derivatives would silently miss the terms
    that depend on the saved tensors. (``torch.autograd.function.once_differentiable``
    raises only when the incoming gradient requires grad, and returns constants when it
    does not: a second derivative would then quietly lose those terms.)
    """
    name = backward.__qualname__.rsplit(".", 1)[0].lstrip("_")

    @functools.wraps(backward)
    def checked(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(
                f"pyro_dirmag: second derivatives through {name} are not supported "
                "(its backward pass was called with create_graph=True)"
            )
        return backward(ctx, *grads)

    return checked
