r"""
KL divergence between two :class:`~pyro.distributions.torch_distribution.ExpandedDistribution`.

The DirMag layers declare one copy of each latent site per example of the data plate
(see :mod:`pyro_dirmag.nn.dirmag`). Every copy has the same prior and the same
posterior, so the KL of the copies is the KL of the base distributions, broadcast:

.. math::

    \mathrm{KL}\big(q^{\otimes M} \,\|\, p^{\otimes M}\big)_i = \mathrm{KL}(q \,\|\, p)
    \quad \text{for each copy } i .

Computing it once on the base (instead of on ``M`` materialized copies) keeps the KL's
cost independent of the batch size. Pyro does not register this pair itself.

.. note:: The package's convention is to keep every ``register_kl`` in
    :mod:`pyro_dirmag.distributions.kl`; this one lives here until it is moved there.
"""

from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.distributions.util import broadcast_shape
from torch.distributions import kl_divergence, register_kl


@register_kl(ExpandedDistribution, ExpandedDistribution)
def _kl_expanded_expanded(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"KL between distributions of event shapes {tuple(p.event_shape)} and "
            f"{tuple(q.event_shape)}"
        )
    kl = kl_divergence(p.base_dist, q.base_dist)
    return kl.expand(broadcast_shape(p.batch_shape, q.batch_shape))
