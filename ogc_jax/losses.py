"""Base losses of p, which OGC clips, and p itself.

A base loss is an elementwise function of ``p``, the predicted probability of
the given (possibly wrong) label. OGC clips its derivative ``|dl/dp|``, which
it obtains by automatic differentiation, so any differentiable ``jnp``
function of ``p`` is a valid base loss; `BASE_LOSSES` names those the
experiments offer (method ``ogc_<name>``). `probability_of_label` computes
``p`` from logits (`log_probabilities` its logarithm, `check_logits` the
inputs), and `hyperparameters` reads a loss's keyword hyperparameters and
defaults from its signature.

The robust-loss baselines, losses of logits and labels, are in
`ogc_jax.baselines`; a loss has the same name in both (``'focal'``).
"""

import collections.abc
import inspect
from typing import Any, Callable, Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np


def cross_entropy(p):
  """Cross-entropy as a function of p: ``l(p) = -log p``.

  Args:
    p: predicted probability of the given label, any shape.

  Returns:
    The elementwise loss, same shape as ``p``.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import losses
    >>> losses.cross_entropy(jnp.array([0.5, 0.25])).round(4)
    Array([0.6931, 1.3863], dtype=float32)
  """
  return -jnp.log(p)


def focal(p, gamma=0.5):
  """Focal loss as a function of p: ``l(p) = -(1 - p)**gamma * log p``.

  Args:
    p: predicted probability of the given label, any shape.
    gamma: focusing parameter; ``gamma = 0`` is cross-entropy.

  Returns:
    The elementwise loss, same shape as ``p``.

  References:
    Lin et al., `Focal Loss for Dense Object Detection
    <https://arxiv.org/abs/1708.02002>`_, ICCV 2017.
  """
  return -((1.0 - p) ** gamma) * jnp.log(p)


def generalized_cross_entropy(p, q=0.7):
  """Generalized cross-entropy as a function of p: ``l(p) = (1 - p**q) / q``.

  Args:
    p: predicted probability of the given label, any shape.
    q: in (0, 1]; ``q -> 0`` approaches cross-entropy, ``q = 1`` is MAE.

  Returns:
    The elementwise loss, same shape as ``p``.

  References:
    Zhang & Sabuncu, `Generalized Cross Entropy Loss for Training Deep Neural
    Networks with Noisy Labels <https://arxiv.org/abs/1805.07836>`_,
    NeurIPS 2018.
  """
  return (1.0 - p**q) / q


def mae(p):
  """Mean absolute error as a function of p: ``l(p) = 1 - p``.

  Ghosh et al. define MAE as ``||e_y - softmax||_1 = 2 (1 - p)``; the factor 2
  is dropped here, as in the later literature and its code.

  Args:
    p: predicted probability of the given label, any shape.

  Returns:
    The elementwise loss, same shape as ``p``.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import losses
    >>> losses.mae(jnp.array([1.0, 0.25]))
    Array([0.  , 0.75], dtype=float32)

  References:
    Ghosh et al., `Robust Loss Functions under Label Noise for Deep Neural
    Networks <https://arxiv.org/abs/1712.09482>`_, AAAI 2017.
  """
  return 1.0 - p


def taylor_cross_entropy(p, order=2):
  """Taylor cross-entropy: ``l(p) = sum_{k=1}^{t} (1 - p)**k / k``.

  The order-``t`` Taylor series of ``-log p`` around ``p = 1``; ``t = 1`` is MAE
  and ``t -> inf`` is cross-entropy.

  Args:
    p: predicted probability of the given label, any shape.
    order: the order ``t``, a positive Python int.

  Returns:
    The elementwise loss, same shape as ``p``.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import losses
    >>> losses.taylor_cross_entropy(jnp.array([1.0, 0.5]), order=2)
    Array([0.   , 0.625], dtype=float32)

  References:
    Feng et al., `Can Cross Entropy Loss Be Robust to Label Noise?
    <https://doi.org/10.24963/ijcai.2020/305>`_, IJCAI 2020.
  """
  if not isinstance(order, int) or order < 1:
    raise ValueError(f'order must be a positive int, got {order!r}.')
  one_minus_p = 1.0 - p
  return sum(one_minus_p**k / k for k in range(1, order + 1))


def phuber_cross_entropy(p, tau=10.0):
  """Partially Huberised cross-entropy (PHuber-CE) as a function of p.

  ``l(p) = -tau * p + log(tau) + 1`` for ``p <= 1 / tau``, else ``-log p``: the
  cross-entropy, linearised where its slope ``|dl/dp| = 1 / p`` exceeds
  ``tau``. It is the loss-side equivalent of clipping ``|dl/dp|`` at the fixed
  threshold ``tau``, which OGC replaces with a threshold adapted at every step.

  Args:
    p: predicted probability of the given label, any shape.
    tau: the gradient clipping threshold, ``tau > 1``.

  Returns:
    The elementwise loss, same shape as ``p``; continuous and continuously
    differentiable in ``p``, with ``dl/dp = max(-tau, -1 / p)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import losses
    >>> losses.phuber_cross_entropy(jnp.array([0.0, 0.1, 0.5]), tau=10.0)
    Array([3.3025851, 2.3025851, 0.6931472], dtype=float32)

  References:
    Menon et al., `Can Gradient Clipping Mitigate Label Noise?
    <https://openreview.net/forum?id=rklB76EKPr>`_, ICLR 2020.
  """
  threshold = 1.0 / tau
  linear = -tau * p + jnp.log(tau) + 1.0
  # -log is taken at max(p, 1 / tau) so that the branch `where` discards has a
  # finite gradient where p underflows to 0.
  return jnp.where(p <= threshold, linear,
                   cross_entropy(jnp.maximum(p, threshold)))


def phuber_generalized_cross_entropy(p, q=0.7, tau=10.0):
  """Partially Huberised generalized cross-entropy (PHuber-GCE) of p.

  The GCE ``(1 - p**q) / q`` linearised where its slope ``|dl/dp| = p**(q - 1)``
  exceeds ``tau``, i.e. for ``p <= p* = tau**(1 / (q - 1))``:
  ``l(p) = l_GCE(p*) - tau * (p - p*)`` there, ``l_GCE(p)`` above.

  Args:
    p: predicted probability of the given label, any shape.
    q: the GCE exponent, in (0, 1).
    tau: the gradient clipping threshold, ``tau > 1``.

  Returns:
    The elementwise loss, same shape as ``p``; continuous and continuously
    differentiable in ``p``, with ``dl/dp = max(-tau, -p**(q - 1))``.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import losses
    >>> losses.phuber_generalized_cross_entropy(
    ...     jnp.array([0.0, 1.0]), q=0.5, tau=10.0)
    Array([1.9, 0. ], dtype=float32)

  References:
    Menon et al., `Can Gradient Clipping Mitigate Label Noise?
    <https://openreview.net/forum?id=rklB76EKPr>`_, ICLR 2020.
  """
  threshold = tau**(1.0 / (q - 1.0))
  linear = (generalized_cross_entropy(threshold, q)
            - tau * (p - threshold))
  # p**q is taken at max(p, p*) so that the branch `where` discards has a
  # finite gradient where p underflows to 0.
  return jnp.where(p <= threshold, linear,
                   generalized_cross_entropy(jnp.maximum(p, threshold), q))


class _Aliased(collections.abc.Mapping):
  """A read-only mapping in which an old name still finds its value.

  Iteration, ``len`` and ``keys()`` show the current names only; lookup and
  ``in`` accept the aliases too.
  """

  def __init__(self, items, aliases):
    self._items = dict(items)
    self._aliases = dict(aliases)
    assert set(self._aliases.values()) <= set(self._items)

  def __getitem__(self, name):
    return self._items[self._aliases.get(name, name)]

  def __iter__(self):
    return iter(self._items)

  def __len__(self):
    return len(self._items)

  def __repr__(self):
    return f'{type(self).__name__}({self._items!r}, aliases={self._aliases!r})'


# Base losses of p that OGC clips, by the name that follows ``ogc_`` in a
# method name, the names of `ogc_jax.baselines.LOSSES`; each one's keyword
# defaults are the CIFAR-10 settings. 'fl', focal's earlier name, stays an
# alias: recorded runs and sweep specs name the method ``ogc_fl``.
BASE_LOSSES: Mapping[str, Callable[..., jax.Array]] = _Aliased({
    'ce': cross_entropy,
    'focal': focal,
    'gce': generalized_cross_entropy,
    'mae': mae,
    'taylor_ce': taylor_cross_entropy,
}, aliases={'fl': 'focal'})


def hyperparameters(loss_fn: Callable[..., Any]) -> dict[str, Any]:
  """The keyword hyperparameters of a loss and their defaults.

  Read from the signature, so that the defaults have one home: the function.

  Args:
    loss_fn: a base loss of ``p`` or a loss of ``(logits, labels)``, such as
      `focal` or `ogc_jax.baselines.sce_loss`.

  Returns:
    A dict from each parameter with a default to that default, in order.

  Example:
    >>> from ogc_jax import losses
    >>> losses.hyperparameters(losses.phuber_generalized_cross_entropy)
    {'q': 0.7, 'tau': 10.0}
    >>> losses.hyperparameters(losses.cross_entropy)
    {}
  """
  return {name: param.default
          for name, param in inspect.signature(loss_fn).parameters.items()
          if param.default is not inspect.Parameter.empty}


# From logits to p (the baselines compute their losses from these too).


def check_logits(logits: chex.Array, labels: chex.Array) -> chex.Array:
  """Checks a batch of logits and integer labels; promotes the logits.

  Concrete labels must lie in ``[0, num_classes)``. Traced labels (under
  ``jit``) cannot be checked: an out-of-range one gives ``log p`` and ``p``
  of NaN for its example (`log_probabilities`), so every loss of it is NaN,
  and OGC leaves the example out (weight 0, counted in
  ``state.num_invalid``); it is never read as another class.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch].

  Returns:
    ``logits`` in float32 or wider: half-precision logits are promoted, so
    the losses computed from them are float32.

  Raises:
    ValueError: for a rank, dtype or batch size that does not fit, or
      concrete labels outside ``[0, num_classes)``, naming them.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import losses
    >>> losses.check_logits(jnp.zeros((2, 4), jnp.bfloat16),
    ...                     jnp.array([0, 3])).dtype
    dtype('float32')
  """
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  if logits.ndim != 2 or not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(
        "`logits` must be a float array of shape [batch, num_classes], got"
        f" {logits.dtype} of shape {logits.shape}.")
  if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(
        "`labels` must be an int array of shape [batch], got"
        f" {labels.dtype} of shape {labels.shape}.")
  if labels.shape[0] != logits.shape[0]:
    raise ValueError(
        f"`labels` ({labels.shape[0]}) and `logits` ({logits.shape[0]}) must"
        " have the same batch size.")
  if not isinstance(labels, jax.core.Tracer):
    num_classes = logits.shape[1]
    values = np.asarray(labels)
    bad = np.flatnonzero((values < 0) | (values >= num_classes))
    if bad.size:
      shown = ", ".join(f"{values[i]} at {i}" for i in bad[:5])
      more = f" and {bad.size - 5} more" if bad.size > 5 else ""
      raise ValueError(
          f"`labels` must lie in [0, {num_classes}) for {num_classes} classes;"
          f" {bad.size} do not ({shown}{more}).")
  return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def log_probabilities(logits, labels):
  """``log_softmax(logits)`` and its entry at each label, ``log p``.

  Args:
    logits: float array, shape [batch, num_classes] (checked and promoted by
      `check_logits`).
    labels: int array, shape [batch].

  Returns:
    ``(log_probs, log_p)``: shapes [batch, num_classes] and [batch]; ``log_p``
    is NaN for a traced label outside ``[0, num_classes)``.

  Raises:
    ValueError: as `check_logits`.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import losses
    >>> log_probs, log_p = losses.log_probabilities(jnp.zeros((1, 4)),
    ...                                             jnp.array([2]))
    >>> log_p  # log(1/4)
    Array([-1.3862944], dtype=float32)
  """
  log_probs = jax.nn.log_softmax(check_logits(logits, labels), axis=-1)
  labels = jnp.asarray(labels)
  num_classes = log_probs.shape[-1]
  in_range = (labels >= 0) & (labels < num_classes)
  # Traced labels out of range: NaN, not a wrap-around to the last class.
  log_p = jnp.take_along_axis(log_probs, jnp.where(in_range, labels, 0)[:, None],
                              axis=-1)[:, 0]
  return log_probs, jnp.where(in_range, log_p, jnp.nan)


def probability_of_label(logits, labels):
  """Predicted probability of the given label, ``p = softmax(logits)[label]``.

  Computed as ``exp(log_softmax(logits)[label])``, so that it neither overflows
  nor loses the small probabilities that ``softmax`` rounds to 0 early; ``p``
  is still exactly 0 where it is below the smallest float32.

  Args:
    logits: float array, shape [batch, num_classes].
    labels: int array, shape [batch], the given (possibly noisy) labels.

  Returns:
    ``p``, shape [batch].

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import losses
    >>> losses.probability_of_label(jnp.zeros((2, 4)), jnp.array([0, 3]))
    Array([0.25, 0.25], dtype=float32)
  """
  return jnp.exp(log_probabilities(logits, labels)[1])
