r"""
From a plain ``torch.nn`` network to a DirMag Bayesian network ("bring your own
network"; the pre-training of thesis section 4.4).

:func:`load_deterministic_` copies a trained deterministic network's weights into a
DirMag network of the same architecture. Each DirMag layer starts at :math:`v = w` and
at the initial magnitude :math:`\|w_j\|` per unit (see
:meth:`~pyro_dirmag.nn.DirMagLinear.load_weight_`), which
:class:`~pyro_dirmag.infer.DirMagGuide` takes as its initial posterior mean :math:`m`.
The mean network of the guide (:math:`g = m`, :math:`\epsilon = E[\epsilon]`,
:math:`\phi = 0`) then has the weights

.. math::

    w_j^{\text{mean}} = \cos(E[\epsilon_j])\, w_j ,

i.e. the plain network's weights up to :math:`\cos E[\epsilon]`, which is
:math:`1 - 8 \cdot 10^{-4}` at the guide's default ``init_angle_scale=0.05``
(:math:`E[\epsilon] = \sigma\sqrt{2/\pi}` for :math:`\mu = 0`) and exactly 1 for layers
without direction noise.
"""

from torch import nn

from .dirmag import DirMagConv2d, DirMagLinear, dirmag_layers

__all__ = ["load_deterministic_", "plain_layers"]

#: The plain layer type that each DirMag layer type takes its weights from.
_PLAIN_TYPE = {DirMagLinear: nn.Linear, DirMagConv2d: nn.Conv2d}


def plain_layers(module):
    """
    The ``nn.Linear`` and ``nn.Conv2d`` layers of ``module`` (subclasses included, e.g.
    layers under :func:`torch.nn.utils.parametrizations.weight_norm`) in registration
    order, as ``(name, layer)``.
    """
    return [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def load_deterministic_(dirmag_module, plain_module):
    r"""
    Copies the weights and biases of a plain network into the DirMag layers of a
    network with the same architecture, in place (pre-training)::

        plain = deterministic_model("lenet300")   # then train it
        model = dirmag_model("lenet300", num_data=60000)
        load_deterministic_(model, plain)
        guide = DirMagGuide(model)                # first run after the copy

    The DirMag layers (:func:`~pyro_dirmag.nn.dirmag.dirmag_layers`) and the plain
    module's ``nn.Linear``/``nn.Conv2d`` layers are paired in registration order; each
    pair must agree in type (``DirMagLinear`` with ``nn.Linear``, ``DirMagConv2d`` with
    ``nn.Conv2d``), weight shape, presence of a bias and, for convolutions, stride,
    padding, dilation, ``groups=1`` and zero padding. Everything is checked before
    anything is copied. The plain layers' effective ``.weight`` is read, so layers under
    :func:`torch.nn.utils.parametrizations.weight_norm` (or any other parametrization)
    work. Each DirMag layer gets it through
    :meth:`~pyro_dirmag.nn.DirMagLinear.load_weight_`: :math:`v = w` and the initial
    magnitude :math:`\|w_j\|`, read by :class:`~pyro_dirmag.infer.DirMagGuide` as its
    initial :math:`m` when the guide is first run, so run the guide only after this
    call. The mean network then reproduces the plain network's weights up to the
    factor :math:`\cos E[\epsilon]` (see the module notes).

    :param torch.nn.Module dirmag_module: a module containing DirMag layers.
    :param torch.nn.Module plain_module: a module containing as many ``nn.Linear`` /
        ``nn.Conv2d`` layers, in the same order, with the same shapes.
    :returns: ``dirmag_module``.
    :raises ValueError: if the layers do not match (count, type, shape, bias,
        convolution settings) or a weight has a non-finite entry or an all-zero unit.
    """
    if not isinstance(dirmag_module, nn.Module):
        raise ValueError(f"dirmag_module must be a torch.nn.Module, got {type(dirmag_module)}")
    if not isinstance(plain_module, nn.Module):
        raise ValueError(f"plain_module must be a torch.nn.Module, got {type(plain_module)}")
    targets = dirmag_layers(dirmag_module)
    sources = plain_layers(plain_module)
    if not targets:
        raise ValueError("dirmag_module has no DirMag layers")
    if len(targets) != len(sources):
        raise ValueError(
            f"dirmag_module has {len(targets)} DirMag layers {[n for n, _ in targets]} but "
            f"plain_module has {len(sources)} nn.Linear/nn.Conv2d layers "
            f"{[n for n, _ in sources]}"
        )
    pairs = []
    for (t_name, target), (s_name, source) in zip(targets, sources, strict=True):
        _check_pair(t_name, target, s_name, source)
        bias = None if source.bias is None else source.bias.detach()
        pairs.append((t_name, target, source.weight.detach(), bias))
    for t_name, target, weight, _ in pairs:
        # load_weight_'s own checks, run on every pair before any layer is changed
        norms = target._norms(weight)
        if not weight.isfinite().all():
            raise ValueError(f"plain weight for layer {t_name!r} must be finite")
        if not (norms > 0).all():
            raise ValueError(
                f"plain weight for layer {t_name!r} has {int((norms == 0).sum())} all-zero "
                "unit vectors (a DirMag unit needs a direction)"
            )
    for _, target, weight, bias in pairs:
        target.load_weight_(weight.to(target.v.dtype), None if bias is None else bias)
    return dirmag_module


def _check_pair(t_name, target, s_name, source):
    where = f"DirMag layer {t_name!r} and plain layer {s_name!r}"
    expected = _PLAIN_TYPE.get(type(target))
    if expected is None or not isinstance(source, expected):
        raise ValueError(
            f"{where} do not match: {type(target).__name__} takes its weights from "
            f"{expected.__name__ if expected else '?'}, got {type(source).__name__}"
        )
    shape = tuple(source.weight.shape)
    if shape != target._weight_shape:
        raise ValueError(
            f"{where} have different weight shapes: {target._weight_shape} and {shape}"
        )
    if (source.bias is None) != (target.bias is None):
        has = "has" if target.bias is not None else "has no"
        raise ValueError(f"{where} do not match: the DirMag layer {has} bias, the plain one not")
    if isinstance(source, nn.Conv2d):
        settings = {
            "stride": (tuple(source.stride), target.stride),
            "padding": (_as_tuple(source.padding), target.padding),
            "dilation": (tuple(source.dilation), target.dilation),
            "groups": (source.groups, 1),
            "padding_mode": (source.padding_mode, "zeros"),
        }
        for key, (got, want) in settings.items():
            if got != want:
                raise ValueError(f"{where} do not match: {key} {want} and {got}")


def _as_tuple(value):
    return value if isinstance(value, str) else tuple(value)
