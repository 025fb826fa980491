r"""
Classification metrics on predicted class probabilities.

Each takes ``probs`` of shape ``(N, C)`` (rows summing to 1) and integer ``labels`` of
shape ``(N,)`` and returns a Python float.
"""

import torch

__all__ = [
    "accuracy",
    "brier_score",
    "expected_calibration_error",
    "negative_log_likelihood",
    "predictive_entropy",
    "reliability_bins",
]


def _check(probs, labels):
    if probs.dim() != 2 or labels.dim() != 1 or probs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected probs of shape (N, C) and labels of shape (N,), got "
            f"{tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.numel() == 0:
        raise ValueError("empty inputs")


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose most probable class is the label."""
    _check(probs, labels)
    return (probs.argmax(-1) == labels).double().mean().item()


def negative_log_likelihood(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12) -> float:
    r"""Mean :math:`-\log p(y_i \mid x_i)`; probabilities are floored at ``eps``."""
    _check(probs, labels)
    p = probs.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)
    return -p.double().clamp_min(eps).log().mean().item()


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, num_bins: int = 15
) -> float:
    r"""
    Expected calibration error of the top-class confidence (Guo et al. 2017):

    .. math::

        \mathrm{ECE} = \sum_b \frac{|B_b|}{N} \left| \mathrm{acc}(B_b) - \mathrm{conf}(B_b) \right|

    over ``num_bins`` equal-width confidence bins :math:`(b/B, (b+1)/B]`.

    **References:**

    [1] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger (2017) "On Calibration of Modern
        Neural Networks"
    """
    count, conf_sum, acc_sum = _confidence_bins(probs, labels, num_bins)
    return ((acc_sum - conf_sum).abs().sum() / count.sum()).item()


def _confidence_bins(probs, labels, num_bins):
    """Per bin :math:`(b/B, (b+1)/B]` of the top-class confidence: the number of
    examples, the sum of their confidences and the number classified right."""
    _check(probs, labels)
    if not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
    conf, pred = probs.double().max(-1)
    correct = (pred == labels).double()
    bins = (conf * num_bins).ceil().long().clamp(1, num_bins) - 1
    count = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins, torch.ones_like(conf))
    conf_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins, conf)
    acc_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins, correct)
    return count, conf_sum, acc_sum


def brier_score(probs, labels):
    r"""Mean Brier score :math:`\frac1N \sum_i \sum_c (p_{ic} - [y_i = c])^2` (0 is perfect,
    2 the worst)."""
    _check(probs, labels)
    p = probs.double()
    onehot = torch.zeros_like(p).scatter_(-1, labels.long().unsqueeze(-1), 1.0)
    return (p - onehot).square().sum(-1).mean().item()


def predictive_entropy(probs, labels=None, eps=1e-12):
    r"""Mean entropy :math:`-\sum_c p_{ic} \log p_{ic}` of the predictive distributions
    (nats); ``labels`` is ignored (accepted for a uniform signature)."""
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ValueError(f"expected non-empty probs of shape (N, C), got {tuple(probs.shape)}")
    p = probs.double()
    return -(p * p.clamp_min(eps).log()).sum(-1).mean().item()


def reliability_bins(probs, labels, num_bins=15):
    """
    The reliability diagram of the top-class confidence, over the bins of
    :func:`expected_calibration_error`.

    :returns: a dict of lists ``count``, ``confidence`` (mean confidence per bin) and
        ``accuracy`` (per bin; ``None`` for empty bins), and ``edges`` (``num_bins + 1``).
    """
    count, conf_sum, acc_sum = _confidence_bins(probs, labels, num_bins)
    nonempty = count > 0
    return {
        "edges": [b / num_bins for b in range(num_bins + 1)],
        "count": [int(c) for c in count.tolist()],
        "confidence": [
            (s / c if ok else None)
            for s, c, ok in zip(conf_sum.tolist(), count.tolist(), nonempty.tolist(), strict=True)
        ],
        "accuracy": [
            (s / c if ok else None)
            for s, c, ok in zip(acc_sum.tolist(), count.tolist(), nonempty.tolist(), strict=True)
        ],
    }
