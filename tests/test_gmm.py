"""Tests of the EM fit against scikit-learn."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest
from absl.testing import parameterized

import ogc_jax
from ogc_jax import losses
from ogc_jax import gmm as gmm_lib
from ogc_jax.gmm import (GMM, MAX_ITER, REG_COVAR, fit_gmm,
                         fit_gmm_counting_steps)
from ogc_jax import testing
from ogc_jax.testing import (early_training_queue, noise_jump_queues,
                             scale_mixture_queue,
                             realistic_queue, sklearn_fit)
from scipy import special
from scipy import stats
from sklearn.mixture import GaussianMixture

_FIELDS = ("mean_clean", "var_clean", "mean_noisy", "var_noisy", "weight_noisy")
# The fit most of these tests check; the default is the published one.
converged_fit = functools.partial(fit_gmm, fit="converged")


def ce_threshold(learning_rate=0.02):
  """``threshold_of`` of the conservative fit: OGC-CE's at this rate."""
  return lambda gmm: ogc_jax.solve_threshold(gmm, losses.cross_entropy,
                                             learning_rate)[0]


def fit_kwargs(fit):
  """The keyword arguments `fit_gmm` needs for ``fit`` besides ``h``."""
  return dict(fit=fit, threshold_of=ce_threshold()
              if fit in gmm_lib.THRESHOLD_FITS else None)


def mean_loglik(gmm, h):
  """Mean log-likelihood of ``h`` under ``gmm``, in float64 with SciPy."""
  g = {k: float(getattr(gmm, k)) for k in _FIELDS}
  h = np.asarray(h, np.float64)
  return float(np.mean(np.logaddexp(
      np.log1p(-g["weight_noisy"]) + stats.norm.logpdf(
          h, g["mean_clean"], np.sqrt(g["var_clean"])),
      np.log(g["weight_noisy"]) + stats.norm.logpdf(
          h, g["mean_noisy"], np.sqrt(g["var_noisy"])))))


class FitGMMTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((0, 0.2, 1.0, 1.0), (1, 0.5, 3.0, 0.5), (2, 0.8, 2.0, 0.3))
  def test_matches_sklearn_on_bimodal_samples(self, seed, weight, mean, std):
    rng = np.random.default_rng(seed)
    n = 3000
    n_noisy = int(weight * n)
    h = np.concatenate([rng.normal(0.0, 0.3, n - n_noisy),
                        rng.normal(mean, std, n_noisy)]).astype(np.float32)
    ours = self.variant(converged_fit)(h)
    ref = sklearn_fit(h)
    for field in ("mean_clean", "var_clean", "mean_noisy", "var_noisy", "weight_noisy"):
      np.testing.assert_allclose(getattr(ours, field), getattr(ref, field),
                                 rtol=2e-3, atol=2e-4, err_msg=field)

  @parameterized.parameters(0.15, 0.4, 0.8)
  def test_end_to_end_tau_within_2_percent_of_sklearn(self, noise_rate):
    h = realistic_queue(noise_rate, seed=int(noise_rate * 100))
    ours = jax.jit(converged_fit)(h)
    ref = jax.tree_util.tree_map(jnp.float32, sklearn_fit(h))
    for base_loss in (losses.cross_entropy, losses.focal,
                      losses.generalized_cross_entropy):
      solve = jax.jit(lambda g, lr: ogc_jax.solve_threshold(g, base_loss, lr)[1])
      for lr in (0.1, 0.01, 0.001):
        np.testing.assert_allclose(solve(ours, lr), solve(ref, lr), rtol=0.02)

  def test_warm_start_after_a_noise_jump_is_no_worse_than_cold(self):
    # The previous refit's fit is a candidate start of EM; after the noise
    # level jumps it must not hold EM in a worse mode than cold starts find.
    before, after = noise_jump_queues()
    previous = jax.jit(converged_fit)(before)
    warm = jax.jit(converged_fit)(after, previous)
    cold = jax.jit(converged_fit)(after)
    # The trap is real: EM from the previous fit alone stays in a worse mode.
    theta = jax.lax.fori_loop(
        0, MAX_ITER, lambda _, t: gmm_lib._em_step(after, t, REG_COVAR)[0],
        gmm_lib._as_theta(previous, jnp.float32))
    stuck = gmm_lib._as_gmm(theta)
    self.assertGreater(float(stuck.mean_noisy), 6.0)
    self.assertLess(mean_loglik(stuck, after), mean_loglik(cold, after) - 0.1)
    self.assertLess(float(warm.mean_noisy), 3.0)
    self.assertGreaterEqual(mean_loglik(warm, after),
                            mean_loglik(cold, after) - 1e-6)
    chex.assert_trees_all_close(warm, cold, rtol=2e-3, atol=2e-4)

  @parameterized.parameters(0.15, 0.4, 0.8)
  def test_warm_start_from_the_last_refit_gives_the_converged_fit(
      self, noise_rate):
    # Between refits the queue is replaced, its distribution drifts slowly.
    fit = jax.jit(functools.partial(fit_gmm_counting_steps, fit="converged"))
    previous, _ = fit(realistic_queue(noise_rate, seed=1))
    h = realistic_queue(noise_rate, seed=2)
    warm, warm_steps = fit(h, previous)
    cold, _ = fit(h)
    ref = sklearn_fit(h)
    for field in _FIELDS:
      np.testing.assert_allclose(getattr(warm, field), getattr(ref, field),
                                 rtol=2e-3, atol=2e-4, err_msg=field)
    chex.assert_trees_all_close(warm, cold, rtol=1e-4, atol=1e-5)
    self.assertLess(int(warm_steps), MAX_ITER)  # every start converged

  @parameterized.parameters(0, 1, 2)
  def test_early_in_training_the_most_likely_fixed_point_is_found(self, seed):
    # One broad bump of losses: the start with the highest likelihood (a
    # range split) leads EM to a worse mode than the two-means start, so
    # choosing a start by its likelihood is not enough; scikit-learn's best
    # of 5 k-means starts is the reference.
    h = early_training_queue(seed)
    starts = gmm_lib._initial_params(jnp.asarray(h), REG_COVAR)
    best_start = int(jnp.argmax(gmm_lib._mean_logliks(jnp.asarray(h), starts)))
    ends, _, _ = gmm_lib._fixed_points(
        jnp.asarray(h), starts[best_start:best_start + 1], REG_COVAR,
        MAX_ITER, gmm_lib.TOL)
    from_best_start = gmm_lib._as_gmm(ends[0])
    ours, ref = jax.jit(converged_fit)(h), sklearn_fit(h)
    self.assertLess(mean_loglik(from_best_start, h), mean_loglik(ref, h) - 5e-3)
    self.assertGreaterEqual(mean_loglik(ours, h), mean_loglik(ref, h) - 1e-6)
    # The likelihood is flat along the overlapping components' ridge: EM
    # contracts along it at a rate of 0.993 and the float32 likelihood stops
    # changing 5-10% short of the fixed point; the Newton steps on EM's
    # fixed-point equation reach it.
    for field in _FIELDS:
      np.testing.assert_allclose(getattr(ours, field), getattr(ref, field),
                                 rtol=1e-4, err_msg=field)

  def test_invalid_init_is_never_chosen(self):
    # OGC's state holds an all-zero GMM before its first fit.
    h = realistic_queue(0.4, seed=3)
    zeros = GMM(**{k: jnp.float32(0) for k in _FIELDS})
    chex.assert_trees_all_equal(jax.jit(converged_fit)(h, zeros),
                                jax.jit(converged_fit)(h))
    nan = GMM(**{k: jnp.float32(jnp.nan) for k in _FIELDS})
    chex.assert_trees_all_equal(jax.jit(converged_fit)(h, nan),
                                jax.jit(converged_fit)(h))

  def test_deterministic_and_order_invariant(self):
    h = realistic_queue(0.4, seed=3)
    a = jax.jit(converged_fit)(h)
    b = jax.jit(converged_fit)(h.copy())
    chex.assert_trees_all_equal(a, b)
    shuffled = np.random.default_rng(0).permutation(h)
    chex.assert_trees_all_close(a, converged_fit(shuffled), rtol=1e-4, atol=1e-5)

  def test_all_equal_values_give_identical_components(self):
    g = converged_fit(jnp.full((4096,), 0.7))
    np.testing.assert_allclose([g.mean_clean, g.mean_noisy], [0.7, 0.7], rtol=1e-5)
    np.testing.assert_allclose([g.var_clean, g.var_noisy], [1e-3, 1e-3], rtol=1e-4)
    self.assertTrue(np.isfinite(g.weight_noisy))

  def test_variance_floor(self):
    h = jnp.concatenate([jnp.zeros(100), jnp.ones(50)])
    g = converged_fit(h, reg_covar=0.01)
    np.testing.assert_allclose([g.var_clean, g.var_noisy], [0.01, 0.01], rtol=1e-4)
    np.testing.assert_allclose(g.weight_noisy, 1 / 3, rtol=1e-5)

  def test_unimodal_clean_queue_is_finite(self):
    h = np.random.default_rng(0).gamma(1.0, 0.05, 4096).astype(np.float32)
    g = converged_fit(h)
    for leaf in jax.tree_util.tree_leaves(g):
      self.assertTrue(np.isfinite(leaf))
    self.assertLessEqual(float(g.mean_clean), float(g.mean_noisy))

  def test_bad_shapes(self):
    with pytest.raises(ValueError, match="`h` to be 1-D"):
      converged_fit(jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="at least 2"):
      converged_fit(jnp.ones((1,)))

  @parameterized.parameters(
      dict(max_iter=0), dict(max_iter=-3), dict(max_iter=2.5),
      dict(max_iter=True), dict(tol=-1e-3), dict(tol=float("nan")),
      dict(tol="1e-3"))
  def test_budget_and_tolerance_are_checked(self, **kwargs):
    (name, value), = kwargs.items()
    for fit in gmm_lib.FITS:
      with pytest.raises(ValueError, match=f"`{name}` must be .*got {value!r}"):
        fit_gmm(jnp.linspace(0.0, 1.0, 16), **fit_kwargs(fit), **kwargs)

  @parameterized.parameters(*gmm_lib.FITS)
  def test_non_finite_losses(self, fit):
    # -log p of a p that underflowed to 0 is inf. Concrete: refused, naming
    # the values and the remedy. Traced: left out of the fit, which is then
    # the fit of the finite values (scikit-learn's on them, to 1e-4).
    h = realistic_queue(0.4, seed=3)
    bad = h.copy()
    bad[[5, 700]] = [np.inf, np.nan]
    with pytest.raises(ValueError, match=r"2 non-finite .*inf at 5, nan at 700"
                       r".*feasible_probability"):
      fit_gmm(bad, **fit_kwargs(fit))
    traced = jax.jit(functools.partial(fit_gmm, **fit_kwargs(fit)))(bad)
    kept = np.delete(h, [5, 700])
    chex.assert_trees_all_close(traced, fit_gmm(kept, **fit_kwargs(fit)),
                                rtol=2e-5)
    for field in _FIELDS:
      self.assertTrue(np.isfinite(getattr(traced, field)), field)
    if fit == "published":  # in float64: scikit-learn's EM on the rest
      with jax.enable_x64(True):
        ours = jax.jit(functools.partial(fit_gmm, fit=fit))(
            jnp.asarray(bad, jnp.float64))
        split = float(gmm_lib._two_means_threshold(
            jnp.asarray(kept, jnp.float64)))
      ref, _ = testing.sklearn_fit_from_split(kept.astype(np.float64), split)
      for field in _FIELDS:
        np.testing.assert_allclose(getattr(ours, field), getattr(ref, field),
                                   rtol=1e-9, err_msg=field)

  @parameterized.parameters(0.0, -1e-3, float("nan"))
  def test_reg_covar_must_be_positive(self, reg_covar):
    # Without a floor, a queue of equal values has variance 0 and NaN fits.
    with pytest.raises(ValueError, match="`reg_covar` must be > 0, .*got"):
      converged_fit(jnp.full((64,), 0.7), reg_covar=reg_covar)


class NoisyPosteriorTest(parameterized.TestCase):

  @parameterized.parameters(0.15, 0.4, 0.8)
  def test_equals_sklearn_predict_proba_in_float64(self, noise_rate):
    h = realistic_queue(noise_rate, seed=7).astype(np.float64)
    gm = GaussianMixture(2, reg_covar=REG_COVAR, random_state=0).fit(h[:, None])
    noisy = int(np.argmax(gm.means_.ravel()))
    ref = gm.predict_proba(h[:, None])[:, noisy]
    with jax.enable_x64(True):
      gmm = GMM(*(jnp.float64(v) for v in (
          gm.means_.ravel()[1 - noisy], gm.covariances_.ravel()[1 - noisy],
          gm.means_.ravel()[noisy], gm.covariances_.ravel()[noisy],
          gm.weights_[noisy])))
      ours = np.asarray(jax.jit(ogc_jax.noisy_posterior)(gmm, h))
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-14)
    self.assertTrue(0.0 < ref.min() < 0.5 < ref.max() < 1.0 + 1e-12)

  def test_log_odds_rank_where_the_posterior_saturates(self):
    # The posterior is the sigmoid of the log-odds, equal to SciPy's float64
    # log-odds; past log-odds of about 17 the float32 posterior is exactly
    # 1 and ties, where the log-odds keep every distinct loss apart.
    gmm = GMM(*(jnp.float32(v) for v in (0.1, 0.01, 3.0, 1.0, 0.4)))
    h = np.linspace(0.0, 16.0, 2001, dtype=np.float32)
    ref = (np.log(0.4) + stats.norm.logpdf(h.astype(np.float64), 3.0, 1.0)
           - np.log(0.6) - stats.norm.logpdf(h.astype(np.float64), 0.1, 0.1))
    log_odds = np.asarray(ogc_jax.noisy_log_odds(gmm, h))
    np.testing.assert_allclose(log_odds, ref, rtol=1e-5, atol=1e-3)
    posterior = np.asarray(ogc_jax.noisy_posterior(gmm, h))
    np.testing.assert_allclose(posterior, special.expit(ref), atol=1e-6)
    self.assertGreater(np.sum(posterior == 1.0), 1500)
    self.assertEqual(len(np.unique(log_odds)), len(h))

  def test_non_finite_losses(self):
    gmm = GMM(*(jnp.float32(v) for v in (0.1, 0.01, 3.0, 1.0, 0.4)))
    for f in (ogc_jax.noisy_log_odds, ogc_jax.noisy_posterior):
      with pytest.raises(ValueError, match=r"1 non-finite .*inf at 1"):
        f(gmm, np.array([1.0, np.inf], np.float32))
    # Traced: an infinite loss gets the limit (the wider component wins),
    # a NaN loss NaN, and the others are untouched.
    h = jnp.array([1.0, jnp.inf, jnp.nan])
    log_odds = np.asarray(jax.jit(ogc_jax.noisy_log_odds)(gmm, h))
    self.assertEqual(log_odds[1], np.inf)
    self.assertTrue(np.isnan(log_odds[2]))
    np.testing.assert_allclose(log_odds[0], ogc_jax.noisy_log_odds(gmm, h[:1]))
    narrow_noisy = gmm._replace(var_noisy=jnp.float32(0.001))
    self.assertEqual(
        float(jax.jit(ogc_jax.noisy_log_odds)(narrow_noisy, h)[1]), -np.inf)
    self.assertEqual(float(jax.jit(ogc_jax.noisy_posterior)(gmm, h)[1]), 1.0)

  def test_keeps_the_shape_and_dtype(self):
    gmm = jax.jit(converged_fit)(realistic_queue(0.4, seed=8))
    h = jnp.asarray(realistic_queue(0.4, seed=9)[:24].reshape(4, 6))
    post = ogc_jax.noisy_posterior(gmm, h)
    self.assertEqual(post.shape, (4, 6))
    self.assertEqual(post.dtype, jnp.float32)


def bump_and_learned_queue(n_learned=400):
  """One broad bump of losses, heavy-tailed, and a small group learned.

  3,000 losses N(2.25, 0.1^2) and 1,000 N(2.4, 0.35^2) (the broad bump of
  early training, heavier-tailed than one Gaussian), ``n_learned`` N(1.0,
  0.2^2). EM's most likely fixed point is a scale mixture, a narrow and a
  wide component on the bump, whose "clean" (wide) component claims the
  highest losses; another splits off the learned group.
  """
  rng = np.random.default_rng(0)
  return np.concatenate([rng.normal(2.25, 0.1, 3000),
                         rng.normal(2.4, 0.35, 1000),
                         rng.normal(1.0, 0.2, n_learned)]).astype(np.float32)


def noisy_log_odds_f64(gmm, h):
  """log w N_noisy(h) - log (1 - w) N_clean(h), float64 with SciPy."""
  g = {k: float(getattr(gmm, k)) for k in _FIELDS}
  return (np.log(g["weight_noisy"]) + stats.norm.logpdf(
      h, g["mean_noisy"], np.sqrt(g["var_noisy"]))
          - np.log1p(-g["weight_noisy"]) - stats.norm.logpdf(
              h, g["mean_clean"], np.sqrt(g["var_clean"])))


def is_em_fixed_point(gmm, h, rtol=2e-3):
  """Whether scikit-learn's float64 EM, started at ``gmm``, stays there."""
  ref = testing.sklearn_fit_from_mixture(h, gmm, reg_covar=REG_COVAR)
  return np.allclose([float(getattr(ref, k)) for k in _FIELDS],
                     [float(getattr(gmm, k)) for k in _FIELDS],
                     rtol=rtol, atol=1e-4)


class FixedPointRuleTest(parameterized.TestCase):
  """``fit="conservative"``: the tightest threshold of an ordered fixed point."""

  def test_ordered_is_a_posterior_rising_up_to_the_largest_loss(self):
    # Against a float64 grid from the clean mean to the top of the queue,
    # on random mixtures (wider or narrower noisy components) and tops.
    rng = np.random.default_rng(0)
    thetas, tops, expected = [], [], []
    for _ in range(300):
      means = np.sort(rng.uniform(0.0, 4.0, 2))
      variances = rng.uniform(0.01, 2.0, 2)
      weight = rng.uniform(0.05, 0.95)
      top = means[1] + rng.uniform(0.0, 6.0)
      gmm = GMM(means[0], variances[0], means[1], variances[1], weight)
      grid = np.linspace(means[0], top, 4001)
      rises = np.all(np.diff(noisy_log_odds_f64(gmm, grid)) >= -1e-9)
      thetas.append([means[0], means[1], variances[0], variances[1], weight])
      tops.append(top)
      expected.append(rises)
    got = [bool(gmm_lib._ordered(jnp.asarray([0.0, t]), jnp.asarray([th]))[0])
           for th, t in zip(thetas, tops)]
    self.assertEqual(got, expected)
    self.assertGreater(sum(expected), 50)  # both kinds are drawn
    self.assertLess(sum(expected), 250)

  def test_conservative_keeps_the_tightest_ordered_fixed_point(self):
    # The most likely fixed point of the bump is a scale mixture, not
    # ordered, with no clipping; the conservative fit splits off the
    # learned group.
    h = bump_and_learned_queue()
    threshold_of = ce_threshold()
    fits = {fit: fit_gmm(h, **fit_kwargs(fit))
            for fit in ("converged", "conservative")}
    p = {fit: float(threshold_of(gmm)) for fit, gmm in fits.items()}
    self.assertEqual(p["converged"], np.float32(1e-7))  # no clipping
    self.assertGreater(p["conservative"], 0.05)
    self.assertLess(noisy_log_odds_f64(fits["converged"], h.max())
                    - noisy_log_odds_f64(fits["converged"], 2.6), 0)
    grid = np.linspace(float(fits["conservative"].mean_clean), h.max(), 1001)
    self.assertTrue(np.all(np.diff(
        noisy_log_odds_f64(fits["conservative"], grid)) >= 0))
    self.assertLess(mean_loglik(fits["conservative"], h),
                    mean_loglik(fits["converged"], h))
    for gmm in fits.values():
      self.assertTrue(is_em_fixed_point(gmm, h))
    # The learned group is its clean component (400 of 4,400 losses).
    self.assertAlmostEqual(float(fits["conservative"].mean_clean), 1.02,
                           delta=0.02)
    self.assertAlmostEqual(float(fits["conservative"].weight_noisy),
                           4000 / 4400, delta=0.01)
    # Every other ordered fixed point the starts reach is looser.
    hj = jnp.asarray(h)
    ends, _, _ = gmm_lib._fixed_points(
        hj, gmm_lib._initial_params(hj, REG_COVAR), REG_COVAR, MAX_ITER,
        gmm_lib.TOL)
    ordered = np.asarray(gmm_lib._ordered(hj, ends))
    self.assertEqual(p["conservative"], max(
        float(threshold_of(gmm_lib._as_gmm(theta)))
        for theta, o in zip(ends, ordered) if o))

  def test_a_component_of_under_two_samples_is_not_a_split(self):
    # Early in training one start ends with a "clean" component of almost
    # no weight: ordered, and its threshold the tightest, but degenerate.
    h = jnp.asarray(early_training_queue(0))
    threshold_of = ce_threshold()
    ends, logliks, _ = gmm_lib._fixed_points(
        h, gmm_lib._initial_params(h, REG_COVAR), REG_COVAR, MAX_ITER,
        gmm_lib.TOL)
    counts = np.minimum(ends[:, 4], 1 - ends[:, 4]) * h.shape[0]
    p = np.array([float(threshold_of(gmm_lib._as_gmm(t))) for t in ends])
    ordered = np.asarray(gmm_lib._ordered(h, ends))
    degenerate = ordered & (counts < 2)
    self.assertTrue(np.any(degenerate))
    self.assertGreater(p[degenerate].max(), p[~degenerate].max())
    chosen = int(gmm_lib._most_conservative(h, ends, logliks, None,
                                            threshold_of))
    self.assertGreaterEqual(counts[chosen], 2)
    chex.assert_trees_all_equal(
        fit_gmm(h, **fit_kwargs("conservative")), converged_fit(h))

  def test_without_an_ordered_fixed_point_the_most_likely_is_kept(self):
    # Two scale mixtures of the bump (neither ordered) and an invalid end.
    h = jnp.asarray(bump_and_learned_queue())
    scale = gmm_lib._as_theta(converged_fit(h), h.dtype)
    wider = scale.at[2].multiply(1.5)
    ends = jnp.stack([wider, scale, jnp.zeros(5)])
    self.assertFalse(np.any(np.asarray(gmm_lib._ordered(h, ends))))
    logliks = gmm_lib._mean_logliks(h, ends)
    self.assertEqual(int(jnp.argmax(logliks)), 1)
    self.assertEqual(int(gmm_lib._most_conservative(
        h, ends, logliks, None, ce_threshold())), 1)

  def test_conservative_clips_where_the_likeliest_mixture_is_a_scale_one(
      self):
    # Early under heavy noise the published fit stops near the scale
    # mixture and the converged fit is it: both call the highest losses
    # clean and clip nothing; the conservative fit splits off the learned
    # group and clips.
    h = scale_mixture_queue()
    threshold_of = ce_threshold()
    for fit in ("published", "converged"):
      gmm = fit_gmm(h, fit=fit)
      self.assertFalse(bool(gmm_lib.is_ordered(gmm, h)), fit)
      grid = np.linspace(float(gmm.mean_clean), h.max(), 1001)
      self.assertFalse(np.all(np.diff(noisy_log_odds_f64(gmm, grid)) >= 0))
      self.assertEqual(float(threshold_of(gmm)), np.float32(1e-7), fit)
    conservative = fit_gmm(h, **fit_kwargs("conservative"))
    self.assertTrue(bool(gmm_lib.is_ordered(conservative, h)))
    self.assertGreater(float(threshold_of(conservative)), 0.2)  # it clips
    self.assertTrue(is_em_fixed_point(conservative, h))

  def test_threshold_of_goes_with_the_conservative_fit_only(self):
    h = realistic_queue(0.4, seed=1)
    for fit in gmm_lib.THRESHOLD_FITS:
      with pytest.raises(ValueError, match="need `threshold_of`.*got"
                         f" fit='{fit}' with threshold_of=None"):
        fit_gmm(h, fit=fit)
    with pytest.raises(ValueError, match="got fit='converged' with threshold_of"):
      fit_gmm(h, fit="converged", threshold_of=ce_threshold())


class PublishedFitTest(chex.TestCase, parameterized.TestCase):
  """``fit="published"``: the authors' scikit-learn fit, made deterministic."""

  @parameterized.parameters(0.15, 0.4, 0.8, None)
  def test_two_means_split_is_the_optimal_one(self, noise_rate):
    h = (early_training_queue(3, n=400) if noise_rate is None
         else realistic_queue(noise_rate, seed=4, n=400))
    with jax.enable_x64(True):
      ours = gmm_lib._two_means_threshold(jnp.asarray(h, jnp.float64))
    self.assertEqual(float(ours), float(testing.two_means_threshold(h)))

  @parameterized.parameters(np.float16, np.float32, np.float64)
  def test_the_integer_key_sort_is_numpy_sort(self, dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.0, 3.0, 500), rng.exponential(1.0, 500),
                        [0.0, -0.0, 0.0, np.inf, -np.inf, 1e-30, -1e-30,
                         np.finfo(dtype).max, np.finfo(dtype).tiny]])
    x = rng.permutation(x).astype(dtype)
    with jax.enable_x64(dtype == np.float64):
      ours = np.asarray(gmm_lib._sort(jnp.asarray(x)))
    self.assertEqual(ours.dtype, dtype)
    np.testing.assert_array_equal(ours, np.sort(x))
    # Signed zeros: every -0 before every +0, as the integer order has them.
    zeros = np.signbit(ours[ours == 0])
    self.assertTrue(np.all(zeros[:np.sum(zeros)]))

  @parameterized.parameters(0.15, 0.4, 0.8, None)
  def test_matches_sklearn_from_the_same_split_in_float64(self, noise_rate):
    h = (early_training_queue(5) if noise_rate is None
         else realistic_queue(noise_rate, seed=5)).astype(np.float64)
    with jax.enable_x64(True):
      h64 = jnp.asarray(h, jnp.float64)
      ours, steps = jax.jit(functools.partial(
          fit_gmm_counting_steps, fit="published"))(h64)
      split = float(gmm_lib._two_means_threshold(h64))
    ref, n_iter = testing.sklearn_fit_from_split(h, split)
    self.assertEqual(int(steps), n_iter)
    self.assertLessEqual(int(steps), gmm_lib.PUBLISHED_MAX_ITER)
    for field in _FIELDS:
      np.testing.assert_allclose(getattr(ours, field), getattr(ref, field),
                                 rtol=1e-9, err_msg=field)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.15, 0.4)
  def test_matches_the_authors_fit_in_float32(self, noise_rate):
    # Their k-means reaches the optimal split on these queues.
    h = realistic_queue(noise_rate, seed=6)
    ours = self.variant(functools.partial(fit_gmm, fit="published"))(h)
    ref = testing.authors_fit(h)
    for field in _FIELDS:
      np.testing.assert_allclose(getattr(ours, field), getattr(ref, field),
                                 rtol=1e-4, atol=1e-6, err_msg=field)

  def test_it_stops_short_of_the_converged_fit(self):
    # Heavy noise: from the two-means split EM crosses a plateau of the
    # likelihood, where scikit-learn's tolerance stops it (after 4 steps),
    # with the clean component far from where EM converges.
    h = realistic_queue(0.8, seed=1)
    published, steps = fit_gmm_counting_steps(h, fit="published")
    converged = converged_fit(h)
    self.assertLessEqual(int(steps), gmm_lib.PUBLISHED_MAX_ITER)
    self.assertGreater(float(published.mean_clean), 1.0)
    self.assertLess(float(converged.mean_clean), 0.2)
    ten_more, _ = fit_gmm_counting_steps(h, fit="published", max_iter=300,
                                         tol=1e-7)
    chex.assert_trees_all_close(ten_more, converged, rtol=2e-3, atol=2e-4)

  def test_it_is_the_default(self):
    h = realistic_queue(0.4, seed=1)
    chex.assert_trees_all_equal(fit_gmm(h), fit_gmm(h, fit="published"))
    # ... and OGC's: a refit of the default weighting is the published one.
    probs = jnp.exp(-realistic_queue(0.4, seed=2)[:256])
    states = []
    for kwargs in ({}, {"fit": "published"}):
      weighting = ogc_jax.ogc_weights(losses.cross_entropy, update_period=1,
                                      queue_size=256, **kwargs)
      states.append(weighting.update(probs, weighting.init(), learning_rate=0.01)[1])
    self.assertEqual(int(states[0].num_threshold_updates), 1)
    chex.assert_trees_all_equal(*states)

  def test_a_warm_start_is_refused(self):
    h = realistic_queue(0.4, seed=1)
    with pytest.raises(ValueError, match="`init` .* applies to .*'converged'"):
      fit_gmm(h, fit_gmm(h), fit="published")
    with pytest.raises(ValueError, match="`init` .* applies to .*'converged'"):
      fit_gmm(h, converged_fit(h))  # the default fit is the published one

  def test_an_unknown_fit_is_refused(self):
    with pytest.raises(ValueError, match="`fit` must be one of .*'sklearn'"):
      fit_gmm(jnp.ones(8), fit="sklearn")


if __name__ == "__main__":
  absltest.main()
