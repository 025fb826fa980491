r"""
The output of a dense DirMag layer with per-example noise, as one autograd node.

With :math:`s_{ij} = u_j \cdot x_i` (one matmul) and the tangent draw :math:`t_{ij}`
of :func:`~pyro_dirmag.nn._direction.tangent_projection`, unit :math:`j` answers
example :math:`i` with (docs/MATH.md section 5)

.. math::

    y_{ij} = g_{ij}\left(\cos\epsilon_{ij}\, s_{ij}
             + \sin\epsilon_{ij}\, \rho_{ij}\, t_{ij}\right) + b_j, \qquad
    \rho_{ij} = \sqrt{\max(\|x_i\|^2 - s_{ij}^2,\ \mathrm{floor})} .

Written with autograd's elementwise operations this is some twenty passes over the
``(batch, units)`` values, each allocating its result, plus a backward node per
operation; at batch 1000 it is a large share of a training step's noise cost.
:func:`rotated_output` evaluates the same expression with
hand-written derivatives (about half the passes, in place where possible):

.. math::

    \partial_g y = d,\quad
    \partial_\epsilon y = g\,(\cos\epsilon\, \rho t - \sin\epsilon\, s),\quad
    \partial_s y = g \cos\epsilon - h\, s,\quad
    \partial_{\|x\|^2} y = h / 2,\qquad h = g \sin\epsilon\, t / \rho ,

with :math:`d = \cos\epsilon\, s + \sin\epsilon\, \rho t`, and :math:`h = 0` where the floor
is active (as ``clamp_min`` would: no gradient flows through a clamped norm). It is checked against
autograd on the plain expression (``tests/nn/test_rotated_output.py``) and timed
against it by ``benchmarks/bench_noise_kernels.py``. With compiled kernels on
(:mod:`pyro_dirmag.kernels`), training calls run the plain expression compiled by
:func:`torch.compile` instead (timings: ``python benchmarks/bench_noise_kernels.py
--compiled``).
"""

import torch

from .._autograd import first_order_only
from ..kernels import CompiledKernel

__all__ = ["compiled_rotated_output", "rotated_output"]


class _RotatedOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s, xsq, g, eps, t, bias, floor):
        cos, sin = torch.cos(eps), torch.sin(eps)
        rho2 = torch.addcmul(xsq, s, s, value=-1.0)
        ctx.clamped = bool(rho2.min() <= floor) if rho2.numel() else False
        rho = rho2.clamp_min_(floor).sqrt_()
        d = torch.mul(rho, t).mul_(sin).addcmul_(cos, s)
        y = torch.mul(g, d) if bias is None else torch.addcmul(bias, g, d)
        ctx.floor = floor
        ctx.bias_shape = None if bias is None else bias.shape
        ctx.save_for_backward(s, xsq, g, t, cos, sin, rho, d)
        return y

    @staticmethod
    @first_order_only
    def backward(ctx, grad):
        s, xsq, g, t, cos, sin, rho, d = ctx.saved_tensors
        need_s, need_xsq, need_g, need_eps, _, need_bias, _ = ctx.needs_input_grad
        grad_s = grad_xsq = grad_g = grad_eps = grad_bias = None
        if need_g:
            grad_g = (grad * d).sum_to_size(g.shape)
        gd = grad * g  # dL/dd
        if need_eps:
            grad_eps = (rho * t).mul_(cos).addcmul_(sin, s, value=-1.0).mul_(gd)
            grad_eps = grad_eps.sum_to_size(cos.shape)
        if need_s or need_xsq:
            h = (gd * sin).mul_(t).div_(rho)
            if ctx.clamped:
                h.mul_(torch.addcmul(xsq, s, s, value=-1.0) > ctx.floor)
            if need_s:
                grad_s = torch.mul(gd, cos).addcmul_(h, s, value=-1.0).sum_to_size(s.shape)
            if need_xsq:
                grad_xsq = h.mul_(0.5).sum_to_size(xsq.shape)
        if need_bias:
            grad_bias = grad.sum_to_size(ctx.bias_shape)
        return grad_s, grad_xsq, grad_g, grad_eps, None, grad_bias, None


def rotated_output(s, xsq, g, eps, t, bias=None, floor=1e-12):
    r"""
    :math:`g(\cos\epsilon\, s + \sin\epsilon \sqrt{\max(\|x\|^2 - s^2, \mathrm{floor})}\, t) + b`
    with hand-written derivatives (see the module notes).

    :param torch.Tensor s: projections :math:`u_j \cdot x_i`, shape ``(..., units)``.
    :param torch.Tensor xsq: squared input norms :math:`\|x_i\|^2`, shape ``(..., 1)``.
    :param torch.Tensor g: magnitudes, broadcastable to ``s``.
    :param torch.Tensor eps: angles, broadcastable to ``s``.
    :param torch.Tensor t: tangent draws, shape of ``s``; no gradient.
    :param torch.Tensor bias: ``(units,)`` or ``None``.
    :param float floor: lower bound on :math:`\|x\|^2 - s^2` (see
        :func:`~pyro_dirmag.nn._direction.tangent_term`).
    :returns: shape of ``s``.
    """
    # Compiled only where the angles carry gradients (training steps), not for the
    # prototype traces of guides or for predictions.
    training = torch.is_grad_enabled() and eps.requires_grad
    y = compiled_rotated_output(s, xsq, g, eps, t, bias, floor) if training else None
    return _RotatedOutput.apply(s, xsq, g, eps, t, bias, floor) if y is None else y


@CompiledKernel
def compiled_rotated_output(s, xsq, g, eps, t, bias, floor):
    """The plain expression, compiled with its derivatives when compiled kernels are on
    (:mod:`pyro_dirmag.kernels`; ``None`` otherwise). ``where`` rather than ``clamp_min``:
    no gradient flows at the floor itself, as in the hand-written backward."""
    rho2 = xsq - s * s
    rho = torch.where(rho2 > floor, rho2, floor).sqrt()
    y = g * (torch.cos(eps) * s + torch.sin(eps) * rho * t)
    return y if bias is None else y + bias
