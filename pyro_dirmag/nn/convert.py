r"""
From a plain ``torch.nn`` network to a DirMag Bayesian network ("bring your own
network"; the pre-training of thesis section 4.4), and to a network with the thesis's
non-variational weight noise (:func:`to_noisy`).

:func:`to_dirmag` turns a copy of any ``torch.nn.Module`` into a Bayesian network: its
``nn.Linear`` and ``nn.Conv2d`` layers (all, or a chosen subset) become
:class:`~pyro_dirmag.nn.DirMagLinear` / :class:`~pyro_dirmag.nn.DirMagConv2d` layers
started from the module's trained weights, the rest of the module is kept and its
other parameters stay point estimates. Wrap the result in a
:class:`~pyro_dirmag.nn.DirMagModel` with a likelihood and the data size to get a Pyro
model. :func:`load_deterministic_` copies a trained deterministic network's weights
into an existing DirMag network of the same architecture.

Each DirMag layer starts at :math:`v = w` and
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

import copy
import warnings
from collections.abc import Iterable
from typing import Any

from pyro.nn.module import to_pyro_module_
from torch import nn
from torch.nn.utils import parametrize

from .dirmag import DirMagConv2d, DirMagLinear, dirmag_layers
from .noisy_layers import NoisyConv2d, NoisyLinear

__all__ = ["load_deterministic_", "plain_layers", "to_dirmag", "to_noisy"]

#: The plain layer type that each DirMag layer type takes its weights from.
_PLAIN_TYPE = {DirMagLinear: nn.Linear, DirMagConv2d: nn.Conv2d}


def plain_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """
    The ``nn.Linear`` and ``nn.Conv2d`` layers of ``module`` (subclasses included, e.g.
    layers under :func:`torch.nn.utils.parametrizations.weight_norm`) in registration
    order, as ``(name, layer)``.
    """
    return [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def load_deterministic_(dirmag_module: nn.Module, plain_module: nn.Module) -> nn.Module:
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
        norms = target.unit_norms(weight)
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


def to_dirmag(
    module: nn.Module, layers: Iterable[str] | None = None, **layer_kwargs: Any
) -> nn.Module:
    r"""
    A DirMag Bayesian copy of a plain network, started from its trained weights::

        net = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1))
        # ... train net as usual (optional: this is the pre-training) ...
        bnn = to_dirmag(net)                       # the Bayesian net, a PyroModule
        model = DirMagModel(bnn, lambda out: dist.Normal(out.squeeze(-1), 0.1), num_data)
        guide = DirMagGuide(model)

    Every ``nn.Linear`` and ``nn.Conv2d`` of ``module`` (or those named in ``layers``)
    is replaced, at its place in the module tree, by a
    :class:`~pyro_dirmag.nn.DirMagLinear` / :class:`~pyro_dirmag.nn.DirMagConv2d` of
    the same shape whose weights are loaded by :func:`load_deterministic_` (the mean
    network starts at the module's weights, up to :math:`\cos E[\epsilon]`). Layers
    under a parametrization such as :func:`torch.nn.utils.parametrizations.weight_norm`
    contribute their effective weight. Then the copy's modules are made
    :class:`~pyro.nn.PyroModule` s in place, after the replacement, so that the child
    order (and hence the order of the layers and of their Pyro sites) is the
    module's. Everything else (activations, normalization layers, the ``forward``
    code) is kept; its parameters become point-estimated Pyro parameters. ``module``
    itself is not changed.

    .. note:: Direction noise needs a direction of dimension at least 2. A layer whose
        unit vectors have dimension 1 (e.g. the input layer ``nn.Linear(1, n)`` of a
        1-D regression, or a 1x1 convolution on one channel) gets magnitude noise only;
        if ``direction_noise=True`` was asked for explicitly, a ``UserWarning`` says
        which layers were affected.

    .. note:: Only plain ``nn.Linear`` and ``nn.Conv2d`` (``groups=1``, zero padding
        given as numbers) are converted; their subclasses with a ``forward`` of their
        own (e.g. the projections inside ``nn.MultiheadAttention``) are left as they
        are. Naming an unsupported layer in ``layers`` raises.

    :param torch.nn.Module module: the network (not changed).
    :param layers: names of the layers to convert, as in ``module.named_modules()``
        (e.g. ``["fc1", "head.0"]``); ``None`` converts every supported layer.
    :type layers: iterable of str or None
    :param layer_kwargs: passed to every new DirMag layer (``magnitude_noise``,
        ``direction_noise``, ``magnitude_prior``, ``phi``; ``reverse`` for dense
        layers only).
    :returns: the converted copy, a :class:`~pyro.nn.PyroModule`.
    :raises ValueError: for an unknown or unsupported name in ``layers``, a layer used
        at two places in the module, a keyword a layer does not take, or a weight
        :func:`load_deterministic_` refuses.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module)}")
    unknown = set(layer_kwargs) - _LAYER_KWARGS
    if unknown:
        raise ValueError(
            f"layer_kwargs: unknown keyword(s) {sorted(unknown)}; allowed: {sorted(_LAYER_KWARGS)}"
        )
    net = copy.deepcopy(module)
    candidates = dict(plain_layers(net))
    if layers is None:
        chosen = [n for n, m in candidates.items() if _unsupported(m) is None]
    else:
        if isinstance(layers, str):
            raise ValueError(f"layers must be an iterable of names, got the string {layers!r}")
        chosen = list(layers)
        for name in chosen:
            if name not in candidates:
                raise ValueError(
                    f"layers: {name!r} is not an nn.Linear/nn.Conv2d of the module; "
                    f"those are {list(candidates)}"
                )
            why = _unsupported(candidates[name])
            if why is not None:
                raise ValueError(f"layers: {name!r} cannot be converted: {why}")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"layers: names must be distinct, got {chosen}")
    if not chosen:
        raise ValueError("module has no nn.Linear or nn.Conv2d layer to convert")
    places = _places(net)
    direction_asked = layer_kwargs.get("direction_noise") is True
    flattened = []
    replacements = []
    for name in chosen:
        plain = candidates[name]
        _check_unshared(
            name,
            places[id(plain)],
            "a DirMag layer has one set of Pyro sites, so it cannot be shared",
        )
        kwargs = dict(layer_kwargs)
        if _direction_dim(plain, kwargs) < 2 and kwargs.get("direction_noise", True):
            kwargs["direction_noise"] = False
            flattened.append(name)
        layer = _dirmag_like(plain, kwargs)
        weight = plain.weight.detach()
        layer = layer.to(dtype=weight.dtype, device=weight.device)
        load_deterministic_(layer, plain)
        replacements.append((name, layer))
    if flattened and direction_asked:
        warnings.warn(
            f"to_dirmag: layers {flattened} have unit vectors of dimension 1, where "
            "direction noise is undefined; they get magnitude noise only",
            UserWarning,
            stacklevel=2,
        )
    for name, layer in replacements:
        net = _put(net, name, layer)
    to_pyro_module_(net)
    return net


def to_noisy(module: nn.Module, **noise_kwargs: Any) -> nn.Module:
    r"""
    A copy of a plain network whose ``nn.Linear`` and ``nn.Conv2d`` layers are replaced,
    at their places, by freshly initialized weight-normalized layers with weight noise
    (:class:`~pyro_dirmag.nn.NoisyLinear` / :class:`~pyro_dirmag.nn.NoisyConv2d`) of the
    same shapes, e.g. Gaussian dropout::

        pruned, report = prune(model, guide, thresholds)      # the architecture kept
        net = to_noisy(pruned, noise="gaussian", alpha=0.25)  # new weights, same shapes
        train_deterministic(net, x, y, epochs=50)             # retrain it from scratch

    The weights are not copied: the copy starts from the layers' own initialization (in
    the measurements of docs/RESULTS.md, retraining a pruned architecture from scratch beat
    fine-tuning its pruned weights). Everything else in the module is kept, as in
    :func:`to_dirmag`, and ``module`` itself is not changed. The noise is active in
    ``train()`` mode; :func:`~pyro_dirmag.nn.predict_probs` evaluates the copy as a mean
    network, one noise draw or an ensemble.

    :param torch.nn.Module module: the network (not changed).
    :param noise_kwargs: the keyword arguments of :class:`~pyro_dirmag.nn.NoisyLinear`'s
        noise (``noise``, ``alpha``, ``magnitude``, ``magnitude_alpha``, ``on``,
        ``per_example``), passed to every new layer.
    :returns: the converted copy.
    :raises ValueError: for a module without a supported ``nn.Linear`` / ``nn.Conv2d``
        (see :func:`to_dirmag`), a layer used at two places, or noise keywords the
        layers refuse.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module)}")
    net = copy.deepcopy(module)
    chosen = [(n, m) for n, m in plain_layers(net) if _unsupported(m) is None]
    if not chosen:
        raise ValueError("module has no nn.Linear or nn.Conv2d layer to convert")
    places = _places(net)
    for name, plain in chosen:
        _check_unshared(
            name, places[id(plain)], "its noisy copies would no longer share their weights"
        )
        layer = _same_shape(plain, NoisyLinear, NoisyConv2d, noise_kwargs)
        net = _put(net, name, layer.to(dtype=plain.weight.dtype, device=plain.weight.device))
    return net


def _places(net):
    """``{id(module): [its names]}``: a module registered twice has two names."""
    places = {}
    for name, m in net.named_modules(remove_duplicate=False):
        places.setdefault(id(m), []).append(name)
    return places


def _check_unshared(name, names, why):
    if len(names) > 1:
        raise ValueError(f"layer {name!r} is used at several places {names}; {why}")


def _put(net, name, layer):
    """``net`` with its submodule ``name`` replaced by ``layer`` (``layer`` itself for
    the empty name: the module is one layer)."""
    if not name:
        return layer
    parent_name, _, attr = name.rpartition(".")
    # register_module replaces the child at its place in the parent's ordered
    # children (plain setattr on a PyroModule would move it to the end).
    net.get_submodule(parent_name).register_module(attr, layer)
    return net


_LAYER_KWARGS = frozenset(
    {"magnitude_noise", "direction_noise", "magnitude_prior", "phi", "reverse"}
)


def _unsupported(m):
    """Why the plain layer ``m`` cannot become a DirMag layer, or ``None``."""
    base = type(m)
    if parametrize.is_parametrized(m):
        base = base.__bases__[0]  # torch's Parametrized<Class> subclasses the class
    if base not in (nn.Linear, nn.Conv2d):
        return f"{type(m).__name__} is a subclass with a forward of its own"
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:
            return f"groups={m.groups} (DirMagConv2d has groups=1)"
        if m.padding_mode != "zeros":
            return f"padding_mode={m.padding_mode!r} (DirMagConv2d pads with zeros)"
        if isinstance(m.padding, str):
            return f"padding={m.padding!r} (DirMagConv2d takes numbers)"
    return None


def _direction_dim(m, kwargs):
    """Dimension of the unit vectors that a DirMag layer built from ``m`` rotates."""
    if isinstance(m, nn.Linear):
        return m.out_features if kwargs.get("reverse", False) else m.in_features
    return m.weight[0].numel()


def _dirmag_like(m, kwargs):
    if isinstance(m, nn.Conv2d) and "reverse" in kwargs:
        kwargs = {k: v for k, v in kwargs.items() if k != "reverse"}
    return _same_shape(m, DirMagLinear, DirMagConv2d, kwargs)


def _same_shape(m, linear, conv, kwargs):
    """A new ``linear`` / ``conv`` layer with the shape and settings of the plain ``m``."""
    bias = m.bias is not None
    if isinstance(m, nn.Linear):
        return linear(m.in_features, m.out_features, bias, **kwargs)
    return conv(
        m.in_channels,
        m.out_channels,
        tuple(m.kernel_size),
        tuple(m.stride),
        tuple(m.padding),
        tuple(m.dilation),
        bias,
        **kwargs,
    )
