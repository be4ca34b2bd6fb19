"""The previous refit (two-means loop, plain EM, 32 bisection trips), kept for `fit_speed`'s comparison.

`ogc_jax.fit_gmm` and `ogc_jax.solve_threshold` at commit 3ecb13e, condensed,
each returning its count of sequential trips as well: a two-means (Lloyd)
``while_loop`` for the first of four starts, plain EM in a ``while_loop``
until the mean log-likelihood changes by less than 1e-7 (at most 300 trips),
and 32 bisection trips in log p. Same numbers as the code of that commit
(`fit_speed` checks its taus against the float64 reference too).
"""

import jax
import jax.numpy as jnp

from ogc_jax.gmm import GMM, MAX_ITER, REG_COVAR, TOL
from ogc_jax.threshold import (MAX_H, MAX_PROB, MIN_H, MIN_PROB,
                               derivative_magnitude, noise_to_clean_ratio)

_RANGE_SPLITS = (0.05, 0.15, 0.3)
NUM_BISECTION_STEPS = 32


def _two_means_threshold(h, max_iter=50):
  def midpoint(threshold):
    upper = h > threshold
    n_upper = jnp.sum(upper)
    n_lower = h.shape[0] - n_upper
    mean_upper = jnp.sum(jnp.where(upper, h, 0)) / jnp.maximum(n_upper, 1)
    mean_lower = jnp.sum(jnp.where(upper, 0, h)) / jnp.maximum(n_lower, 1)
    return jnp.where((n_upper > 0) & (n_lower > 0),
                     0.5 * (mean_lower + mean_upper), threshold)

  def step(carry):
    threshold, _, it = carry
    return midpoint(threshold), threshold, it + 1

  start = jnp.mean(h)
  threshold, _, trips = jax.lax.while_loop(
      lambda c: (c[2] < max_iter) & (c[0] != c[1]), step,
      (midpoint(start), start, jnp.asarray(0, jnp.int32)))
  return threshold, trips


def _m_step(h, resp_noisy, reg_covar):
  tiny = 10 * jnp.finfo(h.dtype).eps
  resp = jnp.stack([1.0 - resp_noisy, resp_noisy])
  counts = jnp.sum(resp, axis=1) + tiny
  means = resp @ h / counts
  variances = jnp.sum(resp * (h[None] - means[:, None])**2, axis=1) / counts
  return means, variances + reg_covar, counts / jnp.sum(counts)


def _em_step(h, params, reg_covar):
  means, variances, weights = params
  centred = h[None] - means[:, None]
  log_joint = ((jnp.log(weights) - 0.5 * jnp.log(2 * jnp.pi * variances))[:, None]
               - 0.5 * centred**2 / variances[:, None])
  d = log_joint[1] - log_joint[0]
  e = jnp.exp(-jnp.abs(d))
  r = jnp.where(d >= 0, 1.0, e) / (1.0 + e)
  loglik = jnp.mean(log_joint[0] + jnp.maximum(d, 0) + jnp.log1p(e))
  resp = jnp.stack([1.0 - r, r])
  tiny = 10 * jnp.finfo(h.dtype).eps
  counts = jnp.sum(resp, axis=1) + tiny
  shift = jnp.sum(resp * centred, axis=1) / counts
  new_vars = jnp.sum(resp * centred**2, axis=1) / counts - shift**2 + reg_covar
  return (means + shift, new_vars, counts / jnp.sum(counts)), loglik


def fit_gmm(h, reg_covar=REG_COVAR, max_iter=MAX_ITER, tol=TOL):
  """The old `fit_gmm`; returns ``(gmm, two_means_trips, em_trips)``."""
  reg_covar = jnp.asarray(reg_covar, h.dtype)
  lo, hi = jnp.min(h), jnp.max(h)
  two_means, two_means_trips = _two_means_threshold(h)
  thresholds = jnp.stack([two_means] + [lo + f * (hi - lo) for f in _RANGE_SPLITS])
  upper = h[None] > thresholds[:, None]
  split_exists = jnp.any(upper, axis=1) & ~jnp.all(upper, axis=1)
  splits = jnp.where(split_exists[:, None], upper.astype(h.dtype), 0.5)
  params = jax.vmap(lambda r: _m_step(h, r, reg_covar))(splits)
  step = lambda p: _em_step(h, p, reg_covar)
  best = jnp.argmax(jax.vmap(step)(params)[1])
  params = tuple(p[best] for p in params)

  def em_step(carry):
    params, _, loglik, it = carry
    params, new_loglik = step(params)
    return params, loglik, new_loglik, it + 1

  inf = jnp.asarray(jnp.inf, h.dtype)
  (means, variances, weights), _, _, em_trips = jax.lax.while_loop(
      lambda c: (c[3] < max_iter) & ~(jnp.abs(c[2] - c[1]) < tol), em_step,
      (params, -inf, inf, jnp.asarray(0, jnp.int32)))
  swap = means[0] > means[1]
  pick = lambda a, i: jnp.where(swap, a[1 - i], a[i])
  gmm = GMM(mean_clean=pick(means, 0), var_clean=pick(variances, 0),
            mean_noisy=pick(means, 1), var_noisy=pick(variances, 1),
            weight_noisy=pick(weights, 1))
  return gmm, two_means_trips, em_trips


def solve_threshold(gmm, base_loss, learning_rate, epsilon=20.0):
  """The old `solve_threshold`: 32 bisection trips in log p."""
  dtype = jnp.result_type(gmm.mean_clean, float)
  target = 1.0 + jnp.asarray(learning_rate, dtype) * epsilon
  ratio_at_h = lambda h: noise_to_clean_ratio(gmm, base_loss, jnp.exp(-h))

  def bisect(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    above = ratio_at_h(mid) > target
    return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

  lo, hi = jax.lax.fori_loop(
      0, NUM_BISECTION_STEPS, bisect,
      (jnp.asarray(MIN_H, dtype), jnp.asarray(MAX_H, dtype)))
  p_threshold = jnp.exp(-0.5 * (lo + hi))
  no_clipping = ratio_at_h(jnp.asarray(MAX_H, dtype)) <= target
  full_clipping = ratio_at_h(jnp.asarray(MIN_H, dtype)) > target
  p_threshold = jnp.where(no_clipping, MIN_PROB,
                          jnp.where(full_clipping, MAX_PROB, p_threshold))
  p_threshold = p_threshold.astype(dtype)
  return p_threshold, derivative_magnitude(base_loss, p_threshold)
