"""Two-component Gaussian mixture on H = -log p, fitted by EM in pure jnp.

OGC models the queue of recent losses H as a mixture of a *clean* component
(low H: the model agrees with the label) and a *noisy* one (high H). The fit
runs inside the compiled training step, so it is written with static shapes
and ``lax`` control flow: no host round-trip, no scikit-learn.

Initialisation is deterministic, with no random restarts: of four fixed
hard splits of the data, the 1-D two-means (k-means) split, as
scikit-learn's default initialisation, and splits at 5%, 15% and 30% of the
range of H, which find a tight clean mode near 0 under heavy noise, the one
of highest likelihood is where EM starts.

EM is accelerated by SQUAREM (Varadhan & Roland, 2008): after two EM steps
it extrapolates along the squared-iteration direction and takes one EM step
from there, and keeps that point only if its EM residual is smaller than
plain EM's; otherwise plain EM goes on. The fixed point is EM's; it is
reached in about half the steps. (The variance floor ``reg_covar``, added
as scikit-learn does, makes EM a fixed-point iteration rather than a strict
ascent of the likelihood, so the residual, not the likelihood, judges an
extrapolation.) Iteration stops once the mean log-likelihood changes by less
than ``tol`` between two successive EM steps (or by less than two units in
its last place, which in float32 is rounding noise), or after ``max_iter``
EM steps.

References:
  Varadhan & Roland, `Simple and globally convergent methods for
  accelerating the convergence of any EM algorithm
  <https://doi.org/10.1111/j.1467-9469.2007.00585.x>`_, Scandinavian
  Journal of Statistics, 2008.
"""

import chex
import jax
import jax.numpy as jnp

# Defaults of `fit_gmm`.
MAX_ITER = 300
TOL = 1e-7
REG_COVAR = 1e-3


@chex.dataclass(frozen=True)
class GMM:
  """A two-component 1-D Gaussian mixture over H = -log p.

  Attributes:
    mean_clean: mean of the clean (lower-mean) component.
    var_clean: variance of the clean component.
    mean_noisy: mean of the noisy (higher-mean) component.
    var_noisy: variance of the noisy component.
    weight_noisy: mixture weight of the noisy component, an estimate of the
      noise rate among the queued samples.
  """
  mean_clean: chex.Array
  var_clean: chex.Array
  mean_noisy: chex.Array
  var_noisy: chex.Array
  weight_noisy: chex.Array


# Deterministic starting splits besides two-means, as fractions of the range
# of H: a clean mode near 0 under heavy noise is found from the low ones.
_RANGE_SPLITS = (0.05, 0.15, 0.3)


def _two_means_threshold(h: chex.Array, max_iter: int = 50) -> chex.Array:
  """The 1-D two-means (Lloyd) threshold, started from the mean of ``h``.

  In 1-D the k-means assignment is a threshold, and each iteration moves it
  to the midpoint of the two cluster means until it stops moving. Sorting is
  avoided on purpose: XLA's CPU sort of 4096 values costs more than EM.
  """
  total = jnp.sum(h)

  def midpoint(threshold):
    upper = h > threshold
    n_upper = jnp.sum(upper.astype(h.dtype))
    n_lower = h.shape[0] - n_upper
    sum_upper = jnp.sum(jnp.where(upper, h, 0))
    # Two sums a step, the lower side by difference: XLA's CPU reductions
    # cost more than the arithmetic here.
    mean_upper = sum_upper / jnp.maximum(n_upper, 1)
    mean_lower = (total - sum_upper) / jnp.maximum(n_lower, 1)
    # An empty side (all values equal) keeps the threshold where it is.
    return jnp.where((n_upper > 0) & (n_lower > 0),
                     0.5 * (mean_lower + mean_upper), threshold)

  def step(carry):
    threshold, _, it = carry
    return midpoint(threshold), threshold, it + 1

  def moving(carry):
    threshold, previous, it = carry
    return (it < max_iter) & (threshold != previous)

  start = total / h.shape[0]
  threshold, *_ = jax.lax.while_loop(
      moving, step, (midpoint(start), start, jnp.asarray(0, jnp.int32)))
  return threshold


def _initial_splits(h: chex.Array) -> chex.Array:
  """Noisy-component responsibilities of the deterministic starts, [K, n]."""
  lo, hi = jnp.min(h), jnp.max(h)
  thresholds = jnp.stack([_two_means_threshold(h)]
                         + [lo + f * (hi - lo) for f in _RANGE_SPLITS])
  upper = h[None] > thresholds[:, None]
  # All values equal: no split exists, so both components start identical.
  split_exists = jnp.any(upper, axis=1) & ~jnp.all(upper, axis=1)
  return jnp.where(split_exists[:, None], upper.astype(h.dtype), 0.5)


def _initial_params(h: chex.Array, reg_covar) -> chex.Array:
  """Closed-form M-steps of the deterministic hard splits, ``[K, 5]``.

  Each row is ``(mean_0, mean_1, var_0, var_1, weight_1)`` of one start,
  component 1 being the points above the split.
  """
  resp_noisy = _initial_splits(h)
  resp = jnp.stack([1.0 - resp_noisy, resp_noisy], axis=1)  # [K, 2, n]
  tiny = 10 * jnp.finfo(h.dtype).eps  # as scikit-learn, keeps empty comps finite
  counts = jnp.sum(resp, axis=2) + tiny  # [K, 2]
  means = resp @ h / counts
  variances = jnp.sum(resp * (h - means[..., None])**2, axis=2) / counts
  variances = variances + reg_covar
  weights = counts / jnp.sum(counts, axis=1, keepdims=True)
  return jnp.concatenate([means, variances, weights[:, 1:]], axis=1)


def _em_step(h: chex.Array, theta: chex.Array, reg_covar):
  """One EM iteration in closed form.

  With two components the E-step is a logistic function of the difference
  of the two log joint densities, d = log w1 N1 - log w0 N0: responsibility
  r = sigmoid(d) and log-likelihood log w0 N0 + softplus(d). The M-step needs
  only the weighted sums of 1, c and c^2 per component, c = h - old mean
  (moments about the old means keep the variances well conditioned).

  Args:
    h: ``[n]`` data.
    theta: ``[5]``, ``(mean_0, mean_1, var_0, var_1, weight_1)``.
    reg_covar: the variance floor.

  Returns:
    The parameters after the step and the mean log-likelihood of ``theta``.
  """
  mean_0, mean_1, var_0, var_1, weight_1 = theta
  c0, c1 = h - mean_0, h - mean_1
  log_joint_0 = (jnp.log1p(-weight_1) - 0.5 * jnp.log(2 * jnp.pi * var_0)
                 - 0.5 * c0 * c0 / var_0)
  log_joint_1 = (jnp.log(weight_1) - 0.5 * jnp.log(2 * jnp.pi * var_1)
                 - 0.5 * c1 * c1 / var_1)
  d = log_joint_1 - log_joint_0
  e = jnp.exp(-jnp.abs(d))  # shared by the sigmoid and the softplus
  r = jnp.where(d >= 0, 1.0, e) / (1.0 + e)  # sigmoid(d)
  q = 1.0 - r
  loglik = log_joint_0 + jnp.maximum(d, 0) + jnp.log1p(e)
  sums = jnp.sum(jnp.stack([q, q * c0, q * c0 * c0, r, r * c1, r * c1 * c1,
                            loglik]), axis=1)
  tiny = 10 * jnp.finfo(h.dtype).eps  # as scikit-learn, keeps empty comps finite
  count_0, count_1 = sums[0] + tiny, sums[3] + tiny
  shift_0, shift_1 = sums[1] / count_0, sums[4] / count_1
  theta = jnp.stack([
      mean_0 + shift_0, mean_1 + shift_1,
      sums[2] / count_0 - shift_0**2 + reg_covar,
      sums[5] / count_1 - shift_1**2 + reg_covar,
      count_1 / (count_0 + count_1)])
  return theta, sums[6] / h.shape[0]


# SQUAREM extrapolates in coordinates where every point is a valid mixture:
# means, log-variances and the logit of the weight.
def _unconstrained(theta):
  return jnp.concatenate([theta[:2], jnp.log(theta[2:4]),
                          jnp.log(theta[4:]) - jnp.log1p(-theta[4:])])


def _constrained(x):
  return jnp.concatenate([x[:2], jnp.exp(x[2:4]), jax.nn.sigmoid(x[4:])])


def _as_gmm(theta) -> GMM:
  mean_0, mean_1, var_0, var_1, weight_1 = theta
  swap = mean_0 > mean_1  # the clean component is the lower-mean one
  pick = lambda kept, swapped: jnp.where(swap, swapped, kept)
  return GMM(mean_clean=pick(mean_0, mean_1), var_clean=pick(var_0, var_1),
             mean_noisy=pick(mean_1, mean_0), var_noisy=pick(var_1, var_0),
             weight_noisy=pick(weight_1, 1.0 - weight_1))


def _mean_logliks(h: chex.Array, thetas: chex.Array) -> chex.Array:
  """Mean log-likelihood of ``h`` under each row of ``thetas`` ``[K, 5]``.

  Written for ``[K, n]`` arrays: ``jax.vmap`` of `_em_step` compiles to
  markedly slower code on XLA's CPU backend.
  """
  mean_0, mean_1, var_0, var_1, weight_1 = (thetas[:, i:i + 1] for i in range(5))
  log_joint_0 = (jnp.log1p(-weight_1) - 0.5 * jnp.log(2 * jnp.pi * var_0)
                 - 0.5 * (h - mean_0)**2 / var_0)
  log_joint_1 = (jnp.log(weight_1) - 0.5 * jnp.log(2 * jnp.pi * var_1)
                 - 0.5 * (h - mean_1)**2 / var_1)
  d = log_joint_1 - log_joint_0
  return jnp.mean(log_joint_0 + jnp.maximum(d, 0) + jnp.log1p(jnp.exp(-jnp.abs(d))),
                  axis=1)


def fit_gmm(h: chex.Array,
            *,
            reg_covar: float = REG_COVAR,
            max_iter: int = MAX_ITER,
            tol: float = TOL) -> GMM:
  """Fits a two-component Gaussian mixture to H = -log p by EM.

  The E- and M-steps are closed form. EM starts from the most likely of four
  fixed splits of the data, so the same queue always gives the same fit;
  SQUAREM extrapolation (see the module docstring) takes it to EM's fixed
  point in about half the steps. Iteration stops once the mean
  log-likelihood per sample changes by less than ``tol`` (or by less than
  its float rounding) between two successive EM steps, or after
  ``max_iter`` EM steps (default 300; checked every three steps).

  Args:
    h: 1-D array of losses H = -log p, e.g. the OGC queue.
    reg_covar: variance floor added to both variances (as in
      ``sklearn.mixture.GaussianMixture``), > 0; it also keeps a degenerate
      queue, for example one of all-equal values, finite.
    max_iter: budget of EM steps, extrapolated ones included (a static
      Python int).
    tol: convergence threshold on the change of mean log-likelihood.

  Returns:
    The fitted `GMM`, components ordered so that ``mean_clean <= mean_noisy``.

  Raises:
    ValueError: if ``h`` is not 1-D, holds fewer than 2 values, or
      ``reg_covar`` is not > 0.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ogc_jax import fit_gmm
    >>> k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    >>> h = jnp.concatenate([0.1 + 0.05 * jax.random.normal(k1, (700,)),
    ...                      3.0 + 0.5 * jax.random.normal(k2, (300,))])
    >>> gmm = fit_gmm(h)  # the noisy samples' own mean is 2.94
    >>> print(f"{float(gmm.mean_noisy):.2f} {float(gmm.weight_noisy):.2f}")
    2.94 0.30
  """
  h = jnp.asarray(h)
  if h.ndim != 1:
    raise ValueError(f"fit_gmm expects `h` to be 1-D, got shape {h.shape}.")
  if h.shape[0] < 2:
    raise ValueError(f"fit_gmm needs at least 2 values in `h`, got {h.shape[0]}.")
  if not isinstance(reg_covar, jax.core.Tracer) and not reg_covar > 0:
    raise ValueError(
        f"`reg_covar` must be > 0, a variance floor (without one a component"
        f" can collapse onto equal values), got {reg_covar!r}.")
  if not jnp.issubdtype(h.dtype, jnp.floating):
    h = h.astype(jnp.float32)
  reg_covar = jnp.asarray(reg_covar, h.dtype)
  step = lambda theta: _em_step(h, theta, reg_covar)

  starts = _initial_params(h, reg_covar)
  theta_start = starts[jnp.argmax(_mean_logliks(h, starts))]

  def extrapolate(theta_0, theta_1, theta_2, max_step):
    """SqS3 step of SQUAREM from theta_0, theta_1 = EM(theta_0), theta_2."""
    x0, x1, x2 = (_unconstrained(t) for t in (theta_0, theta_1, theta_2))
    r, v = x1 - x0, x2 - 2 * x1 + x0
    # Step length |r| / |v|, within [1, max_step]; 1 gives theta_2 itself.
    step_length = jnp.clip(
        jnp.sqrt(jnp.sum(r * r) / jnp.maximum(jnp.sum(v * v),
                                              jnp.finfo(h.dtype).tiny)),
        1.0, max_step)
    x_extrapolated = x0 + 2 * step_length * r + step_length**2 * v
    theta_extrapolated, _ = step(_constrained(x_extrapolated))
    # Kept if its EM residual beats plain EM's (a NaN residual never does).
    accepted = (jnp.sum((_unconstrained(theta_extrapolated) - x_extrapolated)**2)
                <= jnp.sum((x2 - x1)**2))
    # The bound on the step length grows while it is reached and kept.
    at_bound = step_length >= max_step
    max_step = jnp.where(at_bound & accepted, 2 * max_step, max_step)
    max_step = jnp.where(at_bound & ~accepted, jnp.maximum(1.0, max_step / 2),
                         max_step)
    return jnp.where(accepted, theta_extrapolated, theta_2), max_step

  def cycle(carry):
    theta_0, _, _, num_steps, max_step = carry
    theta_1, loglik_0 = step(theta_0)
    theta_2, loglik_1 = step(theta_1)
    # A change below two units in the last place of the log-likelihood is
    # rounding noise (tol = 1e-7 is about that in float32): no progress.
    threshold = jnp.maximum(tol, 2 * jnp.finfo(h.dtype).eps * jnp.abs(loglik_1))
    done = ((jnp.abs(loglik_1 - loglik_0) < threshold)
            | (num_steps + 2 >= max_iter))
    theta_0, max_step = jax.lax.cond(
        done, lambda *_: (theta_2, max_step), extrapolate,
        theta_0, theta_1, theta_2, max_step)
    return theta_0, theta_2, done, num_steps + 3, max_step

  carry = (theta_start, theta_start, jnp.asarray(False),
           jnp.asarray(0, jnp.int32), jnp.asarray(1.0, h.dtype))
  _, theta, *_ = jax.lax.while_loop(lambda carry: ~carry[2], cycle, carry)
  return _as_gmm(theta)
