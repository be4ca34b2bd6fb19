"""Tests of the threshold solver against the float64 SciPy reference."""

import functools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized
import pytest

from ogc_jax import losses
from ogc_jax.gmm import GMM
from ogc_jax.threshold import (MAX_PROB, MIN_PROB, derivative_magnitude,
                               noise_to_clean_ratio, solve_threshold)
from ogc_jax import testing as ref

# (base loss, its float64 |l'(p)|) by the names of losses.BASE_LOSSES.
BASE_LOSSES = {name: (losses.BASE_LOSSES[name], derivative)
               for name, derivative in ref.DERIVATIVES.items()}

# From well separated to overlapping.
MIXTURES = [
    dict(mean_clean=0.02, var_clean=0.001, mean_noisy=6.0, var_noisy=3.0),
    dict(mean_clean=0.05, var_clean=0.002, mean_noisy=4.0, var_noisy=1.5),
    dict(mean_clean=0.2, var_clean=0.05, mean_noisy=2.5, var_noisy=1.0),
    dict(mean_clean=0.8, var_clean=0.5, mean_noisy=1.8, var_noisy=0.8),
]


# Component means outside the feasible range [MIN_H, MAX_H] (H < 0 would be
# p > 1): the public solver accepts any mixture, and truncation then puts the
# mode at the end of the range.
OUTSIDE_MIXTURES = [
    (dict(mean_clean=-0.5, var_clean=0.25, mean_noisy=3.0, var_noisy=1.0), 0.1),
    (dict(mean_clean=-1.0, var_clean=1.0, mean_noisy=4.0, var_noisy=2.0), 0.01),
    (dict(mean_clean=-0.3, var_clean=0.0016, mean_noisy=3.0, var_noisy=1.0), 0.01),
    (dict(mean_clean=0.05, var_clean=0.01, mean_noisy=18.0, var_noisy=4.0), 0.001),
]


def as_gmm(m, weight_noisy=0.4):
  return GMM(**{k: jnp.float32(v) for k, v in m.items()},
             weight_noisy=jnp.float32(weight_noisy))


class SolveThresholdTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True)
  @parameterized.product(loss=list(BASE_LOSSES), lr=[0.1, 0.01, 0.001])
  def test_matches_float64_reference(self, loss, lr):
    base_loss, derivative = BASE_LOSSES[loss]
    solve = self.variant(functools.partial(solve_threshold, base_loss=base_loss))
    for mixture in MIXTURES:
      p, tau = solve(as_gmm(mixture), learning_rate=lr)
      ref_p, ref_tau = ref.threshold(mixture, derivative, lr)
      # The method asks for 1%; the quadrature gives about 1e-5.
      np.testing.assert_allclose(tau, ref_tau, rtol=1e-3, err_msg=str(mixture))
      np.testing.assert_allclose(p, ref_p, rtol=1e-3, err_msg=str(mixture))

  @parameterized.product(loss=list(BASE_LOSSES), case=list(range(len(OUTSIDE_MIXTURES))))
  def test_means_outside_the_feasible_range(self, loss, case):
    base_loss, derivative = BASE_LOSSES[loss]
    mixture, lr = OUTSIDE_MIXTURES[case]
    p, tau = solve_threshold(as_gmm(mixture), base_loss, lr)
    ref_p, ref_tau = ref.threshold(mixture, derivative, lr)
    np.testing.assert_allclose(tau, ref_tau, rtol=1e-3, err_msg=str(mixture))
    np.testing.assert_allclose(p, ref_p, rtol=1e-3, err_msg=str(mixture))

  @chex.variants(without_jit=True)
  def test_matches_float64_reference_op_by_op(self):
    solve = self.variant(functools.partial(solve_threshold,
                                           base_loss=losses.cross_entropy))
    for mixture in MIXTURES:
      _, tau = solve(as_gmm(mixture), learning_rate=0.01)
      np.testing.assert_allclose(
          tau, ref.threshold(mixture, ref.ce_derivative, 0.01)[1], rtol=1e-3)

  @parameterized.parameters(*BASE_LOSSES)
  def test_ratio_matches_reference_and_meets_target(self, loss):
    base_loss, derivative = BASE_LOSSES[loss]
    for mixture in MIXTURES[1:3]:
      for p_t in (1e-3, 0.1, 0.5, 0.9):
        np.testing.assert_allclose(
            noise_to_clean_ratio(as_gmm(mixture), base_loss, p_t),
            ref.ratio(mixture, derivative, p_t), rtol=1e-4)
      p, _ = solve_threshold(as_gmm(mixture), base_loss, 0.01)
      np.testing.assert_allclose(
          noise_to_clean_ratio(as_gmm(mixture), base_loss, p), 1.2, rtol=1e-4)

  def test_no_clipping_when_target_already_met(self):
    # Identical components: R = 1 <= 1 + lr * epsilon for any threshold.
    same = dict(mean_clean=1.0, var_clean=0.5, mean_noisy=1.0, var_noisy=0.5)
    p, tau = solve_threshold(as_gmm(same), losses.cross_entropy, 0.1)
    np.testing.assert_allclose(p, MIN_PROB, rtol=1e-6)
    np.testing.assert_allclose(tau, 1 / MIN_PROB, rtol=1e-5)
    # A large learning rate makes the target reachable without clipping too.
    p, _ = solve_threshold(as_gmm(MIXTURES[2]), losses.cross_entropy, 1e4)
    np.testing.assert_allclose(p, MIN_PROB, rtol=1e-6)

  def test_derivative_magnitude_closed_forms(self):
    p = jnp.array([1e-7, 0.01, 0.3, 0.99, MAX_PROB])
    np.testing.assert_allclose(derivative_magnitude(losses.cross_entropy, p),
                               ref.ce_derivative(np.float64(p)), rtol=1e-6)
    np.testing.assert_allclose(derivative_magnitude(losses.focal, p),
                               ref.focal_derivative(np.float64(p)), rtol=1e-3)
    np.testing.assert_allclose(
        derivative_magnitude(losses.generalized_cross_entropy, p),
        ref.gce_derivative(np.float64(p)), rtol=1e-5)

  @pytest.mark.slow
  def test_any_jnp_base_loss(self):
    """A base loss never seen before: l(p) = 1 - sqrt(p), |l'| = p^-0.5 / 2."""
    sqrt_loss = lambda p: 1.0 - jnp.sqrt(p)
    derivative = lambda p: 0.5 * p ** -0.5
    mixture = MIXTURES[1]
    _, tau = solve_threshold(as_gmm(mixture), sqrt_loss, 0.01)
    np.testing.assert_allclose(tau, ref.threshold(mixture, derivative, 0.01)[1],
                               rtol=1e-3)


_solve_jit = jax.jit(solve_threshold, static_argnums=1)
_ratio_jit = jax.jit(noise_to_clean_ratio, static_argnums=1)

# Means from below H = 0 (p > 1) to above MAX_H = 16.1 (p < 1e-7): the solver
# must treat a mean outside the feasible range like any other.
_MEAN_CLEAN = st.floats(-2.0, 2.0)
_GAP = st.floats(0.0, 18.0)


@hypothesis.settings(max_examples=25, deadline=None, derandomize=True)
@hypothesis.given(
    mean_clean=_MEAN_CLEAN, std_clean=st.floats(0.04, 1.0),
    gap=_GAP, std_noisy=st.floats(0.04, 3.0),
    lr=st.floats(1e-4, 0.5), shrink=st.floats(0.05, 0.9),
    loss=st.sampled_from(list(BASE_LOSSES)))
def test_tau_finite_bounded_and_monotone_in_learning_rate(
    mean_clean, std_clean, gap, std_noisy, lr, shrink, loss):
  base_loss = BASE_LOSSES[loss][0]
  gmm = GMM(mean_clean=jnp.float32(mean_clean), var_clean=jnp.float32(std_clean**2),
            mean_noisy=jnp.float32(mean_clean + gap),
            var_noisy=jnp.float32(std_noisy**2), weight_noisy=jnp.float32(0.3))
  p, tau = _solve_jit(gmm, base_loss, lr)
  _, tau_small = _solve_jit(gmm, base_loss, lr * shrink)
  lower = float(derivative_magnitude(base_loss, MAX_PROB))
  upper = float(derivative_magnitude(base_loss, MIN_PROB))
  assert np.isfinite(tau) and np.isfinite(p)
  assert lower * (1 - 1e-5) <= tau <= upper * (1 + 1e-5)
  assert MIN_PROB * (1 - 1e-6) <= p <= MAX_PROB
  # A smaller learning rate asks for a ratio closer to 1: clip no less.
  assert tau_small <= tau * (1 + 1e-5)


@hypothesis.settings(max_examples=25, deadline=None, derandomize=True)
@hypothesis.given(
    mean_clean=_MEAN_CLEAN, std_clean=st.floats(0.04, 1.0),
    gap=_GAP, std_noisy=st.floats(0.04, 3.0), h_threshold=st.floats(0.0, 16.0),
    loss=st.sampled_from(list(BASE_LOSSES)))
def test_ratio_matches_float64_reference(
    mean_clean, std_clean, gap, std_noisy, h_threshold, loss):
  base_loss, derivative = BASE_LOSSES[loss]
  mixture = dict(mean_clean=mean_clean, var_clean=std_clean**2,
                 mean_noisy=mean_clean + gap, var_noisy=std_noisy**2)
  # float32 mixture parameters, so both sides integrate the same mixture.
  mixture = {k: float(np.float32(v)) for k, v in mixture.items()}
  p_threshold = float(np.float32(np.exp(-h_threshold)))
  ratio = _ratio_jit(as_gmm(mixture), base_loss, jnp.float32(p_threshold))
  np.testing.assert_allclose(ratio, ref.ratio(mixture, derivative, p_threshold),
                             rtol=1e-4, err_msg=str(mixture))


if __name__ == "__main__":
  absltest.main()


@pytest.mark.parametrize("learning_rate, epsilon, message", [
    (-0.1, 20.0, "`learning_rate` must be a finite scalar >= 0"),
    (float("nan"), 20.0, "`learning_rate` must be a finite scalar >= 0"),
    (np.array([0.1, 0.01]), 20.0, "`learning_rate` must be a finite scalar"),
    (0.1, -1.0, "`epsilon` must be a finite scalar >= 0"),
    (0.1, float("inf"), "`epsilon` must be a finite scalar >= 0"),
])
def test_solve_threshold_checks_the_target(learning_rate, epsilon, message):
  # These gave the clip-everything threshold before; traced, NaN (which OGC
  # rejects as a refit), and a vector of rates is refused even when traced.
  gmm = GMM(*(jnp.float32(v) for v in (0.1, 0.01, 3.0, 1.0, 0.4)))
  with pytest.raises(ValueError, match=message):
    solve_threshold(gmm, losses.cross_entropy, learning_rate, epsilon)
  solve = jax.jit(lambda lr, eps: solve_threshold(gmm, losses.cross_entropy,
                                                  lr, eps))
  if np.ndim(learning_rate):
    with pytest.raises(ValueError, match="must be a scalar"):
      solve(jnp.asarray(learning_rate), epsilon)
  else:
    p_threshold, tau = solve(learning_rate, epsilon)
    assert np.isnan(p_threshold) and np.isnan(tau)
