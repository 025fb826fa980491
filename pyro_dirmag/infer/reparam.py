import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.infer.reparam.reparam import Reparam
from pyro.ops.tensor_utils import safe_normalize

from pyro_dirmag.distributions._sphere import geodesic_angle, tangent_project
from pyro_dirmag.distributions.plane_rotation import PlaneRotation, _support_bounds


class PlaneRotationReparam(Reparam):
    r"""
    Reparametrizer for :class:`~pyro_dirmag.distributions.PlaneRotation` latent
    variables (including :class:`~pyro_dirmag.distributions.TangentProjectedNormal`),
    so that autoguides can handle them: there is no ``biject_to(sphere)``, exactly as
    for Pyro's :class:`~pyro.infer.reparam.projected_normal.ProjectedNormalReparam`.

    A site ``x ~ PlaneRotation(v, angle)`` becomes two auxiliary latent sites

    .. math::

        \epsilon \sim \text{angle} \quad (\texttt{<name>\_angle}), \qquad
        z \sim \mathcal{N}(0, I_n) \quad (\texttt{<name>\_normal}),

    and a deterministic site
    :math:`x = \cos(\epsilon) v + \sin(\epsilon)\, \phi`,
    :math:`\phi = (z - (z \cdot v) v) / \|z - (z \cdot v) v\|`, which has the same
    law, since the projected standard normal's direction is uniform on the tangent
    sphere. The angle site keeps the angle law's own support (an interval), which
    autoguides handle with ``biject_to``. ::

        @poutine.reparam(config={"w": PlaneRotationReparam()})
        def model():
            pyro.sample("w", PlaneRotation(loc, Uniform(0.0, math.pi / 2)))

    This reparametrization works only for latent variables, not likelihoods.
    """

    def apply(self, msg):
        name = msg["name"]
        fn = msg["fn"]
        value = msg["value"]
        is_observed = msg["is_observed"]
        if is_observed:
            raise NotImplementedError("PlaneRotationReparam does not support observe statements")

        event_dim = fn.event_dim
        fn = _strip_independent(fn)
        if not isinstance(fn, PlaneRotation):
            raise ValueError(
                f"PlaneRotationReparam expects a PlaneRotation site, but site {name!r} has {fn!r}"
            )
        loc = fn.loc

        # Invert the transform, used only for initialization (e.g. ``init_to_value``
        # on the original site): the geodesic angle, kept off the ends of the angle
        # law's support where an interval bijection would send it to +-inf, and the
        # tangent part of the value, or a random direction where that part is zero
        # (``init_to_feasible`` gives e_1, which may equal ``loc``).
        value_angle = value_normal = None
        if value is not None:
            theta, _, _ = geodesic_angle(loc, value)
            low, high = _support_bounds(fn.angle.support, theta)
            low, high = low.clamp(min=-math.pi), high.clamp(max=math.pi)
            margin = 1e-3 * (high - low)
            value_angle = torch.minimum(torch.maximum(theta, low + margin), high - margin)
            value_normal = tangent_project(loc, value)
            degenerate = torch.linalg.vector_norm(value_normal, dim=-1, keepdim=True) == 0
            value_normal = torch.where(degenerate, torch.randn_like(value_normal), value_normal)

        # Draw the angle and parameter-free noise. A plain torch angle law is wrapped
        # in Pyro's Independent (with 0 dims) so that it has Pyro's interface.
        angle_fn = fn.angle
        if not isinstance(angle_fn, TorchDistributionMixin):
            angle_fn = dist.Independent(angle_fn, 0)
        angle = pyro.sample(
            f"{name}_angle",
            _with_event_dim(angle_fn, event_dim - 1),
            obs=value_angle,
            infer={"is_observed": is_observed},
        )
        z = pyro.sample(
            f"{name}_normal",
            _with_event_dim(dist.Normal(torch.zeros_like(loc), 1.0).to_event(1), event_dim),
            obs=value_normal,
            infer={"is_observed": is_observed},
        )

        # Differentiably transform.
        if value is None:
            phi = safe_normalize(tangent_project(loc, z))
            value = angle.cos().unsqueeze(-1) * loc + angle.sin().unsqueeze(-1) * phi

        # Simulate a pyro.deterministic() site.
        new_fn = dist.Delta(value, event_dim=event_dim).mask(False)
        return {"fn": new_fn, "value": value, "is_observed": True}


def _strip_independent(fn):
    """``fn`` without its ``Independent`` wrappers (the site keeps its event dim)."""
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return fn


def _with_event_dim(fn, event_dim):
    """``fn`` with batch dimensions moved to the event until it has ``event_dim``."""
    if fn.event_dim < event_dim:
        fn = fn.to_event(event_dim - fn.event_dim)
    if fn.event_dim != event_dim:
        raise ValueError(f"a law with event dim {fn.event_dim} cannot have event dim {event_dim}")
    return fn
