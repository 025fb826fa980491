"""
Training methods by name: each builds a Pyro model and its guide for one of the
networks of :data:`~pyro_dirmag.models.ARCHITECTURES`, so that one ELBO, one optimizer
and one command line train every row of the thesis's tables 1 and 3.

* ``dirmag``: DirMag layers (output-unit groups), :class:`~pyro_dirmag.infer.DirMagGuide`;
* ``dirmag-reverse``: DirMag with input-feature groups in the dense layers ("FC reverse");
* ``gaussian-dropout``: multiplicative :math:`\\mathcal N(1, \\alpha)` noise
  (non-variational);
* ``none``: the plain weight-normalized network;
* ``projected``, ``tangent``, ``rotation_normal``, ``rotation_beta``: the direction
  noises of :mod:`pyro_dirmag.nn.noise` (non-variational).

Non-variational methods are a :class:`~pyro_dirmag.models.PlainClassifier` with the
guide :class:`~pyro_dirmag.models.NoLatents`.
"""

from torch import nn

from pyro_dirmag.infer.recipe import Recipe
from pyro_dirmag.nn import EVAL_MODES, NOISES, NoisyConv2d, NoisyLinear

from .architectures import layers
from .classifier import NoLatents, PlainClassifier, deterministic_model, dirmag_model

__all__ = [
    "DEFAULT_ALPHA",
    "DIRMAG_OPTIONS",
    "METHODS",
    "NOISE_OPTIONS",
    "build",
    "evaluation_modes",
    "is_variational",
    "unused_options",
]

#: Every method name (:func:`build`).
METHODS = ("dirmag", "dirmag-reverse", "gaussian-dropout", "none") + tuple(
    n for n in NOISES if n != "gaussian"
)

#: Noise strength of the non-variational methods when none is given.
DEFAULT_ALPHA = {"gaussian-dropout": 0.25, "projected": 0.1, "tangent": 0.1}
DEFAULT_ALPHA.update(rotation_normal=0.1, rotation_beta=0.1)


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"Expected parameter method ({method!r}) to be one of {list(METHODS)}")


def is_variational(method):
    """Whether ``method`` has a variational posterior (a DirMag guide to prune)."""
    _check_method(method)
    return method.startswith("dirmag")


def evaluation_modes(method):
    """
    The prediction modes that differ for ``method``: :data:`~pyro_dirmag.nn.EVAL_MODES`,
    or ``("mean",)`` for the noise-free ``"none"``.
    """
    _check_method(method)
    return EVAL_MODES[:1] if method == "none" else EVAL_MODES


#: The options of :func:`build` that only DirMag methods use.
DIRMAG_OPTIONS = ("phi", "angle_prior", "direction_noise")
#: The options of :func:`build` that only the noise methods use.
NOISE_OPTIONS = ("alpha", "magnitude", "magnitude_alpha", "on")
# An option's value when it is not given: its default in build().
_UNSET = {"direction_noise": True, "on": "activation"}


def unused_options(method):
    """The options of :func:`build` (:data:`DIRMAG_OPTIONS`, :data:`NOISE_OPTIONS`) that
    ``method`` has no use for: the DirMag ones for the other methods, the noise ones for
    the DirMag methods and ``"none"``."""
    _check_method(method)
    unused = set()
    if not is_variational(method):
        unused.update(DIRMAG_OPTIONS)
    if is_variational(method) or method == "none":
        unused.update(NOISE_OPTIONS)
    return unused


def _check_options_apply(method, options):
    """A ``ValueError`` naming the first option set in ``options`` that ``method`` has
    no use for (:func:`unused_options`)."""
    unused = unused_options(method)
    for name, value in options.items():
        if name in unused and value != _UNSET.get(name):
            kind = "DirMag posterior" if name in DIRMAG_OPTIONS else "noise layers"
            raise ValueError(
                f"Expected parameter {name} ({value!r}) to be left unset: method {method!r} "
                f"has no {kind}"
            )


def build(
    architecture,
    method,
    num_data,
    *,
    recipe=None,
    phi=None,
    angle_prior=None,
    direction_noise=True,
    alpha=None,
    magnitude=None,
    magnitude_alpha=None,
    on="activation",
):
    """
    The model and guide of ``method`` on the network ``architecture``.

    :param str architecture: a key of :data:`~pyro_dirmag.models.ARCHITECTURES`.
    :param str method: one of :data:`METHODS`.
    :param int num_data: training set size :math:`N`.
    :param Recipe recipe: initial noise of the DirMag guide (default :class:`Recipe`).
    :param str phi: the DirMag rotation-plane mode; default ``"shared"`` for
        ``dirmag-reverse`` and ``"per_example"`` for ``dirmag``.
    :param str angle_prior: the DirMag angle prior, ``"uniform"`` (default, the
        thesis's) or ``"hemisphere"`` (:class:`~pyro_dirmag.distributions.HemisphereAngle`).
    :param bool direction_noise: whether the DirMag layers have the latent direction
        angle (default ``True``, the thesis's model); ``False`` keeps the magnitude
        posterior only.
    :param float alpha: noise strength of a non-variational method
        (default :data:`DEFAULT_ALPHA`).
    :param str magnitude: optional magnitude noise of the noisy layers.
    :param float magnitude_alpha: its variance.
    :param str on: where the noise enters, ``"activation"`` or ``"weight"``.
    :returns: ``(model, guide)``; the guide is not run yet.
    :raises ValueError: for an unknown ``method``, or an option that ``method`` does not
        use (a DirMag option for a non-DirMag method, a noise option for a DirMag method
        or ``"none"``), rather than ignoring it.
    """
    _check_method(method)
    _check_options_apply(
        method,
        {
            "phi": phi,
            "angle_prior": angle_prior,
            "direction_noise": direction_noise,
            "alpha": alpha,
            "magnitude": magnitude,
            "magnitude_alpha": magnitude_alpha,
            "on": on,
        },
    )
    if is_variational(method):
        reverse = method == "dirmag-reverse"
        model = dirmag_model(
            architecture,
            num_data,
            reverse=reverse,
            phi=phi or ("shared" if reverse else "per_example"),
            angle_prior=angle_prior or "uniform",
            direction_noise=direction_noise,
        )
        return model, (recipe or Recipe()).guide(model)
    if method == "none":
        return PlainClassifier(deterministic_model(architecture), num_data), NoLatents()
    noise = "gaussian" if method == "gaussian-dropout" else method
    kwargs = dict(
        noise=noise,
        alpha=DEFAULT_ALPHA[method] if alpha is None else alpha,
        magnitude=magnitude,
        magnitude_alpha=magnitude_alpha,
        on=on,
    )

    def linear(n_in, n_out):
        return NoisyLinear(n_in, n_out, **kwargs)

    def conv(c_in, c_out, k):
        return NoisyConv2d(c_in, c_out, k, **kwargs)

    net = nn.Sequential(*layers(architecture, linear, conv))
    return PlainClassifier(net, num_data), NoLatents()
