"""Float64 references and realistic inputs for testing and benchmarking OGC.

What the tests and the benchmarks both check OGC against, kept in one module
both import (as optax keeps ``optax._src.test_utils``), independent of the
``jnp`` code it checks:

* the base losses' derivatives ``|l'(p)|`` written by hand (`DERIVATIVES`, by
  the names of `ogc_jax.losses.BASE_LOSSES`);
* the noise-to-clean ratio and the clipping threshold in float64: SciPy's
  adaptive quadrature over ``scipy.stats.truncnorm`` and Brent's root finder
  (`ratio`, `threshold`);
* a converged scikit-learn mixture fit (`sklearn_fit`), scikit-learn's EM
  from a given hard split (`sklearn_fit_from_split`, for the published fit)
  and from a given mixture (`sklearn_fit_from_mixture`, the fixed point
  next to it),
  the optimal two-means split by brute force (`two_means_threshold`),
  realistic queues of losses (`realistic_queue`), one from early in
  training (`early_training_queue`), one early under heavy noise whose most
  likely mixture is a scale mixture (`scale_mixture_queue`) and two between
  which the noise level jumps (`noise_jump_queues`);
* the authors' original pipeline, for comparison, with the settings of
  their scripts: scikit-learn's ``GaussianMixture(max_iter=10,
  reg_covar=1e-3)``, a 1000-point grid and 10 bisection steps
  (`authors_fit`, `authors_threshold`, `authors_pipeline`).

It needs SciPy and scikit-learn (the ``test`` extra: ``pip install
ogc-jax[test]``) and is not imported by ``import ogc_jax``.
"""

import math
import warnings

import numpy as np
from scipy import integrate, optimize, stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from ogc_jax.gmm import GMM

# The probability range of OGC, restated here so that the references do not
# depend on the code they check.
MIN_PROB = 1e-7
MAX_PROB = 1 - 1e-7
MIN_H = -math.log1p(-1e-7)
MAX_H = -math.log(1e-7)


def ce_derivative(p):
  """``|d/dp -log p| = 1 / p``."""
  return 1.0 / p


def focal_derivative(p, gamma=0.5):
  """``|d/dp -(1 - p)**gamma log p|``."""
  return np.abs(gamma * np.log(p) * (1 - p) ** (gamma - 1) - (1 - p) ** gamma / p)


def gce_derivative(p, q=0.7):
  """``|d/dp (1 - p**q) / q| = p**(q - 1)``."""
  return p ** (q - 1)


# Hand-written |l'(p)| of base losses in `ogc_jax.losses.BASE_LOSSES`, by the
# same names and with the same default hyperparameters.
DERIVATIVES = {
    "ce": ce_derivative,
    "focal": focal_derivative,
    "gce": gce_derivative,
}


def _as_mapping(gmm):
  """A `GMM` (a NamedTuple) as a dict; a mapping as it is."""
  return gmm._asdict() if isinstance(gmm, GMM) else gmm


def ratio(gmm, derivative, p_threshold):
  """The noise-to-clean ratio R at a probability threshold, in float64.

  Args:
    gmm: a mapping with ``mean_clean``, ``var_clean``, ``mean_noisy`` and
      ``var_noisy`` (a `GMM` or a dict), components over H = -log p truncated
      to [MIN_H, MAX_H].
    derivative: ``|l'(p)|`` of the base loss, e.g. `ce_derivative`.
    p_threshold: the probability at which ``|l'|`` is clipped.

  Returns:
    ``E_noisy[min(|l'|, tau)] / E_clean[min(|l'|, tau)]`` with
    ``tau = |l'(p_threshold)|``, a float.
  """
  gmm = _as_mapping(gmm)
  tau = derivative(p_threshold)
  h_t = -math.log(p_threshold)

  def expect(mean, var):
    clipped = lambda h: min(derivative(math.exp(-h)), tau)
    std = math.sqrt(var)
    dist = stats.truncnorm((MIN_H - mean) / std, (MAX_H - mean) / std, mean, std)
    mode = min(max(mean, MIN_H), MAX_H)  # of the truncated density
    lo = max(MIN_H, mode - 15 * std)
    hi = min(MAX_H, mode + 15 * std)
    total = 0.0
    for a, b in ((lo, min(max(h_t, lo), hi)), (min(max(h_t, lo), hi), hi)):
      if b > a:
        total += integrate.quad(lambda h: clipped(h) * dist.pdf(h), a, b,
                                limit=2000, epsabs=0, epsrel=1e-11)[0]
    mass = integrate.quad(dist.pdf, lo, hi, limit=2000, epsabs=0, epsrel=1e-11)[0]
    return total / mass

  return (expect(gmm["mean_noisy"], gmm["var_noisy"])
          / expect(gmm["mean_clean"], gmm["var_clean"]))


def threshold(gmm, derivative, learning_rate, epsilon=20.0):
  """The clipping threshold in float64: Brent's method on R in log p.

  Args:
    gmm: the mixture, as for `ratio`.
    derivative: ``|l'(p)|`` of the base loss.
    learning_rate: the current learning rate eta.
    epsilon: OGC's epsilon; the target ratio is ``1 + eta * epsilon``.

  Returns:
    ``(p_threshold, tau)``: ``MIN_PROB`` (no clipping) when R meets the target
    without clipping, ``MAX_PROB`` when even full clipping does not.

  Example:
    >>> from ogc_jax import testing
    >>> gmm = dict(mean_clean=0.05, var_clean=0.002, mean_noisy=4.0,
    ...            var_noisy=1.5)
    >>> p, tau = testing.threshold(gmm, testing.ce_derivative, 0.01)
    >>> round(tau, 4)
    1.2764
  """
  target = 1 + learning_rate * epsilon
  f = lambda h: ratio(gmm, derivative, math.exp(-h)) - target
  if f(MAX_H) <= 0:
    p = MIN_PROB
  elif f(MIN_H) > 0:
    p = MAX_PROB
  else:
    p = math.exp(-optimize.brentq(f, MIN_H, MAX_H, xtol=1e-13, rtol=1e-13))
  return p, float(derivative(p))


def realistic_queue(noise_rate, seed, n=4096):
  """H = -log p of a training queue: clean losses near 0, noisy ones spread.

  Clean H is Gamma(1, 0.15) (skewed towards 0), noisy H uniform on [1.5, 6].

  Args:
    noise_rate: fraction of noisy values.
    seed: NumPy seed.
    n: queue length.

  Returns:
    float32 array of shape [n], the clean values first.
  """
  rng = np.random.default_rng(seed)
  n_noisy = int(round(noise_rate * n))
  clean = rng.gamma(shape=1.0, scale=0.15, size=n - n_noisy)
  noisy = rng.uniform(1.5, 6.0, size=n_noisy)
  return np.concatenate([clean, noisy]).astype(np.float32)


def early_training_queue(seed, n=4096):
  """H = -log p of a queue from the first steps of training: one broad bump.

  The softmax probability of the given label, among 10 classes, of logits
  N(0, 0.6^2), the label's own raised by N(0.6, 0.6^2): the shape of the
  queue of a CIFAR-10 MLP at its first refit (median H about 2, 5% below 0.9,
  5% above 3.2). No clean and noisy modes yet; the mixture's best fit has two
  overlapping components near the median.

  Args:
    seed: NumPy seed.
    n: queue length.

  Returns:
    float32 array of shape [n].
  """
  rng = np.random.default_rng(seed)
  logits = rng.normal(0.0, 0.6, (n, 10))
  labels = rng.integers(0, 10, n)
  logits[np.arange(n), labels] += rng.normal(0.6, 0.6, n)
  log_p = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
  return (-log_p[np.arange(n), labels]).astype(np.float32)


def scale_mixture_queue(n_learned=150, seed=0, n=4096):
  """H of a queue early in training under heavy symmetric noise.

  The shape of a CIFAR-10 MLP's queue at 80% symmetric noise in its tenth
  epoch: a broad bump of H around 2.2, heavier-tailed than one Gaussian
  (70% N(2.245, 0.293^2), 30% N(2.163, 0.62^2)), and ``n_learned`` losses
  of a small group the network has learned, N(1.075, 0.31^2). EM's most
  likely fixed point is a scale mixture of the bump, whose wide "clean"
  component claims the highest losses, and the published fit stops near
  it and clips nothing; with the learned group another fixed point is
  ordered (its noise posterior rises with the loss) and clips.

  Returns:
    float32 array of shape [n], the bump first.
  """
  rng = np.random.default_rng(seed)
  wide = int(0.3 * n)
  return np.concatenate([
      rng.normal(2.245, 0.293, n - wide - n_learned),
      rng.normal(2.163, 0.62, wide),
      rng.normal(1.075, 0.31, n_learned)]).astype(np.float32)


def noise_jump_queues(n=4096):
  """Two queues of H between which the noise level jumps from 15% to 40%.

  Before: 85% clean H ~ Gamma(1, 0.15), 15% noisy H uniform on [6, 8].
  After: 60% clean, 30% noisy H uniform on [1, 2] (a new kind of noise, say
  a class the model now confuses), 10% still on [6, 8]. A two-component fit
  of the second queue has two modes: noisy component near 2.6 (the better
  one) or near 7, where EM started from the fit of the first queue stays.

  Args:
    n: queue length.

  Returns:
    ``(before, after)``, float32 arrays of shape [n].
  """
  def queue(seed, parts):
    rng = np.random.default_rng(seed)
    sizes = [int(round(f * n)) for f, _ in parts[1:]]
    values = [rng.gamma(1.0, 0.15, n - sum(sizes))]
    values += [rng.uniform(lo, hi, k) for k, (_, (lo, hi)) in zip(sizes, parts[1:])]
    return np.concatenate(values).astype(np.float32)
  before = queue(1, [(0.85, None), (0.15, (6.0, 8.0))])
  after = queue(2, [(0.6, None), (0.3, (1.0, 2.0)), (0.1, (6.0, 8.0))])
  return before, after


def sklearn_fit(h, reg_covar=1e-3):
  """A converged float64 scikit-learn fit of the two-component mixture.

  ``GaussianMixture`` with 5 k-means initialisations run to tol 1e-6, the
  most likely then continued (``warm_start``) to tol 1e-10, up to 5000
  iterations each: the answer `ogc_jax.fit_gmm` should reach. (Where the
  components overlap EM contracts slowly, at a rate near 0.99; the modes
  that the 5 starts reach differ in likelihood by far more than 1e-6, so
  polishing only the best gives the answer of all 5 run to 1e-10, in a
  third of the time.)

  Args:
    h: 1-D array of H values.
    reg_covar: added to each variance, as ``fit_gmm``'s ``reg_covar``.

  Returns:
    A `GMM` of float64 NumPy scalars, the lower-mean component as clean.
  """
  x = np.asarray(h, np.float64)[:, None]
  gm = GaussianMixture(2, reg_covar=reg_covar, tol=1e-6, max_iter=5000,
                       n_init=5, random_state=0).fit(x)
  gm.set_params(warm_start=True, tol=1e-10, n_init=1)
  return _as_gmm(gm.fit(x))


def sklearn_fit_from_split(h, threshold, reg_covar=1e-3, max_iter=10,
                           tol=1e-3):
  """scikit-learn's EM started from the hard split ``h > threshold``.

  ``GaussianMixture`` initialises from hard responsibilities (k-means
  labels by default); given the same split as ``weights_init``,
  ``means_init`` and ``precisions_init`` (the M-step of the split, with
  ``reg_covar``), it runs its own EM loop and stopping rule from there.

  Returns:
    ``(gmm, n_iter)``: a `GMM` of float64 NumPy scalars and the number of
    EM iterations scikit-learn took.
  """
  h = np.asarray(h, np.float64)
  upper = h > threshold
  means = np.array([h[~upper].mean(), h[upper].mean()])
  variances = np.array([h[~upper].var(), h[upper].var()]) + reg_covar
  weights = np.array([np.mean(~upper), np.mean(upper)])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    gm = GaussianMixture(2, reg_covar=reg_covar, max_iter=max_iter, tol=tol,
                         weights_init=weights, means_init=means[:, None],
                         precisions_init=(1 / variances)[:, None, None]
                         ).fit(h[:, None])
  return _as_gmm(gm), gm.n_iter_


def sklearn_fit_from_mixture(h, gmm, reg_covar=1e-3):
  """scikit-learn's float64 EM started at ``gmm``, to tol 1e-10.

  The fixed point of EM next to a given mixture: where a fit claims to be
  at a fixed point (``fit_gmm(fit="conservative")``), EM from it stays.

  Returns:
    A `GMM` of float64 NumPy scalars, the lower-mean component as clean.
  """
  g = {k: float(v) for k, v in zip(GMM._fields, gmm)}
  gm = GaussianMixture(
      2, reg_covar=reg_covar, tol=1e-10, max_iter=5000,
      weights_init=[1 - g["weight_noisy"], g["weight_noisy"]],
      means_init=[[g["mean_clean"]], [g["mean_noisy"]]],
      precisions_init=[[[1 / g["var_clean"]]], [[1 / g["var_noisy"]]]]
  ).fit(np.asarray(h, np.float64)[:, None])
  return _as_gmm(gm)


def two_means_threshold(h):
  """The optimal two-means split of 1-D data by brute force, in float64.

  Every split of the sorted data, scored by its within-cluster sum of
  squares computed directly.

  Returns:
    The largest value of the lower cluster.
  """
  s = np.sort(np.asarray(h, np.float64))
  n = len(s)
  best, best_k = np.inf, 1
  for k in range(1, n):
    sse = np.sum((s[:k] - s[:k].mean())**2) + np.sum((s[k:] - s[k:].mean())**2)
    if sse < best:
      best, best_k = sse, k
  return s[best_k - 1]


def _as_gmm(gm):
  """A fitted ``GaussianMixture`` as a `GMM`, the lower-mean component clean."""
  order = np.argsort(gm.means_.ravel())
  return GMM(mean_clean=gm.means_.ravel()[order[0]],
             var_clean=gm.covariances_.ravel()[order[0]],
             mean_noisy=gm.means_.ravel()[order[1]],
             var_noisy=gm.covariances_.ravel()[order[1]],
             weight_noisy=gm.weights_[order[1]])


def authors_fit(h, reg_covar=1e-3, random_state=0):
  """The authors' mixture fit: ``GaussianMixture(n_components=2, max_iter=10, reg_covar=1e-3)``.

  As their ``methods/tools.py`` calls it, otherwise scikit-learn's defaults
  (one k-means initialisation, tol 1e-3), on float64. They leave
  ``random_state`` unset (NumPy's global state); here it is fixed.

  Args:
    h: 1-D array of H values.
    reg_covar: added to each variance (the authors' 1e-3).
    random_state: seed of the k-means initialisation.

  Returns:
    A `GMM` of float64 NumPy scalars, the lower-mean component as clean.
  """
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    gm = GaussianMixture(n_components=2, max_iter=10, reg_covar=reg_covar,
                         random_state=random_state).fit(
                             np.asarray(h, np.float64)[:, None])
  return _as_gmm(gm)


def authors_threshold(gmm, derivative, learning_rate, epsilon=20.0,
                      grid=1000, steps=10):
  """The authors' threshold numerics: a grid in H and bisection in p.

  The expectations are means over a ``grid``-point grid of H, and p is found
  by ``steps`` bisection steps on [MIN_PROB, MAX_PROB] (their
  ``binary_search`` with the tolerance of their scripts, 1e-7 on R, which
  returns the upper end of the last bracket).

  Args:
    gmm: the mixture, as for `ratio`.
    derivative: ``|l'(p)|`` of the base loss, vectorised over NumPy arrays.
    learning_rate: the current learning rate eta.
    epsilon: OGC's epsilon.
    grid: number of grid points in H.
    steps: number of bisection steps.

  Returns:
    ``(p_threshold, tau)``.
  """
  gmm = _as_mapping(gmm)
  sample_h = np.linspace(MIN_H, MAX_H, grid)
  g = np.abs(derivative(np.exp(-sample_h)))
  dens = {}
  for name in ("clean", "noisy"):
    m, s = gmm["mean_" + name], math.sqrt(gmm["var_" + name])
    dens[name] = stats.truncnorm.pdf(sample_h, (MIN_H - m) / s, (MAX_H - m) / s, m, s)

  def r(p):
    tau = abs(derivative(p))
    c = np.minimum(g, tau)
    return ((dens["noisy"] * c).mean() / (dens["clean"] * c).mean()
            * dens["clean"].mean() / dens["noisy"].mean())

  # Their binary_search(MIN_PROB, MAX_PROB, R, target, tol=1e-7,
  # max_iter=steps, is_func_decrease=True).
  target = 1 + learning_rate * epsilon
  left, right = MIN_PROB, MAX_PROB
  if r(right) > target:  # even full clipping leaves R above the target
    return right, float(derivative(right))
  if r(left) < target:  # no clipping already meets it
    return left, float(derivative(left))
  for _ in range(steps):
    mid = (left + right) / 2
    val = r(mid)
    if abs(target - val) < 1e-7:
      return mid, float(derivative(mid))
    if val < target:
      right = mid
    else:
      left = mid
  return right, float(derivative(right))


def authors_pipeline(h, derivative, learning_rate, reg_covar=1e-3):
  """One refit as the authors do it: `authors_fit`, then `authors_threshold`.

  Returns:
    ``(p_threshold, tau)``.
  """
  return authors_threshold(authors_fit(h, reg_covar), derivative, learning_rate)
