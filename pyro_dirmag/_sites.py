r"""
The site protocol between the DirMag layers and the inference code, in one place.

A DirMag layer (:mod:`pyro_dirmag.nn.dirmag`) declares up to two latent sites per
call, one per *kind* in :data:`SITE_KINDS`:

* ``"magnitude"``: the magnitudes :math:`g_j`, event shape ``(units,)``;
* ``"angle"``: the rotation angles :math:`\epsilon_j`, event shape ``(units,)``.

**Names.** The site of kind ``k`` of a layer is named after the layer's attribute
path in its root :class:`~pyro.nn.PyroModule`, ``"<layer path>.<k>"``, exactly the name
Pyro gives the layer's attribute ``k`` (:func:`site_name`).

**Record.** Every such site carries a :class:`DirMagSite` in its ``infer`` dict: which
kind it is and which layer declared it. The guide, the ELBO and pruning recognize
DirMag sites by this record (:func:`site_record`) and nothing else; the guide reads the
initial posterior from the layer (:meth:`~pyro_dirmag.nn.DirMagLinear.initial_magnitude`).

**Per-example copies and their scale** (docs/MATH.md section 5). Inside vectorized
plates a site gets one copy of its law per plate element, as
:class:`~pyro_dirmag.distributions._per_example_copies.PerExampleCopies` (one base law,
so its KL is computed once, see :mod:`pyro_dirmag.distributions.kl`), and is scaled by
:math:`1/N`, :math:`N` the product of the plates' full sizes. A plate subsampled to
:math:`M` of :math:`N` elements weighs each copy by :math:`N/M`, so the :math:`M`
copies sum to exactly one KL per step while the likelihood keeps its :math:`N/M`
weight: the estimator's expectation is the ELBO of the global model, for any batch
size. The layers and :class:`~pyro_dirmag.infer.DirMagGuide` both declare their sites
through :func:`sample_per_example`, so the copies and their scales agree by
construction. Outside any plate a site is one draw per unit, unscaled.

This module sits below :mod:`pyro_dirmag.nn` and :mod:`pyro_dirmag.infer` (it imports
neither), so both read the protocol from here.
"""

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import pyro
import torch
from pyro import poutine
from pyro.poutine.runtime import get_plates
from torch import nn

from ._upstream import pyro_fullname
from .distributions._per_example_copies import PerExampleCopies

__all__ = [
    "SITE_KINDS",
    "DirMagSite",
    "SiteKind",
    "is_per_example_pair",
    "sample_layer_site",
    "sample_per_example",
    "site_name",
    "site_record",
]

SiteKind = Literal["magnitude", "angle"]
SITE_KINDS: tuple[str, ...] = get_args(SiteKind)
# The one key of a site's ``infer`` dict that this protocol uses.
_INFER_KEY = "dirmag"


@dataclass(frozen=True, eq=False)
class DirMagSite:
    """
    What a DirMag layer's latent site carries in its ``infer`` dict.

    :param str kind: one of :data:`SITE_KINDS`.
    :param torch.nn.Module layer: the DirMag layer that declared the site; the guide
        reads its initial posterior from it.
    """

    kind: SiteKind
    layer: nn.Module

    def __post_init__(self):
        _check_kind(self.kind)


def site_name(layer: nn.Module, kind: SiteKind) -> str:
    """
    The name of ``layer``'s latent site of kind ``kind`` (see the module notes).

    :param layer: a DirMag layer that has been called at least once, alone or inside
        its root :class:`~pyro.nn.PyroModule` (Pyro fixes a submodule's name then).
    :param str kind: one of :data:`SITE_KINDS`.
    """
    _check_kind(kind)
    return pyro_fullname(layer, kind)


def site_record(site: dict) -> DirMagSite | None:
    """The :class:`DirMagSite` of a trace's sample site, or ``None`` when the site is not
    a DirMag layer's."""
    record = site["infer"].get(_INFER_KEY)
    return record if isinstance(record, DirMagSite) else None


def sample_layer_site(layer: nn.Module, kind: SiteKind, fn: Any) -> torch.Tensor:
    """
    Declares ``layer``'s latent site of kind ``kind`` with law ``fn`` (event shape
    ``(units,)``), per example inside the enclosing plates (see the module notes), and
    returns its value.
    """
    record = DirMagSite(kind, layer)
    return sample_per_example(site_name(layer, kind), fn, infer={_INFER_KEY: record})


def sample_per_example(name: str, fn: Any, infer: dict | None = None) -> torch.Tensor:
    """
    Samples site ``name`` with one copy of ``fn`` per element of the enclosing
    vectorized plates, each copy scaled by :math:`1/N` (:math:`N` the plates' full
    size); see the module notes.

    :param str name: the site name.
    :param fn: the law of one copy.
    :param dict infer: the site's ``infer`` dict.
    """
    frames = [f for f in get_plates() if f.dim is not None]
    if frames:
        batch_shape = [1] * max(-f.dim for f in frames)
        for f in frames:
            batch_shape[f.dim] = f.size
        fn = PerExampleCopies(fn, torch.Size(batch_shape))
    full_size = math.prod((f.full_size or f.size) for f in frames)
    with poutine.scale(scale=1.0 / full_size):
        return pyro.sample(name, fn, infer=infer or {})


def is_per_example_pair(q: Any, p: Any) -> bool:
    """Whether guide law ``q`` and model law ``p`` are both per-example copies (a DirMag
    site inside a data plate), whose KL is that of their base laws."""
    return isinstance(q, PerExampleCopies) and isinstance(p, PerExampleCopies)


def _check_kind(kind):
    if kind not in SITE_KINDS:
        raise ValueError(f"kind must be one of {SITE_KINDS}, got {kind!r}")
