r"""
The per-example copies of a law that a DirMag layer declares inside a data plate.

:class:`PerExampleCopies` is Pyro's
:class:`~pyro.distributions.torch_distribution.ExpandedDistribution` under a name of
this package, so that the KL of two copies can be registered for this package's class
alone (:mod:`pyro_dirmag.distributions.kl`): every copy is the base law, so the KL of
two expansions is the KL of the bases, computed once and broadcast, and its cost does
not grow with the batch size. Pyro's own ``ExpandedDistribution`` keeps Pyro's KL
behaviour, whether or not this package is imported.
"""

from pyro.distributions.torch_distribution import ExpandedDistribution

__all__ = ["PerExampleCopies"]


class PerExampleCopies(ExpandedDistribution):
    """
    ``base_dist`` expanded to ``batch_shape``: independent copies of one law, one per
    element of the enclosing data plates.

    Sampling, densities and shapes are those of
    :class:`~pyro.distributions.torch_distribution.ExpandedDistribution`; only the KL
    differs (registered for pairs of this class, see :mod:`pyro_dirmag.distributions.kl`).

    :param ~torch.distributions.Distribution base_dist: the law of each copy.
    :param torch.Size batch_shape: the batch shape of the copies (``base_dist``'s batch
        shape broadcast to it).
    """

    def hold_kl(self, other, kl):
        """Keeps ``kl``, the KL of this law from ``other``, for the next
        ``kl_divergence(self, other)``, which returns it once: an ELBO that evaluates
        the KL to decide how to score a site hands it on to its loss."""
        self._held_kl = (other, kl)

    def take_held_kl(self, other):
        """The KL held for ``other`` by :meth:`hold_kl` (then forgotten), or ``None``."""
        held = self.__dict__.pop("_held_kl", None)
        if held is None or held[0] is not other:
            return None
        return held[1]
