"""The robust-loss baselines of the paper's comparison, as losses of logits.

Each is ``<name>_loss(logits, labels, **hparams)`` with integer labels,
returning the per-example loss, shape [batch] (average it, or weight it, in
the training step). They work from ``log p = log_softmax(logits)[label]``
wherever a loss or its gradient would otherwise meet ``log 0`` or
``0**negative`` when ``p`` underflows, so they stay finite, with finite
gradients, for extreme logits. `LOSSES` maps their short names to them (a
loss that is also a base loss of p has its name in
`ogc_jax.losses.BASE_LOSSES`); each one's default hyperparameters, the
paper's CIFAR-10 setting, are those of its signature
(`ogc_jax.losses.hyperparameters`). They compute ``log p`` with
`ogc_jax.losses.log_probabilities`; those whose base loss has a bounded
derivative go through ``p`` with `logit_loss_from_base`.
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp

from ogc_jax.losses import (check_logits, log_probabilities, mae,
                            phuber_cross_entropy,
                            phuber_generalized_cross_entropy,
                            probability_of_label, taylor_cross_entropy)


def logit_loss_from_base(base_loss):
  """Turns a base loss of p into a per-example loss of logits and labels.

  Args:
    base_loss: an elementwise function of ``p`` with keyword hyperparameters,
      such as `ogc_jax.losses.mae` or `ogc_jax.losses.phuber_cross_entropy`.

  Returns:
    ``loss_fn(logits, labels, **hparams) = base_loss(p, **hparams)`` with
    ``p = probability_of_label(logits, labels)``, shape [batch].

  .. warning::
    The route goes through ``p``, which underflows to 0 for very wrong
    predictions: a base loss that is infinite at ``p = 0`` (cross-entropy) is
    then infinite, and one whose ``dl/dp`` is infinite there (focal, GCE) has
    a NaN gradient. `ce_loss`, `focal_loss` and `gce_loss` compute those
    losses from ``log p`` instead. Base losses with bounded ``dl/dp`` (MAE,
    Taylor-CE, the PHuber losses) are exact and stable by this route.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import baselines, losses
    >>> loss_fn = baselines.logit_loss_from_base(losses.mae)
    >>> loss_fn(jnp.zeros((1, 4)), jnp.array([2]))
    Array([0.75], dtype=float32)
  """

  def loss_fn(logits, labels, **hparams):
    return base_loss(probability_of_label(logits, labels), **hparams)

  loss_fn.__name__ = f'{base_loss.__name__}_of_logits'
  loss_fn.__doc__ = (f'`{base_loss.__name__}` of ``p = '
                     f'probability_of_label(logits, labels)``.')
  return loss_fn


def _one_minus_p(log_p):
  # 1 - p, accurate also where p is close to 1.
  return -jnp.expm1(log_p)


def _normalized_cross_entropy(log_probs, log_p):
  # NCE = -log p_y / sum_k (-log p_k) (Ma et al., 2020, Eq. 4).
  return log_p / jnp.sum(log_probs, axis=-1)


def _reverse_cross_entropy(log_p, log_zero):
  # RCE = -sum_k p_k log q_k with q the one-hot label and log 0 := A
  # (Wang et al., 2019, Eq. 5): the label's term is log 1 = 0, the others sum
  # to -A (1 - p_y).
  return -log_zero * _one_minus_p(log_p)


def ce_loss(logits, labels):
  """Softmax cross-entropy, ``-log p``, per example.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].

  Returns:
    The loss of each example, shape [batch].

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import baselines
    >>> baselines.ce_loss(jnp.zeros((1, 4)), jnp.array([0]))  # log 4
    Array([1.3862944], dtype=float32)
  """
  return -log_probabilities(logits, labels)[1]


def focal_loss(logits, labels, gamma=0.5):
  """Focal loss, ``-(1 - p)**gamma * log p``, per example.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].
    gamma: focusing parameter; ``gamma = 0`` is cross-entropy. The default 0.5
      is the CIFAR-10 setting of the robust-loss benchmarks (Ma et al., 2020).

  Returns:
    The loss of each example, shape [batch].

  References:
    Lin et al., `Focal Loss for Dense Object Detection
    <https://arxiv.org/abs/1708.02002>`_, ICCV 2017.
  """
  log_p = log_probabilities(logits, labels)[1]
  one_minus_p = _one_minus_p(log_p)
  # (1 - p)**gamma has an infinite slope at p = 1 for gamma < 1, where it
  # multiplies -log p = 0; the double `where` gives the product its limiting
  # gradient 0 there instead of 0 * inf = NaN.
  positive = one_minus_p > 0
  weight = jnp.where(positive,
                     jnp.where(positive, one_minus_p, 1.0)**gamma, 0.0)
  return -weight * log_p


def mae_loss(logits, labels):
  """Mean absolute error, ``1 - p``, per example; see `mae`.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].

  Returns:
    The loss of each example, shape [batch].

  References:
    Ghosh et al., `Robust Loss Functions under Label Noise for Deep Neural
    Networks <https://arxiv.org/abs/1712.09482>`_, AAAI 2017.
  """
  return logit_loss_from_base(mae)(logits, labels)


def gce_loss(logits, labels, q=0.7):
  """Generalized cross-entropy, ``(1 - p**q) / q``, per example.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].
    q: in (0, 1]; 0.7 is the paper's CIFAR setting.

  Returns:
    The loss of each example, shape [batch].

  References:
    Zhang & Sabuncu, `Generalized Cross Entropy Loss for Training Deep Neural
    Networks with Noisy Labels <https://arxiv.org/abs/1805.07836>`_,
    NeurIPS 2018.
  """
  log_p = log_probabilities(logits, labels)[1]
  # p**q = exp(q log p), whose gradient stays finite where p underflows.
  return -jnp.expm1(q * log_p) / q


def taylor_ce_loss(logits, labels, order=2):
  """Taylor cross-entropy, per example; see `taylor_cross_entropy`.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].
    order: the order ``t`` of the Taylor series, a positive Python int.

  Returns:
    The loss of each example, shape [batch].

  References:
    Feng et al., `Can Cross Entropy Loss Be Robust to Label Noise?
    <https://doi.org/10.24963/ijcai.2020/305>`_, IJCAI 2020.
  """
  return logit_loss_from_base(taylor_cross_entropy)(logits, labels,
                                                   order=order)


def sce_loss(logits, labels, alpha=0.1, beta=1.0, log_zero=math.log(1e-4)):
  """Symmetric cross-entropy, ``alpha * CE + beta * RCE``, per example.

  The reverse cross-entropy ``RCE = -sum_k p_k log q_k`` swaps prediction and
  one-hot label ``q``; its ``log 0`` is the constant ``A``, here
  ``log 1e-4`` as in the authors' code (which clamps the one-hot label at
  1e-4), so that ``RCE = -A (1 - p)``. The code's extra clamp of ``p_k`` at
  1e-7 is not applied.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].
    alpha: weight of the cross-entropy; 0.1 for CIFAR-10.
    beta: weight of the reverse cross-entropy; 1.0 for CIFAR-10.
    log_zero: ``A``, the value taken for ``log 0``.

  Returns:
    The loss of each example, shape [batch].

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import baselines
    >>> baselines.sce_loss(jnp.zeros((1, 2)), jnp.array([0]), alpha=0.0,
    ...                    beta=1.0, log_zero=-4.0)  # -A * (1 - 1/2)
    Array([2.], dtype=float32)

  References:
    Wang et al., `Symmetric Cross Entropy for Robust Learning with Noisy
    Labels <https://arxiv.org/abs/1908.06112>`_, ICCV 2019.
  """
  log_p = log_probabilities(logits, labels)[1]
  return alpha * -log_p + beta * _reverse_cross_entropy(log_p, log_zero)


def nce_rce_loss(logits, labels, alpha=1.0, beta=1.0,
                 log_zero=math.log(1e-4)):
  """Active passive loss NCE+RCE, ``alpha * NCE + beta * RCE``, per example.

  ``NCE = -log p_y / sum_k (-log p_k)`` is the normalized cross-entropy and
  ``RCE = -A (1 - p_y)`` the reverse cross-entropy of `sce_loss`.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].
    alpha: weight of NCE; 1.0 for CIFAR-10.
    beta: weight of RCE; 1.0 for CIFAR-10.
    log_zero: ``A``, the value taken for ``log 0`` in RCE.

  Returns:
    The loss of each example, shape [batch].

  References:
    Ma et al., `Normalized Loss Functions for Deep Learning with Noisy Labels
    <https://arxiv.org/abs/2006.13554>`_, ICML 2020.
  """
  log_probs, log_p = log_probabilities(logits, labels)
  return (alpha * _normalized_cross_entropy(log_probs, log_p)
          + beta * _reverse_cross_entropy(log_p, log_zero))


def nce_agce_loss(logits, labels, alpha=1.0, beta=4.0, a=6.0, q=1.5):
  """NCE plus asymmetric GCE, ``alpha * NCE + beta * AGCE``, per example.

  ``AGCE = ((a + 1)**q - (a + p)**q) / q``, an asymmetric loss for ``a > 0``,
  ``q > 0``.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].
    alpha: weight of NCE; 1.0 for CIFAR-10.
    beta: weight of AGCE; 4.0 for CIFAR-10.
    a: AGCE offset; 6.0 for CIFAR-10.
    q: AGCE exponent; 1.5 for CIFAR-10.

  Returns:
    The loss of each example, shape [batch].

  References:
    Zhou et al., `Asymmetric Loss Functions for Learning with Noisy Labels
    <https://arxiv.org/abs/2106.03110>`_, ICML 2021.
  """
  log_probs, log_p = log_probabilities(logits, labels)
  agce = ((a + 1.0)**q - (a + jnp.exp(log_p))**q) / q
  return alpha * _normalized_cross_entropy(log_probs, log_p) + beta * agce


def js_loss(logits, labels, pi1=0.7):
  """Jensen-Shannon divergence loss, per example.

  ``L = D_JS(e_y, p) / Z`` with the weighted divergence
  ``D_JS = pi1 KL(e_y || m) + (1 - pi1) KL(softmax || m)``,
  ``m = pi1 e_y + (1 - pi1) softmax``, and ``Z = -(1 - pi1) log(1 - pi1)``.
  It approaches cross-entropy as ``pi1 -> 0`` and (a multiple of) MAE as
  ``pi1 -> 1``. Every class but the label has ``log(softmax_k / m_k) =
  -log(1 - pi1)``, so the loss depends on ``p = softmax[label]`` alone:
  ``D_JS = -pi1 log m_y + (1 - pi1) (p log(p / m_y) - (1 - p) log(1 - pi1))``.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].
    pi1: weight of the label distribution, in (0, 1). The authors tune it per
      noise setting; on CIFAR-10 they use 0.7 for 20% and 40% symmetric noise
      (0.1 without noise, 0.9 for 60% and 80%, 0.3 for asymmetric noise). The
      default is 0.7.

  Returns:
    The loss of each example, shape [batch].

  References:
    Englesson & Azizpour, `Generalized Jensen-Shannon Divergence Loss for
    Learning with Noisy Labels <https://arxiv.org/abs/2105.04522>`_,
    NeurIPS 2021.
  """
  log_p = log_probabilities(logits, labels)[1]
  p = jnp.exp(log_p)
  log_m = jnp.log(pi1 + (1.0 - pi1) * p)
  log_1m_pi1 = jnp.log1p(-pi1)
  divergence = -pi1 * log_m + (1.0 - pi1) * (
      p * (log_p - log_m) - _one_minus_p(log_p) * log_1m_pi1)
  return divergence / (-(1.0 - pi1) * log_1m_pi1)


def logit_clip_ce_loss(logits, labels, norm_bound=1.5, norm_order=2):
  """Cross-entropy of clipped logits (LogitClip), per example.

  The logit vector ``z`` is rescaled to ``z * min(1, bound / ||z||_r)``, so
  that its ``r``-norm is at most ``bound``, before the cross-entropy. The
  clipping is continuous in ``z`` and differentiable through.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].
    norm_bound: the upper bound on the logit norm, ``1 / tau`` in the paper
      (the official code's ``--temp``), tuned there in {0.1, 0.5, ..., 5}; the
      default 1.5 is the value of the official CIFAR-10 example.
    norm_order: ``r >= 1`` of the norm; the paper uses 2.

  Returns:
    The loss of each example, shape [batch].

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import baselines
    >>> # ||(3, 4)|| = 5 is clipped to 1.5: CE of (0.9, 1.2)
    >>> baselines.logit_clip_ce_loss(jnp.array([[3.0, 4.0]]), jnp.array([1]))
    Array([0.55435526], dtype=float32)

  References:
    Wei et al., `Mitigating Memorization of Noisy Labels by Clipping the Model
    Prediction <https://arxiv.org/abs/2212.04055>`_, ICML 2023.
  """
  logits = check_logits(logits, labels)
  norm_to_the_r = jnp.sum(jnp.abs(logits)**norm_order, axis=-1, keepdims=True)
  # Floored so that the norm's gradient is finite at z = 0.
  norm = jnp.maximum(norm_to_the_r, jnp.finfo(logits.dtype).tiny)**(
      1.0 / norm_order)
  clipped = logits * (norm_bound / jnp.maximum(norm, norm_bound))
  return ce_loss(clipped, labels)


def anl_ce_loss(logits, labels, alpha=5.0, beta=5.0, min_prob=1e-7):
  """Active negative loss ANL-CE, ``alpha * NCE + beta * NNCE``, per example.

  With ``A = -log(min_prob)`` and ``l_k = A + log max(p_k, min_prob)`` (the
  cross-entropy of class ``k`` clamped at ``A``, subtracted from ``A``), the
  normalized negative cross-entropy is ``NNCE = 1 - l_y / sum_k l_k``.

  The paper trains ANL-CE with an L1 penalty ``delta * ||theta||_1`` on the
  weights (``delta = 5e-5`` for CIFAR-10). It is a regulariser, not part of
  this loss: add it to the objective (or the optimiser) separately.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].
    alpha: weight of NCE; 5.0 for CIFAR-10.
    beta: weight of NNCE; 5.0 for CIFAR-10.
    min_prob: the probability at which ``p_k`` is clamped, in (0, 1 / C).

  Returns:
    The loss of each example, shape [batch].

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import baselines
    >>> # uniform prediction: NCE = 1/C, NNCE = 1 - 1/C
    >>> baselines.anl_ce_loss(jnp.zeros((1, 4)), jnp.array([0]), alpha=1.0,
    ...                       beta=1.0)
    Array([1.], dtype=float32)

  References:
    Ye et al., `Active Negative Loss Functions for Learning with Noisy Labels
    <https://arxiv.org/abs/2310.03590>`_, NeurIPS 2023.
  """
  log_probs, log_p = log_probabilities(logits, labels)
  log_min_prob = math.log(min_prob)
  negative = jnp.maximum(log_probs, log_min_prob) - log_min_prob
  # The label's entry of `negative`, from log p.
  nnce = 1.0 - ((jnp.maximum(log_p, log_min_prob) - log_min_prob)
                / jnp.sum(negative, axis=-1))
  return alpha * _normalized_cross_entropy(log_probs, log_p) + beta * nnce


def phuber_ce_loss(logits, labels, tau=10.0):
  """PHuber-CE, per example; see `phuber_cross_entropy`.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].
    tau: the fixed gradient clipping threshold. The paper picks it from
      {2, 10} on a noisy validation set; 10 is the common CIFAR-10 choice.

  Returns:
    The loss of each example, shape [batch].

  References:
    Menon et al., `Can Gradient Clipping Mitigate Label Noise?
    <https://openreview.net/forum?id=rklB76EKPr>`_, ICLR 2020.
  """
  return logit_loss_from_base(phuber_cross_entropy)(logits, labels, tau=tau)


def phuber_gce_loss(logits, labels, q=0.7, tau=10.0):
  """PHuber-GCE, per example; see `phuber_generalized_cross_entropy`.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].
    q: the GCE exponent, in (0, 1).
    tau: the fixed gradient clipping threshold; see `phuber_ce_loss`.

  Returns:
    The loss of each example, shape [batch].

  References:
    Menon et al., `Can Gradient Clipping Mitigate Label Noise?
    <https://openreview.net/forum?id=rklB76EKPr>`_, ICLR 2020.
  """
  return logit_loss_from_base(phuber_generalized_cross_entropy)(
      logits, labels, q=q, tau=tau)


# Every baseline as loss_fn(logits, labels, **hparams) -> per-example loss.
LOSSES: dict[str, Callable[..., jax.Array]] = {
    'ce': ce_loss,
    'focal': focal_loss,
    'mae': mae_loss,
    'gce': gce_loss,
    'taylor_ce': taylor_ce_loss,
    'sce': sce_loss,
    'nce_rce': nce_rce_loss,
    'nce_agce': nce_agce_loss,
    'js': js_loss,
    'logit_clip_ce': logit_clip_ce_loss,
    'anl_ce': anl_ce_loss,
    'phuber_ce': phuber_ce_loss,
    'phuber_gce': phuber_gce_loss,
}
