r"""
A handler that weighs the KL terms of an ELBO: :math:`E_q[\log p(y \mid z)] -
\beta\, \mathrm{KL}(q \| p)`, for KL warm-up (:class:`~pyro_dirmag.infer.LinearWarmup`)
or a tempered bound (:math:`\beta > 1` still bounds the evidence from below).

**References:**

[1] C. K. Sønderby, T. Raiko, L. Maaløe, S. K. Sønderby, O. Winther (2016) "Ladder
    Variational Autoencoders" (KL warm-up)
"""

import math

from pyro.poutine.messenger import Messenger

__all__ = ["KLWeightMessenger", "kl_weight"]


class KLWeightMessenger(Messenger):
    r"""
    Multiplies the log-densities of every latent (non-observed) sample site by
    ``weight``, so that the ELBO becomes :math:`E_q[\log p(y \mid z)] -
    \beta\, \mathrm{KL}(q \| p)`. Applied around the whole loss computation it scales
    the model's and the guide's latent sites alike (the analytic KL of
    :class:`~pyro.infer.TraceMeanField_ELBO` takes the guide site's scale); observed
    sites keep their scale. ``weight = 0`` masks the latent terms instead of scaling
    them (Pyro scales must be positive, and 0 times an infinite term is NaN).
    """

    def __init__(self, weight):
        weight = float(weight)
        if not weight >= 0 or math.isinf(weight):
            raise ValueError(f"Expected parameter weight ({weight}) to be finite and >= 0")
        super().__init__()
        self.weight = weight

    def _process_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"] or self.weight == 1.0:
            return
        if self.weight == 0.0:
            msg["mask"] = False
        else:
            msg["scale"] = self.weight * msg["scale"]


def kl_weight(fn=None, weight=1.0):
    r"""
    Handler that multiplies every KL (latent) term of the ELBO by ``weight``
    (:class:`KLWeightMessenger`)::

        with kl_weight(weight=0.3):
            loss = elbo.differentiable_loss(model, guide, x, y)

    :param callable fn: a stochastic function (model or guide), or ``None`` to use the
        handler as a context manager.
    :param float weight: :math:`\beta \ge 0`.
    """
    msngr = KLWeightMessenger(weight)
    return msngr(fn) if fn is not None else msngr
