"""The methods a run trains with: a baseline loss, or OGC with a base loss.

`Method` reads ``config.method`` and ``config.loss_hparams``; `make_weighting`
gives the per-example weights of the loss: OGC's (`ogc_jax.ogc_weights`), or
ones for a baseline, so that a train step treats both alike.
"""

import functools

import jax.numpy as jnp

import ogc_jax
from ogc_jax import baselines
from ogc_jax import losses
from experiments.errors import ConfigError


class Method:
  """The loss of a config: a baseline loss or OGC with a base loss of p."""

  def __init__(self, config):
    name = config.method
    hparams = {k: v for k, v in config.loss_hparams.items() if v is not None}
    self.name = name
    self.is_ogc = name.startswith('ogc_')
    if self.is_ogc:
      base = name[len('ogc_'):]
      if base not in losses.BASE_LOSSES:
        raise ConfigError(
            f'Unknown OGC base loss {base!r} in config.method={name!r}; '
            f'expected ogc_ + one of {sorted(losses.BASE_LOSSES)}.')
      fn = losses.BASE_LOSSES[base]
    elif name in baselines.LOSSES:
      fn = baselines.LOSSES[name]
    else:
      raise ConfigError(
          f'Unknown method config.method={name!r}; expected one of '
          f'{sorted(baselines.LOSSES)} or ogc_<base> with <base> in '
          f'{sorted(losses.BASE_LOSSES)}.')
    accepted = set(losses.hyperparameters(fn))
    unknown = set(hparams) - accepted
    if unknown:
      raise ConfigError(
          f'config.loss_hparams sets {sorted(unknown)}, which method {name!r} '
          f'does not take (it takes {sorted(accepted) or "none"}).')
    self.hparams = hparams
    self.fn = functools.partial(fn, **hparams)

  def loss(self, logits, labels, probs, weights):
    """The batch loss: OGC's weighted base loss of p, or the baseline's mean."""
    if self.is_ogc:
      return ogc_jax.weighted_base_loss(self.fn, probs, weights)
    return jnp.mean(self.fn(logits, labels) * weights)


def make_weighting(config, method, schedule) -> ogc_jax.OGCWeights:
  """OGC's fused route of an OGC method; for a baseline, weights of one.

  Its ``update(probs, state)`` gives OGC the optimizer's learning rate,
  ``schedule(state.count)``: the harness makes one OGC update per SGD step,
  so OGC's count is SGD's.
  """
  if not method.is_ogc:
    return ogc_jax.OGCWeights(
        init=dict, update=lambda probs, state: (jnp.ones_like(probs), state))
  weighting = ogc_jax.ogc_weights(
      method.fn, epsilon=config.ogc.epsilon,
      update_period=config.ogc.update_period,
      queue_size=config.ogc.queue_size, fit=config.ogc.fit)
  return weighting._replace(
      update=lambda probs, state: weighting.update(probs, state,
                                                   schedule(state.count)))
