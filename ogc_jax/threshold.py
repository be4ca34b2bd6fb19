"""The optimised clipping threshold: where the noise-to-clean ratio meets its target.

With the clean and noisy components of a `GMM` over H = -log p, each truncated
to the feasible range H in [-log(1 - 1e-7), -log(1e-7)], the noise-to-clean
ratio of expected clipped gradients is

    R(tau) = E_noisy[min(|l'(p)|, tau)] / E_clean[min(|l'(p)|, tau)],

(mixture weights not included). OGC picks the threshold where
R(tau) = 1 + learning_rate * epsilon. Because |l'(p)| decreases in p, a
threshold tau is the same as a probability threshold p_t with
tau = |l'(p_t)|: samples with p < p_t are clipped.

The expectations are computed by composite Gauss-Legendre quadrature on each
truncated component, split at the clipping point (where the integrand has a
kink) and in the variable u = sqrt(H - H_min), which smooths losses whose
derivative behaves like sqrt(H) near p = 1 (focal loss). The threshold is
bracketed in the same u by a few rounds of R at many points at once, then
interpolated. Both are fixed-size, so the solver compiles to three
sequential steps and no loop.
"""

import math
import numbers
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from ogc_jax.gmm import GMM

# Feasible range of the predicted probability, as in the method (and the
# authors' code): probabilities are clamped to [MIN_PROB, MAX_PROB].
MIN_PROB = 1e-7
MAX_PROB = 1.0 - 1e-7
MIN_H = -math.log1p(-1e-7)  # H of MAX_PROB
MAX_H = -math.log(1e-7)  # H of MIN_PROB

# Quadrature and search budgets (static).
_NUM_PANELS = 4  # panels per side of the clipping point
_NUM_NODES = 16  # Gauss-Legendre nodes per panel
_SUPPORT = 12.0  # integrate each component over mean +- 12 standard deviations
# The threshold search: rounds of R evaluated at evenly spaced points of the
# bracket in u = sqrt(H - MIN_H), all points of a round at once (one
# sequential step); each round shrinks the bracket NUM_SEARCH_POINTS - 1
# fold, to sqrt(MAX_H - MIN_H) / 15**3 = 1.2e-3 in u after three.
NUM_SEARCH_ROUNDS = 3
NUM_SEARCH_POINTS = 16


def check_epsilon(epsilon) -> None:
  """A finite scalar >= 0: a float or an array (``inject_hyperparams``).

  A traced one is checked for its shape only (see `check_learning_rate`).
  """
  if isinstance(epsilon, jax.core.Tracer):
    if epsilon.ndim == 0 and jnp.issubdtype(epsilon.dtype, jnp.number):
      return  # traced: its value is checked where it was made
  else:
    value = np.asarray(epsilon) if isinstance(
        epsilon, (numbers.Real, np.ndarray, np.generic, jax.Array)) else None
    if (value is not None and value.ndim == 0
        and np.issubdtype(value.dtype, np.number)
        and not np.issubdtype(value.dtype, np.bool_)
        and np.isfinite(value) and value >= 0):
      return
  raise ValueError(
      f"`epsilon` must be a finite scalar >= 0 (a float or an array), got"
      f" {epsilon!r}.")


def check_learning_rate(learning_rate, what="`learning_rate`") -> jax.Array:
  """A learning rate as a float32 scalar; a concrete one finite and >= 0.

  A traced rate cannot be checked here: `solve_threshold` gives a NaN
  threshold for a NaN, infinite or negative one, and OGC rejects that refit
  (see `ogc_jax.ogc_weights`).
  """
  if not isinstance(learning_rate, jax.core.Tracer):
    value = np.asarray(learning_rate)
    if (value.ndim != 0 or not np.issubdtype(value.dtype, np.number)
        or not (np.isfinite(value) and value >= 0)):
      raise ValueError(
          f"OGC's {what} must be a finite scalar >= 0 (the target ratio is"
          f" 1 + learning_rate * epsilon), got {learning_rate!r}.")
  lr = jnp.asarray(learning_rate)
  if lr.ndim != 0:
    raise ValueError(
        f"OGC's {what} must be a scalar, got shape {lr.shape}.")
  return lr.astype(jnp.float32)


def feasible_probability(p: chex.Array) -> chex.Array:
  """``p`` clamped to the feasible range [MIN_PROB, MAX_PROB], as the method does.

  Example:
    >>> import jax.numpy as jnp
    >>> feasible_probability(jnp.array([0.0, 0.5, 1.0])).tolist() == [
    ...     jnp.float32(MIN_PROB), 0.5, jnp.float32(MAX_PROB)]
    True
  """
  return jnp.clip(p, MIN_PROB, MAX_PROB)


def derivative_magnitude(base_loss: Callable[[chex.Array], chex.Array],
                         p: chex.Array) -> chex.Array:
  """|dl/dp| of an elementwise base loss, by automatic differentiation.

  Args:
    base_loss: differentiable function of a scalar probability ``p``.
    p: array of probabilities, any shape.

  Returns:
    ``|base_loss'(p)|``, same shape as ``p``.
  """
  p = jnp.asarray(p)
  flat = p.reshape(-1)
  return jnp.abs(jax.vmap(jax.grad(base_loss))(flat)).reshape(p.shape)


def _panel_rule(dtype):
  """Gauss-Legendre nodes/weights on [0, 1] for one side, composite in panels."""
  x, w = np.polynomial.legendre.leggauss(_NUM_NODES)
  x, w = (x + 1) / 2, w / 2
  offsets = np.arange(_NUM_PANELS)[:, None]
  nodes = ((offsets + x[None]) / _NUM_PANELS).reshape(-1)
  weights = np.tile(w / _NUM_PANELS, _NUM_PANELS)
  return jnp.asarray(nodes, dtype), jnp.asarray(weights, dtype)


def _expected_clipped_gradient(mean, var, base_loss, h_threshold, tau):
  """E[min(|l'(p)|, tau)] for H ~ N(mean, var) truncated to [MIN_H, MAX_H]."""
  dtype = jnp.result_type(mean, var, h_threshold)
  std = jnp.sqrt(var)
  # The mode of the truncated density: the mean, or the nearest end of the
  # range when the mean lies outside it; the nodes are laid out around it.
  centre = jnp.clip(mean, MIN_H, MAX_H)
  a = jnp.maximum(centre - _SUPPORT * std, MIN_H)
  b = jnp.minimum(centre + _SUPPORT * std, MAX_H)
  c = jnp.clip(h_threshold, a, b)  # the kink of min(|l'|, tau)
  to_u = lambda h: jnp.sqrt(jnp.maximum(h - MIN_H, 0.0))
  nodes, weights = _panel_rule(dtype)
  # Two sides, [a, c] and [c, b], each mapped to u = sqrt(H - MIN_H).
  u_lo = jnp.stack([to_u(a), to_u(c)])[:, None]
  u_hi = jnp.stack([to_u(c), to_u(b)])[:, None]
  u = u_lo + (u_hi - u_lo) * nodes[None]
  h = MIN_H + u * u
  # Quadrature weight * dH/du * the density N(h; mean, var) relative to its
  # value at the mode: (h - mean)^2 - (centre - mean)^2, factored so that no
  # large squares cancel.
  offset = h - centre
  log_density = -0.5 * offset * (offset + 2 * (centre - mean)) / var
  w = weights[None] * (u_hi - u_lo) * 2 * u * jnp.exp(log_density)
  g = jnp.minimum(derivative_magnitude(base_loss, jnp.exp(-h)), tau)
  # Self-normalised: dividing by the quadrature of the density itself.
  return jnp.sum(w * g) / jnp.sum(w)


def noise_to_clean_ratio(gmm: GMM,
                         base_loss: Callable[[chex.Array], chex.Array],
                         p_threshold: chex.Array) -> chex.Array:
  """R(tau): ratio of expected clipped gradients, noisy over clean.

  Args:
    gmm: the fitted mixture over H = -log p.
    base_loss: elementwise base loss of p.
    p_threshold: probability threshold; the gradient threshold is
      ``tau = |base_loss'(p_threshold)|``.

  Returns:
    ``E_noisy[min(|l'(p)|, tau)] / E_clean[min(|l'(p)|, tau)]`` over the two
    components truncated to the feasible range (mixture weights not included).
  """
  p_threshold = jnp.asarray(p_threshold, jnp.result_type(gmm.mean_clean, float))
  h_threshold = -jnp.log(p_threshold)
  tau = derivative_magnitude(base_loss, p_threshold)
  noisy = _expected_clipped_gradient(gmm.mean_noisy, gmm.var_noisy, base_loss,
                                     h_threshold, tau)
  clean = _expected_clipped_gradient(gmm.mean_clean, gmm.var_clean, base_loss,
                                     h_threshold, tau)
  return noisy / clean


def solve_threshold(
    gmm: GMM,
    base_loss: Callable[[chex.Array], chex.Array],
    learning_rate: chex.Numeric,
    epsilon: chex.Numeric = 20.0) -> tuple[chex.Array, chex.Array]:
  """Finds the clipping threshold where R(tau) = 1 + learning_rate * epsilon.

  R falls towards 1 as the threshold tightens, so the crossing is bracketed
  by a search over the feasible range in u = sqrt(-log p - MIN_H), the
  variable of the quadrature: `NUM_SEARCH_ROUNDS` rounds, each evaluating R
  at `NUM_SEARCH_POINTS` points of the current bracket at once and keeping
  the sub-interval where R crosses the target, then one step of linear
  interpolation (regula falsi) inside the last bracket. The first round's
  grid includes both ends, where the boundary rules of the method apply: if
  R without clipping (p_threshold = 1e-7) already meets the target, nothing
  is clipped; if even full clipping (p_threshold = 1 - 1e-7) leaves R above
  it, everything is clipped.

  Args:
    gmm: the fitted mixture over H = -log p (`ogc_jax.fit_gmm`).
    base_loss: elementwise base loss of p, e.g. `ogc_jax.losses.cross_entropy`.
    learning_rate: the current learning rate, a scalar >= 0 (may be traced).
    epsilon: the method's epsilon (20 in the paper), a scalar >= 0 (may be
      traced).

  Returns:
    ``(p_threshold, tau)``: the probability threshold and the gradient
    threshold ``tau = |base_loss'(p_threshold)|``; both NaN where a traced
    ``learning_rate`` or ``epsilon`` is NaN, infinite or negative (the
    target 1 + learning_rate * epsilon then means nothing).

  Raises:
    ValueError: for a ``learning_rate`` or ``epsilon`` that is not a scalar,
      or (concrete) not finite and >= 0.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import GMM, losses, solve_threshold
    >>> gmm = GMM(mean_clean=jnp.float32(0.1), var_clean=jnp.float32(0.01),
    ...           mean_noisy=jnp.float32(3.0), var_noisy=jnp.float32(1.0),
    ...           weight_noisy=jnp.float32(0.4))
    >>> p_threshold, tau = solve_threshold(gmm, losses.cross_entropy, 0.1)
    >>> print(f"{float(tau):.3f}")  # SciPy float64 reference: 3.4595
    3.460

  References:
    Ye et al., `Optimized Gradient Clipping for Noisy Label Learning
    <https://arxiv.org/abs/2412.08941>`_, AAAI 2025.
  """
  check_learning_rate(learning_rate)
  check_epsilon(epsilon)
  dtype = jnp.result_type(gmm.mean_clean, float)
  learning_rate = jnp.asarray(learning_rate, dtype)
  epsilon = jnp.asarray(epsilon, dtype)
  meaningful = (jnp.isfinite(learning_rate) & (learning_rate >= 0)
                & jnp.isfinite(epsilon) & (epsilon >= 0))
  target = 1.0 + learning_rate * epsilon
  p_at_u = lambda u: jnp.exp(-(MIN_H + u * u))
  # R - target at a vector of points, all in one evaluation.
  excess_at = jax.vmap(
      lambda u: noise_to_clean_ratio(gmm, base_loss, p_at_u(u)) - target)

  # Round 0: the whole range, both ends included.
  u_max = math.sqrt(MAX_H - MIN_H)
  u = jnp.linspace(0.0, u_max, NUM_SEARCH_POINTS, dtype=dtype)
  excess = excess_at(u)
  no_clipping = excess[-1] <= 0
  full_clipping = excess[0] > 0
  for round_ in range(NUM_SEARCH_ROUNDS):
    if round_ > 0:  # the NUM_SEARCH_POINTS - 2 interior points of the bracket
      u = jnp.linspace(lo, hi, NUM_SEARCH_POINTS, dtype=dtype)
      excess = jnp.concatenate([excess_lo[None], excess_at(u[1:-1]),
                                excess_hi[None]])
    # The first point above the target (R increases with u); at least 1.
    i = jnp.clip(jnp.argmax(excess > 0), 1, NUM_SEARCH_POINTS - 1)
    lo, hi, excess_lo, excess_hi = u[i - 1], u[i], excess[i - 1], excess[i]
  # Regula falsi in the last bracket, where R is nearly linear in u.
  fraction = jnp.clip(excess_lo / (excess_lo - excess_hi), 0.0, 1.0)
  p_threshold = p_at_u(lo + jnp.where(jnp.isfinite(fraction), fraction, 0.5)
                       * (hi - lo))
  p_threshold = jnp.where(no_clipping, MIN_PROB,
                          jnp.where(full_clipping, MAX_PROB, p_threshold))
  p_threshold = jnp.where(meaningful, p_threshold, jnp.nan).astype(dtype)
  return p_threshold, derivative_magnitude(base_loss, p_threshold)
