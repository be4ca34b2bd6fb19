"""Two-component Gaussian mixture on H = -log p, fitted by EM in pure jnp.

OGC models the queue of recent losses H as a mixture of a *clean* component
(low H: the model agrees with the label) and a *noisy* one (high H). The fit
runs inside the compiled training step, so it is written with static shapes
and ``lax`` control flow: no host round-trip, no scikit-learn. What costs on
an accelerator is the number of sequential steps, not the work in each, so
the fit takes few of them:

* Starts, deterministic, with no random restarts: five hard splits of the
  data, the optimal two-means split (scikit-learn's default initialisation,
  found exactly in one dimension, see `_two_means_threshold`), the split at
  the mean of H and at 5%, 15% and 30% of the range of H, which find a tight
  clean mode near 0 under heavy noise; and, given ``init``, the previous fit
  (a warm start: between two refits the queue's distribution drifts
  slowly). EM runs from every start at once (the starts are a leading axis
  of every array, so they cost work, not sequential steps) and the fit is
  the most likely of the fixed points it reaches. Which start leads to the
  best fixed point cannot be told from the starts' own likelihoods: early in
  training, when the losses are one broad bump, the most likely start (a
  range split) leads to a mode with a tight "clean" component and a mean
  log-likelihood lower by 0.06 than the two-means start's.
* EM accelerated by SQUAREM (Varadhan & Roland, 2008): each cycle takes two
  EM steps, extrapolates along the squared-iteration direction and takes one
  EM step from there, and keeps that point only if its EM residual is
  smaller than plain EM's. The fixed point is EM's; it is reached in a
  fraction of the steps. (The variance floor ``reg_covar``, added as
  scikit-learn does, makes EM a fixed-point iteration rather than a strict
  ascent of the likelihood, so the residual, not the likelihood, judges an
  extrapolation.) Iteration stops once the mean log-likelihood changes by
  less than ``tol`` between two successive EM steps (or by less than two
  units in its last place, which in float32 is rounding noise), or after
  ``max_iter`` EM steps.
* Then four Newton steps on EM's fixed-point equation (`_newton_polish`).
  Where the components overlap, as in one broad bump of losses early in
  training, the likelihood is flat along a ridge: EM crawls along it and the
  float32 likelihood stops changing 5-10% short of the fixed point, at a
  place that turns on the last bits of the data. Newton's method converges
  quadratically from there, to within 2e-5 of scikit-learn's float64 fit.

``fit="published"`` is instead the fit of the authors' published code
(their ``fit_gmm``: scikit-learn's ``GaussianMixture(n_components=2,
max_iter=10, reg_covar=1e-3)``), made deterministic: the two-means split of
the data (scikit-learn's default initialisation; in one dimension the
optimal split is found exactly after a sort, where scikit-learn runs k-means
from a random start), then at most 10 plain EM steps with scikit-learn's
stopping rule (the mean log-likelihood changes by less than 1e-3 between two
E-steps). It starts cold at every refit. From a queue whose clean and noisy
losses overlap, 10 steps stop well short of EM's fixed point; during
training that leaves the threshold looser at first than the converged fit's.
It is the default: OGC then behaves as the authors' code does, and a refit
costs at most 10 EM steps (docs/results.md measures the fits).

Several fixed points of EM can fit the same queue nearly as well, and which
one is kept decides how OGC clips. Early in training the most likely one is
often a *scale* mixture: a narrow and a wide component around the same
median, whose wide "clean" component claims the highest losses, and whose
noise-to-clean ratio meets the target without clipping; another fixed point
splits off the samples the network has learned. ``fit="conservative"``
keeps, of the fixed points whose noise posterior rises with the loss
(`is_ordered`), the one whose threshold is the tightest.

References:
  Varadhan & Roland, `Simple and globally convergent methods for
  accelerating the convergence of any EM algorithm
  <https://doi.org/10.1111/j.1467-9469.2007.00585.x>`_, Scandinavian
  Journal of Statistics, 2008.
"""

import math
import numbers
from typing import Callable, Literal, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

# Defaults of `fit_gmm`: the variance floor, and per fit the budget of EM
# steps and the tolerance on the change of mean log-likelihood.
REG_COVAR = 1e-3
MAX_ITER = 300
TOL = 1e-7
PUBLISHED_MAX_ITER = 10  # the authors' GaussianMixture(max_iter=10)
PUBLISHED_TOL = 1e-3  # scikit-learn's default tol
Fit = Literal["converged", "published", "conservative"]
FITS: tuple[Fit, ...] = ("converged", "published", "conservative")
# Fits that run EM to its fixed points from several starts (and ``init``).
FIXED_POINT_FITS: tuple[Fit, ...] = ("converged", "conservative")
# Fits that choose a mixture by its threshold (``threshold_of``).
THRESHOLD_FITS: tuple[Fit, ...] = ("conservative",)
DEFAULT_FIT: Fit = "published"  # of fit_gmm, ogc and ogc_weights


class GMM(NamedTuple):
  """A two-component 1-D Gaussian mixture over H = -log p.

  A NamedTuple, as optax keeps its states: ``flax.serialization`` and Orbax
  save it, and ``optax.tree_utils.tree_get(state, "mean_clean")`` finds a
  field inside an `ogc_jax.OGCState`.

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


# Deterministic starting splits besides the one at the mean, as fractions of
# the range of H: a clean mode near 0 under heavy noise is found from the low
# ones.
_RANGE_SPLITS = (0.05, 0.15, 0.3)
# EM steps per SQUAREM cycle: two plain ones and one from the extrapolation.
STEPS_PER_CYCLE = 3
# Newton steps on EM's fixed-point equation after the EM loop (converged fit).
NEWTON_STEPS = 4


def _initial_params(h: chex.Array, reg_covar, weights=None) -> chex.Array:
  """Closed-form M-steps of the deterministic hard splits, ``[K, 5]``.

  Each row is ``(mean_0, mean_1, var_0, var_1, weight_1)`` of one start,
  component 1 being the points above the split. ``weights`` (see
  `_em_step`) leaves the points of weight 0 out.
  """
  if weights is None:
    lo, hi, mean = jnp.min(h), jnp.max(h), jnp.mean(h)
  else:
    kept = weights > 0
    lo = jnp.min(jnp.where(kept, h, jnp.inf))
    hi = jnp.max(jnp.where(kept, h, -jnp.inf))
    mean = jnp.sum(weights * h) / jnp.sum(weights)
  thresholds = jnp.stack([_two_means_threshold(h, weights), mean]
                         + [lo + f * (hi - lo) for f in _RANGE_SPLITS])
  return _split_params(h, thresholds, reg_covar, weights)


def _two_means_threshold(h: chex.Array, weights=None) -> chex.Array:
  """The split of the optimal two-means partition of 1-D data: ``h > t``.

  In one dimension the partition that minimises the within-cluster sum of
  squares is contiguous in sorted order, so it is the best of the n - 1
  splits of the sorted data, each scored by its between-cluster sum of
  squares S_k^2 n / (k (n - k)), S_k the sum of the k lowest centred values
  (one sort and one cumulative sum, no Lloyd iterations). With ``weights``
  (0 or 1, see `_em_step`) the points of weight 0 are moved past the others
  and left out: n is the number of points of weight 1.
  """
  if weights is None:
    n = h.shape[0]
    s = _sort(h)
    lower_sums = jnp.cumsum(s - jnp.mean(s))[:-1]
    k = jnp.arange(1, n, dtype=h.dtype)
    return s[jnp.argmax(lower_sums**2 / (k * (n - k)))]
  kept = weights > 0
  s = _sort(jnp.where(kept, h, jnp.max(jnp.where(kept, h, -jnp.inf))))
  n = jnp.sum(weights)
  k = jnp.arange(1, h.shape[0], dtype=h.dtype)
  # The first n sorted points are the kept ones (the rest equal their max).
  in_kept = (jnp.arange(h.shape[0], dtype=h.dtype) < n).astype(h.dtype)
  centred = (s - jnp.sum(s * in_kept) / n) * in_kept
  lower_sums = jnp.cumsum(centred)[:-1]
  score = jnp.where(k < n, lower_sums**2 / (k * jnp.maximum(n - k, 1)),
                    -jnp.inf)
  return s[jnp.argmax(score)]


def _sort(x: chex.Array) -> chex.Array:
  """``jnp.sort`` of floats without NaNs, by sorting their bits as integers.

  Flipping the lower bits of negative floats makes the signed-integer order
  of the bit patterns the order of the values (infinities included, -0
  before +0), so an integer sort gives the same values as ``jnp.sort``. On
  XLA's CPU backend the integer sort is about 7x faster than the float one,
  whose comparator also orders NaNs (the queue holds none); a float sort
  would be most of a published refit's time.
  """
  int_dtype = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}[x.dtype.itemsize]
  bits = jax.lax.bitcast_convert_type(x, int_dtype)
  flip = lambda b: b ^ ((b >> (8 * x.dtype.itemsize - 1))
                        & jnp.iinfo(int_dtype).max)
  return jax.lax.bitcast_convert_type(flip(jnp.sort(flip(bits))), x.dtype)


def _split_params(h: chex.Array, thresholds: chex.Array, reg_covar,
                  weights=None):
  """M-steps of the hard splits ``h > threshold``, one row each, ``[K, 5]``."""
  upper = h[None] > thresholds[:, None]
  # All values equal: no split exists, so both components start identical.
  if weights is None:
    split_exists = jnp.any(upper, axis=1) & ~jnp.all(upper, axis=1)
  else:
    kept = weights[None] > 0
    split_exists = jnp.any(upper & kept, axis=1) & jnp.any(~upper & kept,
                                                           axis=1)
  resp_noisy = jnp.where(split_exists[:, None], upper.astype(h.dtype), 0.5)
  resp = jnp.stack([1.0 - resp_noisy, resp_noisy], axis=1)  # [K, 2, n]
  if weights is not None:
    resp = resp * weights
  tiny = 10 * jnp.finfo(h.dtype).eps  # as scikit-learn, keeps empty comps finite
  counts = jnp.sum(resp, axis=2) + tiny  # [K, 2]
  means = resp @ h / counts
  variances = jnp.sum(resp * (h - means[..., None])**2, axis=2) / counts
  variances = variances + reg_covar
  weights = counts / jnp.sum(counts, axis=1, keepdims=True)
  return jnp.concatenate([means, variances, weights[:, 1:]], axis=1)


def _log_joints(h: chex.Array, theta: chex.Array):
  """log w_k N_k(h) of both components, and h minus each mean.

  ``theta`` is ``[..., 5]``, ``(mean_0, mean_1, var_0, var_1, weight_1)``;
  the results are ``[..., n]``.
  """
  mean_0, mean_1, var_0, var_1, weight_1 = (theta[..., i, None]
                                            for i in range(5))
  c0, c1 = h - mean_0, h - mean_1
  log_joint_0 = (jnp.log1p(-weight_1) - 0.5 * jnp.log(2 * jnp.pi * var_0)
                 - 0.5 * c0 * c0 / var_0)
  log_joint_1 = (jnp.log(weight_1) - 0.5 * jnp.log(2 * jnp.pi * var_1)
                 - 0.5 * c1 * c1 / var_1)
  return log_joint_0, log_joint_1, c0, c1


def _em_step(h: chex.Array, theta: chex.Array, reg_covar, weights=None):
  """One EM iteration in closed form, of one mixture or of several at once.

  With two components the E-step is a logistic function of the difference
  of the two log joint densities, d = log w1 N1 - log w0 N0: responsibility
  r = sigmoid(d) and log-likelihood log w0 N0 + softplus(d). The M-step needs
  only the weighted sums of 1, c and c^2 per component, c = h - old mean
  (moments about the old means keep the variances well conditioned).

  Args:
    h: ``[n]`` data.
    theta: ``[..., 5]``, ``(mean_0, mean_1, var_0, var_1, weight_1)``.
    reg_covar: the variance floor.
    weights: ``[n]`` of 0 or 1, or None for all 1: the points of weight 0
      (non-finite losses, replaced by a finite value) take no part.

  Returns:
    The parameters after the step, ``[..., 5]``, and the mean
    log-likelihood of ``theta``, ``[...]``.
  """
  log_joint_0, log_joint_1, c0, c1 = _log_joints(h, theta)
  d = log_joint_1 - log_joint_0
  e = jnp.exp(-jnp.abs(d))  # shared by the sigmoid and the softplus
  r = jnp.where(d >= 0, 1.0, e) / (1.0 + e)  # sigmoid(d)
  q = 1.0 - r
  loglik = log_joint_0 + jnp.maximum(d, 0) + jnp.log1p(e)
  n = h.shape[0]
  if weights is not None:
    r, q, loglik, n = r * weights, q * weights, loglik * weights, jnp.sum(
        weights)
  sums = [jnp.sum(x, axis=-1) for x in (q, q * c0, q * c0 * c0, r, r * c1,
                                        r * c1 * c1, loglik)]
  tiny = 10 * jnp.finfo(h.dtype).eps  # as scikit-learn, keeps empty comps finite
  count_0, count_1 = sums[0] + tiny, sums[3] + tiny
  shift_0, shift_1 = sums[1] / count_0, sums[4] / count_1
  theta = jnp.stack([
      theta[..., 0] + shift_0, theta[..., 1] + shift_1,
      sums[2] / count_0 - shift_0**2 + reg_covar,
      sums[5] / count_1 - shift_1**2 + reg_covar,
      count_1 / (count_0 + count_1)], axis=-1)
  return theta, sums[6] / n


def _mean_logliks(h: chex.Array, thetas: chex.Array,
                  weights=None) -> chex.Array:
  """Mean log-likelihood of ``h`` under each row of ``thetas`` ``[K, 5]``.

  A row that is not a valid mixture (e.g. an all-zero ``init``) scores -inf.
  """
  log_joint_0, log_joint_1, _, _ = _log_joints(h, thetas)
  d = log_joint_1 - log_joint_0
  pointwise = log_joint_0 + jnp.maximum(d, 0) + jnp.log1p(jnp.exp(-jnp.abs(d)))
  if weights is None:
    loglik = jnp.mean(pointwise, axis=1)
  else:
    loglik = jnp.sum(pointwise * weights, axis=1) / jnp.sum(weights)
  valid = (jnp.all(jnp.isfinite(thetas), axis=1) & (thetas[:, 2] > 0)
           & (thetas[:, 3] > 0) & (thetas[:, 4] > 0) & (thetas[:, 4] < 1))
  return jnp.where(valid & ~jnp.isnan(loglik), loglik, -jnp.inf)


# SQUAREM extrapolates in coordinates where every point is a valid mixture:
# means, log-variances and the logit of the weight.
def _unconstrained(theta):
  return jnp.concatenate(
      [theta[..., :2], jnp.log(theta[..., 2:4]),
       jnp.log(theta[..., 4:]) - jnp.log1p(-theta[..., 4:])], axis=-1)


def _constrained(x):
  return jnp.concatenate([x[..., :2], jnp.exp(x[..., 2:4]),
                          jax.nn.sigmoid(x[..., 4:])], axis=-1)


def _as_gmm(theta) -> GMM:
  mean_0, mean_1, var_0, var_1, weight_1 = theta
  swap = mean_0 > mean_1  # the clean component is the lower-mean one
  pick = lambda kept, swapped: jnp.where(swap, swapped, kept)
  return GMM(mean_clean=pick(mean_0, mean_1), var_clean=pick(var_0, var_1),
             mean_noisy=pick(mean_1, mean_0), var_noisy=pick(var_1, var_0),
             weight_noisy=pick(weight_1, 1.0 - weight_1))


def _as_theta(gmm: GMM, dtype) -> chex.Array:
  return jnp.stack([gmm.mean_clean, gmm.mean_noisy, gmm.var_clean,
                    gmm.var_noisy, gmm.weight_noisy]).astype(dtype)


def fit_gmm_counting_steps(
    h: chex.Array,
    init: Optional[GMM] = None,
    *,
    fit: Fit = DEFAULT_FIT,
    reg_covar: chex.Numeric = REG_COVAR,
    max_iter: Optional[int] = None,
    tol: Optional[float] = None,
    threshold_of: Optional[Callable[[GMM], chex.Array]] = None,
) -> tuple[GMM, chex.Array]:
  """`fit_gmm`, also returning the number of EM steps it took.

  The steps are the sequential work of the fit, what it costs on an
  accelerator (``benchmarks/fit_speed.py`` reports them).

  Args:
    h, init, fit, reg_covar, max_iter, tol, threshold_of: as for `fit_gmm`.

  Returns:
    ``(gmm, num_steps)``: the `GMM` of `fit_gmm` and an int32 scalar, the EM
    steps taken (the converged fit: by its slowest start, in multiples of
    `STEPS_PER_CYCLE`).

  Raises:
    ValueError: as `fit_gmm`.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import fit_gmm_counting_steps
    >>> h = jnp.concatenate([jnp.linspace(0.0, 0.2, 700),
    ...                      jnp.linspace(2.0, 4.0, 300)])
    >>> gmm, steps = fit_gmm_counting_steps(h, fit="published")
    >>> print(f"{float(gmm.weight_noisy):.2f}", int(steps) <= 10)
    0.30 True
  """
  h = jnp.asarray(h)
  if h.ndim != 1:
    raise ValueError(f"fit_gmm expects `h` to be 1-D, got shape {h.shape}.")
  if h.shape[0] < 2:
    raise ValueError(f"fit_gmm needs at least 2 values in `h`, got {h.shape[0]}.")
  if fit not in FITS:
    raise ValueError(f"fit_gmm: `fit` must be one of {FITS}, got {fit!r}.")
  if fit == "published" and init is not None:
    raise ValueError(
        "fit_gmm: `init` (a warm start) applies to the fits that run EM to"
        f" its fixed points {FIXED_POINT_FITS}; the published fit starts from"
        " the two-means split at every refit.")
  if (fit in THRESHOLD_FITS) != (threshold_of is not None):
    raise ValueError(
        f"fit_gmm: the fits {THRESHOLD_FITS} need `threshold_of` (the"
        " probability threshold of a mixture, e.g. lambda gmm:"
        " ogc_jax.solve_threshold(gmm, base_loss, learning_rate)[0]) and no"
        f" other fit takes it; got fit={fit!r} with"
        f" threshold_of={threshold_of!r}.")
  if max_iter is not None and (
      not isinstance(max_iter, (numbers.Integral, np.integer))
      or isinstance(max_iter, (bool, np.bool_)) or max_iter < 1):
    raise ValueError(
        f"fit_gmm: `max_iter` must be an integer >= 1 (a budget of EM steps),"
        f" got {max_iter!r}.")
  if tol is not None and not (isinstance(tol, (numbers.Real, np.floating))
                              and not isinstance(tol, (bool, np.bool_))
                              and math.isfinite(tol) and tol >= 0):
    raise ValueError(
        f"fit_gmm: `tol` must be a finite number >= 0 (a change of mean"
        f" log-likelihood), got {tol!r}.")
  if not jnp.issubdtype(h.dtype, jnp.floating):
    h = h.astype(jnp.float32)
  try:
    concrete = float(reg_covar)
  except TypeError:  # traced: checked by whoever made it
    concrete = 1.0
  if not concrete > 0:  # NaN too
    # Without a floor a queue of equal values has variance 0 and NaN fits.
    raise ValueError(
        f"fit_gmm: `reg_covar` must be > 0, a variance floor, got {reg_covar!r}.")
  reg_covar = jnp.asarray(reg_covar, h.dtype)
  weights = None
  if isinstance(h, jax.core.Tracer):
    # Traced: non-finite losses take no part in the fit (as OGC's queue
    # never holds them), in place of a mixture of NaNs.
    finite = jnp.isfinite(h)
    weights, h = finite.astype(h.dtype), jnp.where(finite, h, 0.0)
  else:
    check_finite_losses(h, "fit_gmm")
  if fit == "published":
    return _published_fit(
        h, reg_covar, PUBLISHED_MAX_ITER if max_iter is None else max_iter,
        PUBLISHED_TOL if tol is None else tol, weights)
  return _fixed_point_fit(h, init, fit, reg_covar,
                          MAX_ITER if max_iter is None else max_iter,
                          TOL if tol is None else tol, weights, threshold_of)


def _fixed_point_fit(h, init, fit, reg_covar, max_iter, tol, weights,
                     threshold_of):
  """The converged or conservative fit: EM's fixed points, one kept."""
  starts = _initial_params(h, reg_covar, weights)
  if init is not None:
    starts = jnp.concatenate([starts, _as_theta(init, h.dtype)[None]])
  ends, logliks, num_steps = _fixed_points(h, starts, reg_covar, max_iter, tol,
                                           weights)
  if fit == "converged":
    pick = jnp.argmax(logliks)
  else:
    pick = _most_conservative(h, ends, logliks, weights, threshold_of)
  return _as_gmm(ends[pick]), num_steps


def _ordered(h, thetas, weights=None):
  """Whether each mixture's noise posterior rises with the loss to the top.

  The log-odds of the noisy component, d(H) = log w1 N1(H) - log w0 N0(H),
  is quadratic in H. Where the noisy component is the wider one it is convex
  with its minimum below the clean mean, so it rises from the clean mean
  upwards; where the noisy component is the narrower one it is concave and
  turns down past its peak, beyond which the highest losses are called
  clean. Either way the posterior rises from the clean mean up to the
  largest queued loss exactly when d'(max H) >= 0.
  """
  gmms = jax.vmap(_as_gmm)(thetas)
  if weights is None:
    top = jnp.max(h)
  else:
    top = jnp.max(jnp.where(weights > 0, h, -jnp.inf))
  slope = ((top - gmms.mean_clean) / gmms.var_clean
           - (top - gmms.mean_noisy) / gmms.var_noisy)
  return slope >= 0


def is_ordered(gmm: GMM, h: chex.Array) -> chex.Array:
  """Whether the mixture's noise posterior rises with the loss over ``h``.

  From the clean mean up to the largest of ``h`` (the queue), as the method
  assumes: the highest losses are the most likely noisy. A scale mixture
  (a narrow and a wide component around the same median, the wide one
  "clean") is not: it calls the highest losses clean. `fit_gmm`'s
  conservative fit keeps only ordered mixtures.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import GMM
    >>> h = jnp.array([0.1, 1.0, 6.0])
    >>> wide_noise = GMM(*map(jnp.float32, (0.1, 0.01, 3.0, 1.0, 0.4)))
    >>> wide_clean = GMM(*map(jnp.float32, (2.0, 1.0, 2.1, 0.01, 0.4)))
    >>> bool(is_ordered(wide_noise, h)), bool(is_ordered(wide_clean, h))
    (True, False)
  """
  h = jnp.asarray(h)
  return _ordered(h, _as_theta(gmm, jnp.result_type(h, float))[None])[0]


def _most_conservative(h, ends, logliks, weights, threshold_of):
  """Index of the ordered fixed point with the tightest threshold.

  ``threshold_of(gmm)`` gives the probability threshold of a mixture; the
  tightest is the largest. Only fixed points whose components each hold at
  least two samples' weight count. Ties (e.g. several that clip nothing) go
  to the most likely. With no such ordered fixed point, the most likely of
  all.
  """
  n = h.shape[0] if weights is None else jnp.sum(weights)
  # A component of less than two samples' weight has no variance of its own
  # (the M-step's variance of fewer than two points is the floor's): a
  # degenerate fixed point, not a split of the queue.
  supported = jnp.minimum(ends[:, 4], 1.0 - ends[:, 4]) * n >= 2.0
  ordered = _ordered(h, ends, weights) & jnp.isfinite(logliks) & supported
  p_thresholds = jax.vmap(lambda theta: threshold_of(_as_gmm(theta)))(ends)
  ordered = ordered & jnp.isfinite(p_thresholds)
  tightest = jnp.max(jnp.where(ordered, p_thresholds, -jnp.inf))
  chosen = ordered & (p_thresholds == tightest)
  return jnp.where(jnp.any(ordered),
                   jnp.argmax(jnp.where(chosen, logliks, -jnp.inf)),
                   jnp.argmax(logliks))


def check_finite_losses(h, caller: str) -> None:
  """Raises a ValueError naming the non-finite values of a concrete ``h``.

  H = -log p is infinite where p underflowed to 0 and NaN where p was; a
  mixture fitted to one of them would be NaN in every field.
  """
  h = np.asarray(h)
  bad = np.flatnonzero(~np.isfinite(h))
  if bad.size:
    shown = ", ".join(f"{h[i]} at {i}" for i in bad[:5])
    more = f" and {bad.size - 5} more" if bad.size > 5 else ""
    raise ValueError(
        f"{caller}: `h` holds {bad.size} non-finite value(s) ({shown}{more});"
        " H = -log p is infinite where p is 0: clamp p to the feasible range"
        " first, H = -log(ogc_jax.feasible_probability(p)), as OGC does.")


def _fixed_points(h, starts, reg_covar, max_iter, tol, weights=None):
  """SQUAREM-accelerated EM from every row of ``starts`` to its fixed point.

  Returns the ends ``[K, 5]``, their mean log-likelihoods ``[K]`` (-inf for
  a start that was never usable) and the EM steps taken.

  Each start runs until its own mean log-likelihood stops changing (then its
  parameters are kept), or until the budget of EM steps is spent; a start
  that is not a valid mixture, or whose likelihood stops being finite, stops
  at once and is never chosen.
  """
  eps = jnp.finfo(h.dtype).eps
  step = lambda theta: _em_step(h, theta, reg_covar, weights)

  def cycle(carry):
    theta_0, result, done, num_steps, max_step = carry
    theta_1, loglik_0 = step(theta_0)
    theta_2, loglik_1 = step(theta_1)
    # A change below two units in the last place of the log-likelihood is
    # rounding noise (tol = 1e-7 is about that in float32): no progress.
    threshold = jnp.maximum(tol, 2 * eps * jnp.abs(loglik_1))
    converged = ((jnp.abs(loglik_1 - loglik_0) < threshold)
                 | ~jnp.isfinite(loglik_1))
    num_steps = num_steps + STEPS_PER_CYCLE
    converged = converged | (num_steps >= max_iter)
    # SqS3 step of SQUAREM from theta_0 with its step length |r| / |v|,
    # within [1, max_step]; 1 gives theta_2 itself.
    x0, x1, x2 = (_unconstrained(t) for t in (theta_0, theta_1, theta_2))
    r, v = x1 - x0, x2 - 2 * x1 + x0
    step_length = jnp.clip(
        jnp.sqrt(jnp.sum(r * r, -1) / jnp.maximum(jnp.sum(v * v, -1),
                                                  jnp.finfo(h.dtype).tiny)),
        1.0, max_step)[..., None]
    x_extrapolated = x0 + 2 * step_length * r + step_length**2 * v
    theta_3, _ = step(_constrained(x_extrapolated))
    # Kept if its EM residual beats plain EM's (a NaN residual never does).
    accepted = (jnp.sum((_unconstrained(theta_3) - x_extrapolated)**2, -1)
                <= jnp.sum((x2 - x1)**2, -1)) & ~converged
    # The bound on the step length grows while it is reached and kept.
    at_bound = step_length[..., 0] >= max_step
    max_step = jnp.where(at_bound & accepted, 2 * max_step, max_step)
    max_step = jnp.where(at_bound & ~accepted, jnp.maximum(1.0, max_step / 2),
                         max_step)
    theta_next = jnp.where(accepted[..., None], theta_3, theta_2)
    # A start that converged keeps its last plain EM step.
    result = jnp.where((converged & ~done)[..., None], theta_2, result)
    theta_0 = jnp.where(done[..., None], theta_0, theta_next)
    return theta_0, result, done | converged, num_steps, max_step

  usable = jnp.isfinite(_mean_logliks(h, starts, weights))
  carry = (starts, starts, ~usable | (max_iter < 1), jnp.asarray(0, jnp.int32),
           jnp.ones(starts.shape[:1], h.dtype))
  _, ends, _, num_steps, _ = jax.lax.while_loop(
      lambda carry: ~jnp.all(carry[2]), cycle, carry)
  ends = _newton_polish(h, ends, reg_covar, weights)
  num_steps = num_steps + NEWTON_STEPS
  return ends, _mean_logliks(h, ends, weights), num_steps


def _newton_polish(h, thetas, reg_covar, weights=None):
  """`NEWTON_STEPS` Newton steps on EM's fixed-point equation, per row.

  Where the likelihood is flat along some direction (early in training the
  losses are one broad bump) EM contracts along it at a rate near 1 (0.993
  on `testing.early_training_queue`) and the likelihood stops changing
  within float32's resolution while the parameters are still 5-10% from the
  fixed point. Newton's method on F(x) = EM(x) - x, in the unconstrained
  coordinates, with the 5x5 Jacobian by forward-mode differentiation,
  converges quadratically from there. Its first step may raise the residual
  |F| before the next ones fall, so every step is taken and the iterate with
  the smallest residual is kept (the start itself if none is smaller, or if
  the steps leave the finite numbers).
  """

  def residual(x):
    theta, _ = _em_step(h, _constrained(x), reg_covar, weights)
    return _unconstrained(theta) - x

  def norm(f):
    size = jnp.sum(f * f)
    return jnp.where(jnp.isfinite(size), size, jnp.inf)

  def newton_step(carry, _):
    # Each point's residual is carried from the step that reached it.
    x, f, best, best_f, best_norm = carry
    x_new = x + jnp.linalg.solve(jax.jacfwd(residual)(x), -f)
    f_new = residual(x_new)
    x_norm = norm(f_new)
    finite, better = jnp.isfinite(x_norm), x_norm < best_norm
    return (jnp.where(finite, x_new, best), jnp.where(finite, f_new, best_f),
            jnp.where(better, x_new, best), jnp.where(better, f_new, best_f),
            jnp.where(better, x_norm, best_norm)), None

  def polish(theta):
    x = _unconstrained(theta)
    f = residual(x)
    x_norm = norm(f)
    (_, _, best, _, _), _ = jax.lax.scan(newton_step, (x, f, x, f, x_norm),
                                         None, length=NEWTON_STEPS)
    return jnp.where(jnp.isfinite(x_norm), _constrained(best), theta)

  return jax.vmap(polish)(thetas)


def _published_fit(h, reg_covar, max_iter, tol, weights=None):
  """The authors' fit: the two-means split, then scikit-learn's EM loop.

  scikit-learn's ``GaussianMixture.fit`` after its initialisation: each
  iteration takes an E-step (the mean log-likelihood of the current
  parameters) and an M-step, and stops once that log-likelihood changed by
  less than ``tol`` since the previous iteration, or after ``max_iter``.
  """
  theta = _split_params(h, _two_means_threshold(h, weights)[None], reg_covar,
                        weights)[0]

  def iteration(carry):
    theta, previous, num_steps, _ = carry
    theta, loglik = _em_step(h, theta, reg_covar, weights)
    num_steps = num_steps + 1
    done = (jnp.abs(loglik - previous) < tol) | (num_steps >= max_iter)
    return theta, loglik, num_steps, done

  carry = (theta, jnp.asarray(-jnp.inf, h.dtype), jnp.asarray(0, jnp.int32),
           jnp.asarray(max_iter < 1))
  theta, _, num_steps, _ = jax.lax.while_loop(lambda c: ~c[3], iteration,
                                              carry)
  return _as_gmm(theta), num_steps


def fit_gmm(h: chex.Array,
            init: Optional[GMM] = None,
            *,
            fit: Fit = DEFAULT_FIT,
            reg_covar: chex.Numeric = REG_COVAR,
            max_iter: Optional[int] = None,
            tol: Optional[float] = None,
            threshold_of: Optional[Callable[[GMM], chex.Array]] = None) -> GMM:
  """Fits a two-component Gaussian mixture to H = -log p by EM.

  The E- and M-steps are closed form, and every fit is deterministic:

  * ``fit="published"`` (the default; the authors' code): plain EM from the
    optimal two-means split, stopped as scikit-learn stops it, after
    ``max_iter`` steps (default 10) or once the mean log-likelihood changes
    by less than ``tol`` (default 1e-3): scikit-learn's
    ``GaussianMixture(n_components=2, max_iter=10, reg_covar=1e-3)`` started
    from the same split.
  * ``fit="converged"`` (EM's fixed point): EM runs from five fixed splits
    of the data and, if given, ``init`` (see the module docstring), and the
    most likely fixed point is the fit, so the same queue and ``init``
    always give the same fit; SQUAREM extrapolation takes each start to its
    fixed point in a fraction of the steps. A start stops once its mean
    log-likelihood per sample changes by less than ``tol`` (default 1e-7, or
    less than its float rounding) between two successive EM steps, or after
    ``max_iter`` EM steps (default 300, checked every `STEPS_PER_CYCLE`
    steps).
  * ``fit="conservative"``: the same fixed points; of those that are
    *ordered* (the posterior of the noisy component rises with the loss from
    the clean mean up to the largest loss in ``h``, as the method assumes)
    the one whose threshold ``threshold_of`` is the tightest (ties: the most
    likely). OGC's bound on the noise-to-clean ratio then holds for every
    ordered mixture EM finds in the queue, not only for the one that
    happened to be most likely. With no ordered fixed point, the converged
    fit.

  Args:
    h: 1-D array of losses H = -log p, e.g. the OGC queue, finite (compute
      them from ``ogc_jax.feasible_probability(p)``: -log 0 is infinite).
      Concrete ``h`` with a non-finite value is refused; traced ``h`` (under
      ``jit``) is fitted without its non-finite values, as OGC's queue never
      holds them (with fewer than two finite values no mixture exists and
      every field is NaN).
    init: optional previous fit, a further candidate start of the converged
      and conservative fits (a warm start); one that is not a valid mixture
      (e.g. all zeros) is never chosen.
    fit: ``"published"``, ``"converged"`` or ``"conservative"``, as above.
    reg_covar: variance floor added to both variances (as in
      ``sklearn.mixture.GaussianMixture``), > 0; it also keeps a degenerate
      queue, for example one of all-equal values, finite.
    max_iter: budget of EM steps, a static Python int >= 1 (None: the fit's
      default).
    tol: threshold on the change of mean log-likelihood, a float >= 0
      (None: the fit's default).
    threshold_of: for ``fit="conservative"`` only (and required there): the
      probability threshold of a mixture, a jnp function of a `GMM`, e.g.
      ``lambda gmm: ogc_jax.solve_threshold(gmm, base_loss, lr)[0]``; the
      tightest is the largest.

  Returns:
    The fitted `GMM`, components ordered so that ``mean_clean <= mean_noisy``.

  Raises:
    ValueError: if ``h`` is not 1-D, holds fewer than 2 values or (when
      concrete) a non-finite one, ``fit`` is not one of `FITS`, ``init`` is
      given to the published fit, ``reg_covar`` is not > 0, ``max_iter`` is
      not an integer >= 1, ``tol`` not a finite number >= 0, or
      ``threshold_of`` is missing for the conservative fit or given to
      another.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ogc_jax import fit_gmm
    >>> k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    >>> h = jnp.concatenate([0.1 + 0.05 * jax.random.normal(k1, (700,)),
    ...                      3.0 + 0.5 * jax.random.normal(k2, (300,))])
    >>> gmm = fit_gmm(h)  # the noisy samples' own mean is 2.94
    >>> print(f"{float(gmm.mean_noisy):.2f} {float(gmm.weight_noisy):.2f}")
    2.94 0.30
    >>> converged = fit_gmm(h, fit="converged")  # EM to its fixed point
    >>> warm = fit_gmm(h[::-1], init=converged, fit="converged")  # from it
    >>> print(f"{float(warm.mean_noisy):.2f} {float(warm.weight_noisy):.2f}")
    2.94 0.30
  """
  return fit_gmm_counting_steps(h, init, fit=fit, reg_covar=reg_covar,
                                max_iter=max_iter, tol=tol,
                                threshold_of=threshold_of)[0]


def noisy_log_odds(gmm: GMM, h: chex.Array) -> chex.Array:
  """Log-odds that each loss comes from the noisy component.

  Under the fitted mixture, for a loss H = -log p of an example,

      log [w N(H; m_noisy, v_noisy)] - log [(1 - w) N(H; m_clean, v_clean)],

  w = ``gmm.weight_noisy``: the logit of `noisy_posterior`. Rank examples by
  it rather than by the posterior: the posterior rounds to exactly 1 in
  float32 once the log-odds pass about 17, so a list ranked by it ties every
  example past that point, where the log-odds still tell them apart.

  Args:
    gmm: a fitted `GMM` (e.g. ``fit_gmm(h)`` or the ``gmm`` of an
      `ogc_jax.OGCState`).
    h: losses H = -log p, any shape. Concrete ``h`` must be finite (see
      `fit_gmm`); for traced ``h`` an infinite loss gets the limit of the
      log-odds (+inf or -inf, by which component has the heavier tail) and
      a NaN loss NaN.

  Returns:
    The log-odds, the shape of ``h``, in the wider of their dtypes and
    float32.

  Raises:
    ValueError: for concrete ``h`` with a non-finite value.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import GMM, noisy_log_odds, noisy_posterior
    >>> gmm = GMM(mean_clean=jnp.float32(0.1), var_clean=jnp.float32(0.01),
    ...           mean_noisy=jnp.float32(3.0), var_noisy=jnp.float32(1.0),
    ...           weight_noisy=jnp.float32(0.4))
    >>> h = jnp.array([2.0, 3.0])
    >>> print(noisy_posterior(gmm, h), noisy_log_odds(gmm, h).round())
    [1. 1.] [177. 418.]
  """
  h = jnp.asarray(h)
  if not isinstance(h, jax.core.Tracer):
    check_finite_losses(h, "noisy_log_odds")
  dtype = jnp.result_type(h, gmm.mean_clean, float)
  theta = _as_theta(gmm, dtype)
  flat = h.reshape(-1).astype(dtype)
  log_joint_clean, log_joint_noisy, _, _ = _log_joints(flat, theta)
  log_odds = log_joint_noisy - log_joint_clean
  # As H -> inf the component with the larger variance (or, equal, the
  # larger mean, the noisy one) wins; inf - inf would be NaN.
  noisy_wins = ((gmm.var_noisy > gmm.var_clean)
                | ((gmm.var_noisy == gmm.var_clean)
                   & (gmm.mean_noisy >= gmm.mean_clean)))
  limit = jnp.where(noisy_wins, jnp.inf, -jnp.inf).astype(dtype)
  log_odds = jnp.where(jnp.isposinf(flat), limit, log_odds)
  return log_odds.reshape(h.shape)


def noisy_posterior(gmm: GMM, h: chex.Array) -> chex.Array:
  """Posterior probability that each loss comes from the noisy component.

  Under the fitted mixture, for a loss H = -log p of an example,

      P(noisy | H) = w N(H; m_noisy, v_noisy)
                     / (w N(H; m_noisy, v_noisy) + (1 - w) N(H; m_clean, v_clean)),

  w = ``gmm.weight_noisy``: an estimate that the example's given label is
  wrong (the small-loss rule). The components are those of `fit_gmm`, not
  truncated (EM fits them so). Use it on the training losses of any model,
  not only OGC's queue: fit the mixture to the per-example losses, then rank
  the examples by `noisy_log_odds` (of which this is the sigmoid): in
  float32 the posterior is exactly 1 for every loss whose log-odds exceed
  about 17, so it cannot rank those.

  Args:
    gmm: a fitted `GMM` (e.g. ``fit_gmm(h)`` or the ``gmm`` of an
      `ogc_jax.OGCState`).
    h: losses H = -log p, any shape; finite, as for `noisy_log_odds`.

  Returns:
    The posterior of the noisy component, the shape of ``h``, in [0, 1].

  Raises:
    ValueError: for concrete ``h`` with a non-finite value.

  Example:
    >>> import jax.numpy as jnp
    >>> from ogc_jax import GMM, noisy_posterior
    >>> gmm = GMM(mean_clean=jnp.float32(0.1), var_clean=jnp.float32(0.01),
    ...           mean_noisy=jnp.float32(3.0), var_noisy=jnp.float32(1.0),
    ...           weight_noisy=jnp.float32(0.4))
    >>> print(noisy_posterior(gmm, jnp.array([0.05, 0.5, 3.0])).round(3))
    [0.001 0.897 1.   ]
  """
  return jax.nn.sigmoid(noisy_log_odds(gmm, h))
