r"""
Structured pruning of a fitted DirMag model (thesis section 4.1; docs/MATH.md section 3).

A unit whose :math:`\log\alpha = 2(\log\lambda - \log|m|)` exceeds a threshold has a
magnitude posterior dominated by noise and carries no signal; the reference code of
Molchanov et al. drops weights at :math:`\log\alpha > 3`. Here whole units are
dropped: output units (rows, or conv filters) of ordinary layers, input features
(columns) of ``reverse`` layers, and the matching inputs of the next layer, so the
returned network has really smaller weight tensors.

The returned network is the *mean network* (:math:`g = m`, :math:`\epsilon = E[\epsilon]`,
:math:`\phi = 0`; the ``"mean"`` mode of :func:`~pyro_dirmag.infer.predict`) with the
dropped units removed: its outputs equal the mean network's with the dropped units'
magnitudes and biases set to 0, provided the activation between layers maps 0 to 0
(ReLU, max-pooling, flattening). The output units of the model's last DirMag layer
(the class logits) are never dropped.

Assumption, checked: the DirMag layers form a chain in the order they are called
(each one's outputs are the next one's inputs, through elementwise maps, pooling or
flattening), as in every network of :mod:`pyro_dirmag.models` and every plain MLP or
LeNet-style network converted by :func:`~pyro_dirmag.nn.to_dirmag`.
"""

import copy
import math
import warnings
from dataclasses import dataclass, field

import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn

from .._sites import site_name
from .._upstream import plain_module_state, pyro_module_latents
from ..checkpoint import check_params, example_inputs
from ..nn.dirmag import DirMagConv2d, DirMagLinear, dirmag_layers
from ..nn.model import DirMagModel
from .guide import DirMagGuide

_DIRMAG_LAYERS = (DirMagLinear, DirMagConv2d)

__all__ = ["PruneReport", "SelectFeatures", "mean_weights", "prune"]


class SelectFeatures(nn.Module):
    """Keeps the input features listed in ``index`` (last dimension)."""

    def __init__(self, index):
        super().__init__()
        self.register_buffer("index", index.clone())

    def forward(self, x):
        return x.index_select(-1, self.index)

    def extra_repr(self):
        return f"num_features={self.index.numel()}"


@dataclass
class PruneReport:
    """Per-layer counts of a :func:`prune` call.

    ``layers`` holds one dict per DirMag layer with keys ``name``, ``kind``
    (``"out"`` units or ``"in"`` features for ``reverse``), ``units_kept`` (units of
    that kind left in the pruned layer), ``units_total``, ``params_kept``,
    ``params_total`` (weights and biases), ``macs_kept``, ``macs_total``
    (multiply-accumulates of the layer's weights for one row of the network's inputs:
    the weights times the output positions each one is applied at, e.g. a conv
    filter's height x width; bias additions not counted) and ``threshold`` (the
    layer's threshold); ``threshold`` is the float or per-layer dict :func:`prune` was
    given.

    Parameters measure storage; multiply-accumulates measure compute, where conv
    filters count far more than their weights (the "speed-up" of structured pruning,
    as SBP, Neklyudov et al. 2017, report it).
    """

    threshold: float | dict[str, float]
    layers: list = field(default_factory=list)

    @property
    def params_kept(self) -> int:
        return sum(r["params_kept"] for r in self.layers)

    @property
    def params_total(self) -> int:
        return sum(r["params_total"] for r in self.layers)

    @property
    def macs_kept(self) -> int:
        return sum(r["macs_kept"] for r in self.layers)

    @property
    def macs_total(self) -> int:
        return sum(r["macs_total"] for r in self.layers)

    def as_dict(self):
        """A JSON-ready summary: thresholds, per-layer counts, totals, parameter
        compression and multiply-accumulate reduction."""
        return {
            "threshold": self.threshold,
            "layers": [dict(r) for r in self.layers],
            "params_kept": self.params_kept,
            "params_total": self.params_total,
            "compression": self.compression,
            "macs_kept": self.macs_kept,
            "macs_total": self.macs_total,
            "mac_reduction": self.mac_reduction,
        }

    @property
    def compression(self) -> float:
        """Parameter compression: total weights and biases before / after."""
        return self.params_total / max(self.params_kept, 1)

    @property
    def mac_reduction(self) -> float:
        """Compute reduction: multiply-accumulates per input row before / after."""
        return self.macs_total / max(self.macs_kept, 1)

    def __str__(self):
        if isinstance(self.threshold, dict):
            lines = ["pruning at per-layer log alpha thresholds"]
        else:
            lines = [f"pruning at log alpha > {self.threshold:g}"]
        for r in self.layers:
            what = "input features" if r["kind"] == "in" else "units"
            lines.append(
                f"  {r['name']:<12} {what:<14} kept {r['units_kept']:>5} / {r['units_total']:<5}"
                f" (log alpha > {r['threshold']:g})"
                f" params {r['params_kept']:>8} / {r['params_total']:<8}"
            )
        lines.append(
            f"  total params {self.params_kept} / {self.params_total} "
            f"(compression x{self.compression:.2f}), multiply-accumulates "
            f"{self.macs_kept} / {self.macs_total} (x{self.mac_reduction:.2f})"
        )
        return "\n".join(lines)


@torch.no_grad()
def mean_weights(
    model: nn.Module, guide: DirMagGuide
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """
    The mean network's weight and bias of every DirMag layer.

    :returns: ``{layer name: (weight, bias or None)}`` with torch's weight layout.
    """
    means = guide.posterior_mean()
    out = {}
    for name, layer in dirmag_layers(model):
        if layer.magnitude_noise:
            g = means[site_name(layer, "magnitude")]
        else:
            g = layer.magnitude
        eps = means[site_name(layer, "angle")] if layer.direction_noise else None
        out[name] = (layer.weight_from(g, eps), layer.bias)
    return out


@torch.no_grad()
def prune(
    model: nn.Module, guide: DirMagGuide, threshold: float | dict[str, float] = 3.0
) -> tuple[nn.Module, PruneReport]:
    r"""
    Drops the units with :math:`\log\alpha >` ``threshold`` and returns the network as a
    smaller, deterministic, plain :class:`torch.nn.Module` (the mean network) and a
    :class:`PruneReport`::

        pruned, report = prune(model, guide)
        exported = torch.export.export(pruned, (x_test[:1],))

    What is pruned is the model's network: ``model.net`` for a
    :class:`~pyro_dirmag.nn.DirMagModel` (or :class:`~pyro_dirmag.models.DirMagClassifier`),
    else the model itself when it is a network (e.g. ``PyroModule[nn.Sequential]`` or
    the result of :func:`~pyro_dirmag.nn.to_dirmag`). In the copy every DirMag layer is
    replaced by a plain :class:`torch.nn.Linear` / :class:`torch.nn.Conv2d` (preceded by
    a :class:`SelectFeatures` where a ``reverse`` layer dropped network inputs) and
    every ``PyroModule[C]`` by its class ``C``, so no Pyro is left in it and the
    user's ``forward`` code runs unchanged.

    .. note:: What cannot be pruned, with a ``ValueError`` that says so: a model whose
        own class is a :class:`~pyro.nn.PyroModule` subclass with a ``forward`` of its
        own (its plates and sample statements cannot be kept in a plain module: build
        it as ``DirMagModel(net, likelihood, num_data)``); a network holding other
        Pyro latents (``PyroSample``) or such PyroModule subclasses; a DirMag layer
        that a run does not call; and any network where dropping units is not
        the same as zeroing them: the DirMag layers must form a chain in the order
        they are called, joined by maps that send 0 to 0 (ReLU, tanh, pooling,
        flattening), without skip connections. This last rule is checked by running
        the pruned network against the mean network with the dropped units zeroed on
        one row of the guide's inputs.

    :param model: the model, a :class:`torch.nn.Module` with DirMag layers.
    :param guide: its fitted :class:`~pyro_dirmag.infer.DirMagGuide`.
    :param threshold: the :math:`\log\alpha` above which a unit is dropped: a float
        for every layer, or a dict ``{layer name: float}`` naming every DirMag layer of
        the network (as :func:`~pyro_dirmag.infer.choose_thresholds` returns; names
        as in :attr:`PruneReport.layers`).
    :returns: ``(pruned_network, report)``.
    :raises ValueError: for what cannot be pruned (see the note), or if Pyro's param
        store disagrees with the model's parameters (see
        :func:`pyro_dirmag.checkpoint.check_params`).
    """
    network = _network(model)
    layers = dirmag_layers(network)
    if not layers:
        raise ValueError("model: it has no DirMag layer to prune")
    check_params(model, guide)
    args, kwargs = example_inputs(guide)
    order, net_args = _call_order(model, guide, network, args, kwargs)
    by_name = dict(layers)
    layers = [(name, by_name[name]) for name in order]
    thresholds = _thresholds_per_layer(threshold, [name for name, _ in layers])
    log_alpha = guide.log_alpha()
    mean_network = mean_weights(network, guide)
    unit_keep = []
    for name, layer in layers:
        if layer.magnitude_noise:
            unit_keep.append(log_alpha[site_name(layer, "magnitude")] <= thresholds[name])
        else:
            unit_keep.append(torch.ones(layer.num_units, dtype=torch.bool))
    # Output masks (never drop the outputs of the last layer) and input masks.
    out_keep, in_keep = [], []
    for k, (name, layer) in enumerate(layers):
        n_out = layer.v.shape[0]
        last = k == len(layers) - 1
        if layer.reverse or last:
            out_keep.append(torch.ones(n_out, dtype=torch.bool))
        else:
            out_keep.append(unit_keep[k].clone())
        keep_in = unit_keep[k].clone() if layer.reverse else None
        if k > 0:
            prev = out_keep[k - 1]
            n_in = layer.v.shape[1]
            if n_in % prev.numel():
                raise ValueError(
                    f"model: cannot chain {layers[k - 1][0]!r} ({prev.numel()} outputs) into "
                    f"{name!r} ({n_in} inputs)"
                )
            per_output = n_in // prev.numel()  # e.g. a conv filter's flattened positions
            spread = prev.repeat_interleave(per_output)
            keep_in = spread if keep_in is None else keep_in & spread
            if layer.reverse:
                # An output of the previous layer whose features a reverse layer drops
                # all of is an output the previous layer no longer needs to compute.
                out_keep[k - 1] = prev & keep_in.view(prev.numel(), per_output).any(1)
        in_keep.append(keep_in)
    pruned, zeroed = copy.deepcopy(network), copy.deepcopy(network)
    report = PruneReport(threshold)
    weights_kept = {}
    for k, (name, layer) in enumerate(layers):
        weight, bias = mean_network[name]
        weight = weight.detach()
        bias = None if bias is None else bias.detach()
        rows = out_keep[k].nonzero().squeeze(-1)
        # the reference: the same weights with this layer's dropped units zeroed (rows,
        # or columns of a reverse layer), nothing removed
        zero_w, zero_b = weight.clone(), None if bias is None else bias.clone()
        if layer.reverse:
            zero_w[:, ~unit_keep[k]] = 0
        else:
            zero_w[~out_keep[k]] = 0
            if zero_b is not None:
                zero_b[~out_keep[k]] = 0
        weight = weight.index_select(0, rows)
        bias = None if bias is None else bias.index_select(0, rows)
        select = None
        if in_keep[k] is not None:
            cols = in_keep[k].nonzero().squeeze(-1)
            weight = weight.index_select(1, cols)
            if k == 0 and layer.reverse:
                select = SelectFeatures(cols)
            elif layer.reverse:
                # the features the pruned layers before it still compute
                prev = out_keep[k - 1]
                arriving = prev.repeat_interleave(in_keep[k].numel() // prev.numel())
                if not torch.equal(in_keep[k], arriving):
                    # a reverse layer after a conv keeps some positions of a kept filter:
                    # pick them out of the features that arrive
                    select = SelectFeatures(in_keep[k][arriving].nonzero().squeeze(-1))
        plain = _plain_layer(layer, weight, bias)
        if select is not None:
            plain = nn.Sequential(select, plain)
        pruned = _set_submodule(pruned, name, plain)
        zeroed = _set_submodule(zeroed, name, _plain_layer(layer, zero_w, zero_b))
        total = layer.v.numel() + (0 if layer.bias is None else layer.bias.numel())
        kept = weight.numel() + (0 if bias is None else bias.numel())
        weights_kept[name] = weight.numel()
        report.layers.append(
            {
                "name": name,
                "kind": "in" if layer.reverse else "out",
                "units_kept": int((in_keep[k] if layer.reverse else out_keep[k]).sum()),
                "units_total": layer.num_units,
                "params_kept": kept,
                "params_total": total,
                "threshold": thresholds[name],
            }
        )
    pruned, zeroed = _depyro(pruned), _depyro(zeroed)
    _check_plain(pruned)
    expected, positions = _run_counting_positions(zeroed, [n for n, _ in layers], net_args)
    _check_same(pruned, expected, net_args)
    for row, (name, layer) in zip(report.layers, layers, strict=True):
        row["macs_kept"] = weights_kept[name] * positions[name]
        row["macs_total"] = layer.v.numel() * positions[name]
    # Registration order in the report, as dirmag_layers gives it.
    rank = {name: i for i, (name, _) in enumerate(dirmag_layers(network))}
    report.layers.sort(key=lambda r: rank[r["name"]])
    return pruned, report


def _network(model):
    """The module that prune turns into a plain network."""
    if isinstance(model, DirMagModel):
        return model.net
    for name, m in model.named_modules():
        if isinstance(m, PyroModule) and not _is_generated(type(m)):
            if not isinstance(m, _DIRMAG_LAYERS):
                where = f"submodule {name!r}" if name else "model"
                raise ValueError(
                    f"model: cannot prune {where} of class {type(m).__name__}: it is a "
                    "PyroModule subclass whose forward is Pyro code (plates, sample "
                    "statements), which a plain torch module cannot keep. Build the model "
                    "as DirMagModel(net, likelihood, num_data) with the layers in net"
                )
    return model


def _is_generated(cls):
    """Whether ``cls`` is a ``PyroModule[C]`` class made by Pyro from a torch class."""
    return _torch_class(cls) is not None


def _torch_class(cls):
    """The torch class ``C`` when ``cls`` is the class ``PyroModule[C]``, else ``None``.

    ``PyroModule[C]`` subclasses ``C`` and returns the same class on every call, so
    ``cls`` is one exactly when indexing ``PyroModule`` with its one torch (non-Pyro)
    base gives ``cls`` back (public API only).
    """
    if not (isinstance(cls, type) and issubclass(cls, PyroModule)) or cls is PyroModule:
        return None  # (PyroModule itself is PyroModule[torch.nn.Module], not generated)
    bases = [b for b in cls.__bases__ if issubclass(b, nn.Module) and not issubclass(b, PyroModule)]
    if len(bases) == 1 and PyroModule[bases[0]] is cls:
        return bases[0]
    return None


def _call_order(model, guide, network, args, kwargs):
    """The DirMag layers' names in the order one run calls them, and the network's
    inputs in that run."""
    order, net_args = [], []
    names = {id(m): n for n, m in dirmag_layers(network)}
    handles = [
        m.register_forward_pre_hook(lambda mod, a: order.append(names[id(mod)]))
        for _, m in dirmag_layers(network)
    ]
    handles.append(
        network.register_forward_pre_hook(
            lambda mod, a, kw: net_args.append((a, kw)) if not net_args else None,
            with_kwargs=True,
        )
    )
    try:
        with poutine.block():
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            poutine.replay(model, trace=guide_trace)(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    # (A layer called twice has two sites of one name: Pyro refuses the model itself.)
    missing = sorted(set(names.values()) - set(order))
    if missing:
        raise ValueError(f"model: cannot prune layers that a run does not call {missing}")
    return order, net_args[0]


def _check_plain(module):
    for name, m in module.named_modules():
        if isinstance(m, PyroModule):
            raise ValueError(
                f"model: cannot prune submodule {name!r} ({type(m).__name__}): it keeps Pyro "
                "latent variables or parameters (PyroSample/PyroParam)"
            )


def _run_counting_positions(network, names, net_args):
    """``(output, {name: positions})``: ``network`` run on ``net_args``, and how many
    output positions each named layer applies its weights at (1 for a dense layer on one
    row of inputs, height x width for a conv layer)."""
    positions = {}

    def count(name):
        def hook(module, inputs, output):
            units = output.shape[-3] if isinstance(module, nn.Conv2d) else output.shape[-1]
            positions[name] = output.numel() // max(units, 1)

        return hook

    handles = [network.get_submodule(n).register_forward_hook(count(n)) for n in names]
    try:
        args, kwargs = net_args
        output = network(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return output, positions


def _check_same(pruned, expected, net_args):
    """The pruned network must compute ``expected``, the mean network's output with the
    dropped units zeroed."""
    args, kwargs = net_args
    try:
        got = pruned(*args, **kwargs)
    except RuntimeError as error:
        raise ValueError(
            "model: dropping units breaks this network (the DirMag layers are not a chain "
            f"of layers in call order): {error}"
        ) from error
    if not (torch.is_tensor(got) and torch.is_tensor(expected)):
        return
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise ValueError(
            "model: dropping units changes this network's output beyond zeroing them: its "
            "DirMag layers are not a chain joined by maps that send 0 to 0 (a skip "
            "connection, or an activation such as sigmoid)"
        )


def _thresholds_per_layer(threshold, names):
    if isinstance(threshold, dict):
        unknown = sorted(set(threshold) - set(names))
        missing = [n for n in names if n not in threshold]
        if unknown or missing:
            raise ValueError(
                f"threshold must name every DirMag layer {names}; unknown {unknown}, "
                f"missing {missing}"
            )
        out = {n: float(threshold[n]) for n in names}
    else:
        out = dict.fromkeys(names, float(threshold))
    bad = [n for n, t in out.items() if math.isnan(t)]
    if bad:
        raise ValueError(f"threshold of {bad} is NaN")
    return out


def _plain_layer(layer, weight, bias):
    with warnings.catch_warnings():
        # A layer left with no unit has zero-element weights, which torch's initializers
        # warn about; the weights are copied in below anyway.
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        plain = _new_plain_layer(layer, weight, bias)
    plain = plain.to(dtype=weight.dtype, device=weight.device)
    plain.weight.copy_(weight)
    if bias is not None:
        plain.bias.copy_(bias)
    return plain


def _new_plain_layer(layer, weight, bias):
    if isinstance(layer, DirMagLinear):
        return nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    if isinstance(layer, DirMagConv2d):
        return nn.Conv2d(
            weight.shape[1],
            weight.shape[0],
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            bias=bias is not None,
        )
    raise TypeError(f"cannot prune a layer of type {type(layer).__name__}")


def _set_submodule(root, name, module):
    """Puts ``module`` at ``name`` in ``root`` (in place) and returns the root."""
    if not name:
        return module
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    # In place (keeps the child order of Sequential containers), bypassing
    # PyroModule.__setattr__'s naming of the new plain child.
    parent._modules[attr] = module
    return root


def _depyro(module):
    """Turns ``PyroModule[X]`` containers back into plain ``X`` (recursively)."""
    for name, child in list(module._modules.items()):
        module._modules[name] = _depyro(child)
    base = _torch_class(type(module))
    if base is not None and not pyro_module_latents(module):
        plain = base.__new__(base)
        plain.__dict__.update(plain_module_state(module))
        return plain
    return module
