"""The training methods: a baseline loss, or OGC with a base loss of p.

`create_method` gives the `Method` of ``config.method``, the one thing a train
step (`experiments.train.make_steps`) does differently for each method:

* `Baseline`: a loss of ``(logits, labels)`` (`ogc_jax.baselines.LOSSES`),
  its mean over the batch;
* `OGC`: OGC's fused route (`ogc_jax.ogc_weights`): a base loss of p, each
  example weighted so that the gradient is the clipped one
  (`ogc_jax.weighted_base_loss`);

(OGC's per-example route, `ogc_jax.ogc` on per-example gradients, is the
benchmarks' `benchmarks.per_example.OGCPerExample`: the same update as `OGC`
without BatchNorm, at the memory of a batch of gradients, and with BatchNorm
not the same run, as each example is its own batch of one.)

`parse_method_name` is the one reading of a method's name.

A method owns:

* its state (`Method.init`), which the train state carries and checkpoints:
  OGC's `ogc_jax.OGCState`; a baseline has none (``{}``);
* its gradient step (`Method.gradients`): the batch loss, its gradient with
  respect to the parameters, and its new state;
* what it adds to an epoch's row of ``metrics.jsonl``: sums over the epoch's
  steps on the device (`Method.zero_sums`, `Method.step_sums`), and its own
  fields, which it declares (`Method.METRICS_FIELDS`; `METRICS_FIELDS` holds
  every method's, null in the rows of the others) and fills
  (`Method.metrics`);
* what the run keeps of its state: the queue to save at an epoch's end
  (`Method.saved_queue`) and the mixture of recent losses at the end
  (`Method.queue_mixture`).

A method computes; the run (`experiments.train`) writes.
"""

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

import ogc_jax
from ogc_jax import baselines
from ogc_jax import losses
from experiments.errors import ConfigError

# apply_fn(params, images) -> (logits, new batch statistics), in train mode.
ApplyFn = Callable[[Any, jax.Array], tuple]


class Step(NamedTuple):
  """What `Method.gradients` gives besides the gradients.

  Attributes:
    loss: the batch loss (the mean over the batch).
    logits: ``[batch, classes]``, in train mode.
    probs: ``[batch]``, p of each given label (None where the method does
      not use it).
    batch_stats: the new BatchNorm statistics.
    state: the method's new state.
  """
  loss: jax.Array
  logits: jax.Array
  probs: Any
  batch_stats: Any
  state: Any


# The range of each hyperparameter of config.loss_hparams, as the losses'
# docstrings give it (`ogc_jax.losses`, `ogc_jax.baselines`): what it must
# be, and the test. Outside it a loss trains as another (PHuber-CE with
# tau <= 1 clips every example's gradient to a constant; focal with gamma < 0
# weights the easy examples up) or yields NaN.
_RANGES = {
    'gamma': ('>= 0', lambda v: v >= 0),
    'q': ('in (0, 1]', lambda v: 0 < v <= 1),
    'tau': ('> 1', lambda v: v > 1),
    'alpha': ('>= 0', lambda v: v >= 0),
    'beta': ('>= 0', lambda v: v >= 0),
    'a': ('> 0', lambda v: v > 0),
    'log_zero': ('< 0 (the log of a probability below 1)', lambda v: v < 0),
    'pi1': ('in (0, 1)', lambda v: 0 < v < 1),
    'norm_bound': ('> 0', lambda v: v > 0),
    'min_prob': ('in (0, 1 / classes)', lambda v: 0 < v < 1),
    'order': ('an integer >= 1', lambda v: v >= 1 and int(v) == v),
}
# Where a method's range of a hyperparameter differs.
_METHOD_RANGES = {
    'phuber_gce': {'q': ('in (0, 1)', lambda v: 0 < v < 1)},
    'nce_agce': {'q': ('> 0', lambda v: v > 0)},
}


def check_hyperparameters(method: str, hparams: dict) -> None:
  """Refuses a hyperparameter of ``method`` outside its range (`_RANGES`).

  Raises:
    ConfigError: one line naming the key, its value and its range.

  Example:
    >>> check_hyperparameters('phuber_ce', {'tau': -5.0})
    Traceback (most recent call last):
    ...
    experiments.errors.ConfigError: config.loss_hparams.tau=-5.0 is out of range for method 'phuber_ce'; expected tau > 1.
  """
  ranges = {**_RANGES, **_METHOD_RANGES.get(method, {})}
  for name, value in sorted(hparams.items()):
    if name not in ranges:
      continue
    text, valid = ranges[name]
    if not (math.isfinite(value) and valid(value)):
      raise ConfigError(
          f'config.loss_hparams.{name}={value!r} is out of range for method '
          f'{method!r}; expected {name} {text}.')


class MethodName(NamedTuple):
  """What a method's name names (`parse_method_name`).

  Attributes:
    name: the name, e.g. ``'ogc_ce'`` or ``'gce'``.
    base: for ``ogc_<base>``, the base loss's name in
      `ogc_jax.losses.BASE_LOSSES`; None for a baseline.
  """
  name: str
  base: Optional[str]

  @property
  def is_ogc(self) -> bool:
    return self.base is not None


def parse_method_name(name) -> MethodName:
  """The one reading of ``config.method``: ``ogc_<base>`` or a baseline.

  Raises:
    ConfigError: a name that is neither a baseline of
      `ogc_jax.baselines.LOSSES` nor ``ogc_`` and a base loss of
      `ogc_jax.losses.BASE_LOSSES`.

  Example:
    >>> parse_method_name('ogc_gce')
    MethodName(name='ogc_gce', base='gce')
    >>> parse_method_name('phuber_ce').is_ogc
    False
  """
  if not isinstance(name, str):
    raise ConfigError(f'config.method={name!r} is not a method name.')
  if name.startswith('ogc_'):
    base = name[len('ogc_'):]
    if base not in losses.BASE_LOSSES:
      raise ConfigError(
          f'Unknown OGC base loss {base!r} in config.method={name!r}; '
          f'expected ogc_ + one of {sorted(losses.BASE_LOSSES)}.')
    return MethodName(name, base)
  if name not in baselines.LOSSES:
    raise ConfigError(
        f'Unknown method config.method={name!r}; expected one of '
        f'{sorted(baselines.LOSSES)} or ogc_<base> with <base> in '
        f'{sorted(losses.BASE_LOSSES)}.')
  return MethodName(name, None)


def loss_function(config) -> Callable:
  """The loss ``config.method`` names, with ``config.loss_hparams`` bound.

  A baseline's is a loss of ``(logits, labels)``, per example; ``ogc_<base>``
  gives the base loss of p, `ogc_jax.losses.BASE_LOSSES[base]`.

  Raises:
    ConfigError: an unknown method or base loss, a hyperparameter the
      loss does not take, or one out of its range (`check_hyperparameters`).
  """
  parsed = parse_method_name(config.method)
  name = parsed.name
  hparams = {k: v for k, v in config.loss_hparams.items() if v is not None}
  fn = (losses.BASE_LOSSES[parsed.base] if parsed.is_ogc
        else baselines.LOSSES[name])
  accepted = set(losses.hyperparameters(fn))
  unknown = set(hparams) - accepted
  if unknown:
    raise ConfigError(
        f'config.loss_hparams sets {sorted(unknown)}, which method {name!r} '
        f'does not take (it takes {sorted(accepted) or "none"}).')
  check_hyperparameters(name, hparams)
  return functools.partial(fn, **hparams)


class Method:
  """A training method; see the module docstring. This base adds nothing.

  Attributes:
    METRICS_FIELDS: the fields the method adds to an epoch's row of
      ``metrics.jsonl``, each with what it holds.
    name: ``config.method``.
    fn: its loss (`loss_function`).
  """
  METRICS_FIELDS: dict[str, str] = {}

  def __init__(self, config):
    self.name = config.method
    self.fn = loss_function(config)

  def init(self) -> Any:
    """The method's initial state."""
    return {}

  def gradients(self, apply_fn: ApplyFn, params, images, labels, state
                ) -> tuple[Any, Step]:
    """The gradient of the batch loss and the `Step` (traced, in the step)."""
    raise NotImplementedError

  def zero_sums(self) -> dict:
    """The method's sums over an epoch's steps, at the epoch's start."""
    return {}

  def step_sums(self, step: Step, noisy) -> dict:
    """A step's terms of `zero_sums`; ``noisy``: the batch's wrong labels."""
    del step, noisy
    return {}

  def metrics(self, state, sums) -> dict:
    """Its `METRICS_FIELDS` of an epoch's row (host values).

    Args:
      state: the method's state at the epoch's end, on the host.
      sums: the epoch's `experiments.train.EpochSums`, its ``method`` field
        the method's own sums.
    """
    del state, sums
    return {}

  def saved_queue(self, state) -> Optional[np.ndarray]:
    """What the run saves of the state at an epoch's end: a queue of
    losses, oldest first, or None (nothing)."""
    del state
    return None

  def queue_mixture(self, state) -> Any:
    """The method's own mixture of recent losses at the end, or None."""
    del state
    return None


class Baseline(Method):
  """A loss of ``(logits, labels)``, averaged over the batch; no state."""

  def gradients(self, apply_fn, params, images, labels, state):
    def loss_fn(params):
      logits, batch_stats = apply_fn(params, images)
      return jnp.mean(self.fn(logits, labels)), (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    return grads, Step(loss, logits, None, batch_stats, state)


def ogc_arguments(config, schedule) -> dict:
  """The keyword arguments of `ogc_jax.ogc_weights` (and `ogc_jax.ogc`).

  Every key of ``config.ogc``, by its name (``epsilon``, ``update_period``,
  ``queue_size``, ``fit``), and the optimizer's schedule as OGC's
  ``learning_rate``: OGC evaluates it at its own step count, which is the
  optimizer's (one OGC update a train step).
  """
  return dict(config.ogc.to_dict(), learning_rate=schedule)


class OGC(Method):
  """OGC's fused route: weights from `ogc_jax.ogc_weights`, a weighted loss.

  Its state is the `ogc_jax.OGCState`. OGC is given the optimizer's
  schedule, evaluated at its own step, ``schedule(state.count)``: one OGC
  update a train step, so OGC's count is the optimizer's. With
  ``config.save_queues`` the run saves its queue at each epoch's end.

  Raises:
    ConfigError: `loss_function`'s, and a value of ``config.ogc`` that OGC
      refuses (its own checks).
  """

  METRICS_FIELDS = {
      'tau': "OGC's clipping threshold on |dl/dp| at the epoch's end",
      'p_threshold': 'the probability at which |dl/dp| = tau',
      'gmm': 'the fitted mixture of H = -log p (null before the first fit)',
      'estimated_noise_rate': "the mixture's noisy weight (null before the "
                              'first fit)',
      'noise_to_clean_ratio': 'the ratio R reached at the last fit',
      'num_threshold_updates': 'refits of the threshold so far',
      'num_invalid': 'non-finite or out-of-range probabilities so far',
      'clipped_fraction': 'the fraction of examples clipped over the epoch',
      'grad_clean_before': 'mean |dl/dp| of examples with a correct label',
      'grad_clean_after': 'the same after clipping at tau',
      'grad_noisy_before': 'mean |dl/dp| of examples with a wrong label',
      'grad_noisy_after': 'the same after clipping at tau',
  }

  def __init__(self, config, schedule):
    super().__init__(config)
    self.save_queues = config.save_queues
    try:  # OGC checks its own arguments
      self.weighting = ogc_jax.ogc_weights(
          self.fn, **ogc_arguments(config, schedule))
    except ValueError as e:
      raise ConfigError(f'config.ogc: {e}') from None

  def init(self):
    return self.weighting.init()

  def update(self, probs, state):
    """OGC's weights of a batch and its new state, at the optimizer's rate."""
    return self.weighting.update(probs, state)

  def gradients(self, apply_fn, params, images, labels, state):
    def loss_fn(params):
      logits, batch_stats = apply_fn(params, images)
      p = losses.probability_of_label(logits, labels)
      weights, new_state = self.update(p, state)
      loss = ogc_jax.weighted_base_loss(self.fn, p, weights)
      return loss, (logits, p, batch_stats, new_state)

    (loss, (logits, p, batch_stats, new_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    return grads, Step(loss, logits, p, batch_stats, new_state)

  def zero_sums(self):
    """Sums of |dl/dp| before and after clipping at tau, and the clipped."""
    names = ('grad_clean_before', 'grad_clean_after', 'grad_noisy_before',
             'grad_noisy_after', 'clipped')
    return {name: np.zeros([], np.float32) for name in names}

  def step_sums(self, step, noisy):
    g = ogc_jax.derivative_magnitude(
        self.fn, ogc_jax.feasible_probability(step.probs))
    g_after = jnp.minimum(g, step.state.tau)
    return dict(
        grad_clean_before=jnp.sum(jnp.where(noisy, 0, g)),
        grad_clean_after=jnp.sum(jnp.where(noisy, 0, g_after)),
        grad_noisy_before=jnp.sum(jnp.where(noisy, g, 0)),
        grad_noisy_after=jnp.sum(jnp.where(noisy, g_after, 0)),
        # OGC's own count of the step (a fraction of the valid examples).
        clipped=step.state.clipped_fraction * step.probs.shape[0])

  def metrics(self, state, sums):
    s, o = sums.method, state
    fitted = int(o.num_threshold_updates) > 0
    n_clean, n_noisy = max(sums.n_clean, 1), max(sums.n_noisy, 1)
    return {
        'tau': float(o.tau), 'p_threshold': float(o.p_threshold),
        'gmm': ({k: float(v) for k, v in o.gmm._asdict().items()}
                if fitted else None),
        'estimated_noise_rate': float(o.gmm.weight_noisy) if fitted else None,
        'noise_to_clean_ratio': float(o.noise_to_clean_ratio),
        'num_threshold_updates': int(o.num_threshold_updates),
        'num_invalid': int(o.num_invalid),
        'clipped_fraction': s['clipped'] / sums.count,
        'grad_clean_before': s['grad_clean_before'] / n_clean,
        'grad_clean_after': s['grad_clean_after'] / n_clean,
        'grad_noisy_before': s['grad_noisy_before'] / n_noisy,
        'grad_noisy_after': s['grad_noisy_after'] / n_noisy,
    }

  def queue_mixture(self, state):
    """The last refit's mixture of the queue (None before the first)."""
    return state.gmm if int(state.num_threshold_updates) > 0 else None

  def saved_queue(self, state):
    """The queue of H in the order it was filled, oldest first (with
    ``config.save_queues``, once it holds a loss)."""
    count = int(state.queue_count)
    if not self.save_queues or not count:
      return None
    queue = np.asarray(state.queue)
    return np.roll(queue, -int(state.queue_index)) if count == len(
        queue) else queue[:count]


def create_method(config, schedule) -> Method:
  """The method ``config.method`` names: `OGC` for ``ogc_<base>``, else a `Baseline`.

  Args:
    config: a run's config (``method``, ``loss_hparams``, ``ogc``,
      ``save_queues``).
    schedule: the optimizer's learning rate by step; OGC's target ratio
      follows it.

  Raises:
    ConfigError: the config names no method, or values the method refuses.
  """
  if parse_method_name(config.method).is_ogc:
    return OGC(config, schedule)
  return Baseline(config)


# Every method's own fields of metrics.jsonl (`Method.METRICS_FIELDS`).
METRICS_FIELDS = {**Baseline.METRICS_FIELDS, **OGC.METRICS_FIELDS}
