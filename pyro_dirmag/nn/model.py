r"""
A Pyro model made of a network and a likelihood: the data plate, the per-example
noise of the DirMag layers and the :math:`N/M` weight of the likelihood in one place.

.. math::

    p(y, g, \epsilon \mid x) = p(g)\, p(\epsilon)
        \prod_{i=1}^{N} p\big(y_i \mid f_{g,\epsilon}(x_i)\big),

with :math:`f` the network, :math:`p(y_i \mid \cdot)` the user's likelihood and the
product over a mini-batch of :math:`M` examples weighed by :math:`N/M`.
"""

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

__all__ = ["DirMagModel"]


class DirMagModel(PyroModule):
    r"""
    A network with DirMag layers, a likelihood and the size of the training set, as a
    Pyro model (the role of TyXe's ``VariationalBNN`` or bayesian-torch's
    ``dnn_to_bnn``)::

        bnn = to_dirmag(trained_net)
        model = DirMagModel(bnn, lambda logits: dist.Categorical(logits=logits), 60000)
        guide = DirMagGuide(model)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), DirMagELBO())
        # for x, y in loader: svi.step(x, y)

    ``model(x, y)`` runs the network inside the subsampled data plate ``"data"`` of
    size ``num_data`` (so every DirMag layer draws per-example noise and the KL is
    counted once per step) and scores ``y`` at the site ``"y"``, inside the plate,
    under ``likelihood(net(x))``. The likelihood is any callable returning a Pyro
    distribution whose batch shape is ``(batch,)`` (use ``.to_event`` for vector
    outputs). It is called outside the plate, so that latent variables of its own
    are global, e.g. a noise scale in a :class:`~pyro.nn.PyroModule` likelihood::

        class NormalLikelihood(PyroModule):
            def __init__(self):
                super().__init__()
                self.scale = PyroSample(dist.LogNormal(-1.0, 1.0))

            def forward(self, out):
                return dist.Normal(out.squeeze(-1), self.scale)

    whose site is then named ``"likelihood.scale"`` (fit it with
    ``DirMagGuide(model, other=AutoNormal)``). A ``torch.nn.Module`` likelihood's
    parameters are point estimates.

    :param torch.nn.Module net: the network, typically from
        :func:`~pyro_dirmag.nn.to_dirmag`; called as ``net(x)``. A plain
        ``torch.nn.Module`` is made a :class:`~pyro.nn.PyroModule` in place
        (:func:`~pyro.nn.module.to_pyro_module_`).
    :param callable likelihood: ``likelihood(net(x))`` is the distribution of ``y``.
    :param int num_data: size :math:`N` of the training set.
    """

    def __init__(
        self,
        net: nn.Module,
        likelihood: Callable[[torch.Tensor], dist.Distribution],
        num_data: int,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ValueError(f"net must be a torch.nn.Module, got {type(net)}")
        if not callable(likelihood):
            raise ValueError(f"likelihood must be callable, got {type(likelihood)}")
        if not isinstance(num_data, int) or isinstance(num_data, bool) or num_data < 1:
            raise ValueError(f"num_data must be a positive int, got {num_data!r}")
        # A plain module under a PyroModule would be registered with pyro.module, which
        # would register the DirMag layers' parameters a second time under other names.
        to_pyro_module_(net)
        self.net = net
        self.likelihood = likelihood
        self.num_data = num_data

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """
        :param torch.Tensor x: a mini-batch of inputs, batch first.
        :param torch.Tensor y: its targets, or ``None`` to sample them.
        :returns: the network's output ``net(x)``.
        """
        data = pyro.plate("data", self.num_data, subsample_size=x.shape[0])
        with data:
            out = self.net(x)
        # Outside the plate: latent variables of the likelihood are global, one for all
        # the data, not one per example.
        fn = self.likelihood(out)
        with data:
            pyro.sample("y", fn, obs=y)
        return out
