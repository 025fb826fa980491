r"""
Saving and loading a fitted model and its guide.

:func:`save` writes the ``state_dict`` of the model and of the guide (any Pyro
``AutoGuide``, :class:`~pyro.infer.autoguide.AutoGuideList` included) and one row of
the inputs the guide was first run with; :func:`load` restores them into a freshly
built model and guide of the same architecture::

    pyro_dirmag.save("run.pt", model, guide)
    # later, in another process
    model = dirmag_model("lenet300", num_data=60000)
    guide = DirMagGuide(model)
    pyro_dirmag.load("run.pt", model, guide)
    probs = predict(model, guide, x_test, mode="mean")

**Why not the param store.** With Pyro's global parameter store (the default in Pyro
1.9), a :class:`~pyro.nn.PyroModule` registers each ``nn.Parameter`` in the store but
computes with its own tensor, and a guide reads its ``PyroParam`` values from the store
only while it runs inside Pyro. A store restored with
``pyro.get_param_store().set_state`` therefore leaves a new model's weights and biases
at their initial values, and whatever reads the guide outside Pyro (posterior means,
:math:`\log\alpha`) sees stale values: predictions at chance, without an error. The
state dicts hold the modules' own tensors and round-trip exactly. :func:`check_params`
detects a store that disagrees with the modules;
:func:`~pyro_dirmag.infer.predict`, :func:`~pyro_dirmag.infer.prune` and :func:`save`
call it and raise instead of returning wrong numbers.
"""

import os
from typing import Any, BinaryIO

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuide
from torch import nn

__all__ = ["check_params", "example_inputs", "load", "save"]

_FORMAT = "pyro_dirmag.checkpoint"
_FORMAT_VERSION = 1


def example_inputs(guide: AutoGuide) -> tuple[tuple, dict]:
    """
    One row of the arguments the guide was first run with (its prototype trace), as
    ``(args, kwargs)``: tensors are cut to their first row, other values are kept.

    :param guide: a Pyro ``AutoGuide`` that has been run.
    :raises ValueError: if the guide has not been run yet.
    """
    trace = getattr(guide, "prototype_trace", None)
    if trace is None or "_INPUT" not in trace.nodes:
        raise ValueError("guide has not been run yet: call it (or svi.step) once")
    node = trace.nodes["_INPUT"]
    args = tuple(_first_row(a) for a in node["args"])
    kwargs = {k: _first_row(v) for k, v in node["kwargs"].items()}
    return args, kwargs


def _first_row(value):
    if torch.is_tensor(value) and value.dim() > 0:
        return value[:1].detach().clone()
    return value


def _param_sites(model, guide, args, kwargs):
    """``{name: tensor in the param store}`` of every ``pyro.param`` the guide and the
    model make on ``args``."""
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    sites = {}
    for trace in (guide_trace, model_trace):
        for name, site in trace.nodes.items():
            if site["type"] == "param":
                value = site["value"]
                unconstrained = getattr(value, "unconstrained", None)
                sites[name] = unconstrained() if unconstrained is not None else value
    return sites


def check_params(model: nn.Module, guide: AutoGuide, *args: Any, **kwargs: Any) -> None:
    """
    Checks that Pyro's param store holds, under every parameter name the model and the
    guide use, the tensor that the modules compute with.

    Running the guide first makes its ``PyroParam`` containers take the store's values
    (Pyro's rule), so only the model's ``nn.Parameter`` s can disagree: after
    ``pyro.get_param_store().set_state(...)``, or when a new model reuses the names of
    an earlier one without ``pyro.clear_param_store()``. Training such a model would
    update the store's tensors while the model computes with its own.

    :param model: the model.
    :param guide: its guide, already run once.
    :param args: inputs for one run of both (default: :func:`example_inputs`).
    :raises ValueError: naming the parameters whose store tensor is not the model's.
    """
    if not args and not kwargs:
        args, kwargs = example_inputs(guide)
    own = {id(p) for m in (model, guide) for p in m.parameters()}
    sites = _param_sites(model, guide, args, kwargs)
    stale = [name for name, tensor in sites.items() if id(tensor) not in own]
    if stale:
        raise ValueError(
            f"Pyro's param store holds other tensors than the model under {stale[:5]}"
            f"{' and more' if len(stale) > 5 else ''}: the model computes with its own "
            "parameters, so its predictions would silently ignore the store. This "
            "happens after pyro.get_param_store().set_state(...) or when a model is "
            "rebuilt without pyro.clear_param_store(). Save and load with "
            "pyro_dirmag.save / pyro_dirmag.load (state dicts) instead"
        )


def save(
    path: str | os.PathLike | BinaryIO,
    model: nn.Module,
    guide: AutoGuide,
    extra: dict | None = None,
) -> None:
    """
    Writes the model's and the guide's ``state_dict`` and one row of the guide's first
    inputs (to set up a fresh guide in :func:`load`) to ``path`` with
    :func:`torch.save`.

    :param path: a file name or a writable binary file object.
    :param torch.nn.Module model: the model.
    :param guide: its guide (any Pyro ``AutoGuide``), run at least once.
    :param dict extra: anything else to keep (tensors, numbers, strings, containers of
        them), read back with ``torch.load(path, weights_only=True)["extra"]``.
    :raises ValueError: if the guide has not been run, or the param store disagrees
        with the modules (:func:`check_params`).
    """
    args, kwargs = example_inputs(guide)
    check_params(model, guide, *args, **kwargs)
    from . import __version__

    torch.save(
        {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "pyro_dirmag_version": __version__,
            "model": model.state_dict(),
            "guide": guide.state_dict(),
            "example_args": args,
            "example_kwargs": kwargs,
            "extra": extra,
        },
        path,
    )


def load(
    path: str | os.PathLike | BinaryIO,
    model: nn.Module,
    guide: AutoGuide,
    map_location: Any = None,
) -> tuple[nn.Module, AutoGuide]:
    """
    Restores a checkpoint written by :func:`save` into ``model`` and ``guide``, built as
    the saved ones were (same architecture, same guide class and options).

    A guide that has not been run yet is first run on the saved example inputs, so
    that its parameters exist. The param store entries of the model's and the guide's
    parameter names are then dropped, so that the next run registers the loaded
    tensors instead of reviving older ones.

    :param path: a file name or a readable binary file object.
    :param torch.nn.Module model: a model of the saved architecture.
    :param guide: a guide of the saved class for ``model``.
    :param map_location: as for :func:`torch.load`.
    :returns: ``(model, guide)``.
    :raises ValueError: if the file is not such a checkpoint or does not fit the model or
        the guide.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"path: {path!r} is not a pyro_dirmag checkpoint (pyro_dirmag.save)")
    if state["format_version"] > _FORMAT_VERSION:
        raise ValueError(
            f"path: checkpoint format {state['format_version']} is newer than this "
            f"pyro_dirmag reads ({_FORMAT_VERSION})"
        )
    args, kwargs = state["example_args"], state["example_kwargs"]
    if map_location is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
        args = tuple(a.to(device) if torch.is_tensor(a) else a for a in args)
        kwargs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()}
    if getattr(guide, "prototype_trace", None) is None:
        with torch.no_grad(), poutine.block():
            guide(*args, **kwargs)
    store = pyro.get_param_store()
    for name in _param_sites(model, guide, args, kwargs):
        if name in store:
            del store[name]
    for what, module in (("model", model), ("guide", guide)):
        try:
            module.load_state_dict(state[what])
        except RuntimeError as error:
            raise ValueError(f"{what}: the checkpoint does not fit it: {error}") from error
    return model, guide
