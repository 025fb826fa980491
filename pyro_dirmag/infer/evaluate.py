r"""
Evaluation of a trained classifier in several prediction modes, as one metrics dict.

:func:`evaluate` returns ``{mode: {metric: value}}`` for the modes ``"mean"``,
``"sample"`` and ``"ensemble"`` (:mod:`pyro_dirmag.infer.predict`) and the metrics of
:data:`METRICS`. It serves both DirMag models (with a
:class:`~pyro_dirmag.infer.DirMagGuide`) and guide-free networks: a model whose guide
has no ``posterior_mean`` is evaluated through its ``net`` attribute with
:func:`pyro_dirmag.nn.predict_probs`, whose modes have the same names.

Example::

    results = evaluate(model, guide, x_test, y_test, num_samples=20)
    results["ensemble"]["accuracy"]
"""

from ..nn.evaluation import predict_probs
from .metrics import (
    accuracy,
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    predictive_entropy,
)
from .predict import PREDICT_MODES, predict

__all__ = ["METRICS", "classification_metrics", "evaluate", "predict_modes"]

#: ``name: function(probs, labels)`` of every metric :func:`evaluate` reports.
METRICS = {
    "accuracy": accuracy,
    "nll": negative_log_likelihood,
    "ece": expected_calibration_error,
    "brier": brier_score,
    "entropy": predictive_entropy,
}


def classification_metrics(probs, labels):
    """Every metric of :data:`METRICS` of predicted ``probs`` ``(N, C)`` against ``labels``."""
    return {name: fn(probs, labels) for name, fn in METRICS.items()}


def predict_modes(model, guide, x, modes=PREDICT_MODES, num_samples=20, batch_size=1000):
    """
    Class probabilities of ``model`` for ``x`` in each of ``modes``.

    :returns: ``{mode: probs}``.
    """
    bad = [m for m in modes if m not in PREDICT_MODES]
    if bad or not modes:
        raise ValueError(f"Expected parameter modes ({list(modes)}) to be among {PREDICT_MODES}")
    # A model's data plate of size N refuses chunks of more than N examples.
    batch_size = min(batch_size, getattr(model, "num_data", batch_size))
    out = {}
    for mode in modes:
        if hasattr(guide, "posterior_mean"):
            out[mode] = predict(
                model, guide, x, mode=mode, num_samples=num_samples, batch_size=batch_size
            )
        else:
            out[mode] = predict_probs(
                model.net, x, mode, num_samples=num_samples, batch_size=batch_size
            )
    return out


def evaluate(model, guide, x, y, modes=PREDICT_MODES, num_samples=20, batch_size=1000):
    """
    :func:`classification_metrics` of ``model`` on ``(x, y)`` in each of ``modes``.

    :param model: a model returning logits (a DirMag model, or one with a ``net``).
    :param guide: its guide.
    :param modes: among ``"mean"``, ``"sample"``, ``"ensemble"``.
    :param int num_samples: networks averaged by ``"ensemble"``.
    :param int batch_size: examples per chunk.
    :returns: ``{mode: {metric: float}}``.
    """
    probs = predict_modes(model, guide, x, modes, num_samples, batch_size)
    return {mode: classification_metrics(p, y) for mode, p in probs.items()}
