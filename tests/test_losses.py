"""Tests for `ogc_jax.losses`: base losses of p, their registry, and p.

Values against closed forms in float64, derivatives by ``jax.grad`` against
the hand-written ones of `ogc_jax.testing`.
"""

import math

import jax
import numpy as np
import pytest
from scipy import special

from ogc_jax import baselines
from ogc_jax import losses
from ogc_jax import testing

# --- base losses and their registry -----------------------------------------

# Each registered base loss in float64, from its paper's formula.
_CLOSED_FORMS = {
    'ce': lambda p: -np.log(p),
    'focal': lambda p: -(1.0 - p)**0.5 * np.log(p),
    'gce': lambda p: (1.0 - p**0.7) / 0.7,
    'mae': lambda p: 1.0 - p,
    'taylor_ce': lambda p: (1.0 - p) + (1.0 - p)**2 / 2,
}
_P = np.array([1e-7, 1e-3, 0.1, 0.5, 0.9, 1.0 - 1e-7], np.float32)


def test_base_loss_registry():
  assert tuple(losses.BASE_LOSSES) == tuple(_CLOSED_FORMS)
  assert len(losses.BASE_LOSSES) == len(_CLOSED_FORMS)


def test_a_loss_has_one_name_in_losses_and_baselines():
  # A base loss of p that is also a baseline has the baseline's name.
  assert set(losses.BASE_LOSSES) <= set(baselines.LOSSES)
  # 'fl', focal's earlier name, still finds it (method ogc_fl of recorded
  # runs and sweep specs) but is not listed.
  assert 'fl' in losses.BASE_LOSSES
  assert losses.BASE_LOSSES['fl'] is losses.BASE_LOSSES['focal'] is losses.focal
  assert 'fl' not in list(losses.BASE_LOSSES)
  assert 'fl' not in dict(losses.BASE_LOSSES.items())
  with pytest.raises(KeyError):
    losses.BASE_LOSSES['focal_loss']  # pylint: disable=pointless-statement


@pytest.mark.parametrize('name', list(_CLOSED_FORMS))
def test_base_losses_match_closed_forms(name):
  out = losses.BASE_LOSSES[name](_P)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, _CLOSED_FORMS[name](_P.astype(np.float64)),
                             rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('name', list(testing.DERIVATIVES))
def test_derivatives_match_the_float64_references(name):
  # The references of the threshold tests (ogc_jax.testing) must describe
  # these very losses, defaults included.
  base_loss, derivative = losses.BASE_LOSSES[name], testing.DERIVATIVES[name]
  assert (losses.hyperparameters(base_loss)
          == losses.hyperparameters(derivative))
  p = _P[1:-1]
  np.testing.assert_allclose(np.abs(jax.vmap(jax.grad(base_loss))(p)),
                             derivative(p.astype(np.float64)), rtol=1e-4)


def test_hyperparameters_come_from_the_signature():
  assert losses.hyperparameters(losses.cross_entropy) == {}
  assert losses.hyperparameters(losses.focal) == {'gamma': 0.5}
  assert losses.hyperparameters(losses.taylor_cross_entropy) == {'order': 2}
  assert losses.hyperparameters(
      lambda logits, labels, alpha=1.0, *, beta=2: 0) == {'alpha': 1.0,
                                                          'beta': 2}


# --- PHuber: the fixed clipping of |dl/dp| -----------------------------------


@pytest.mark.parametrize('tau', [2.0, 10.0])
def test_phuber_ce_value_and_derivative(tau):
  threshold = 1.0 / tau
  below = np.array([0.0, 1e-30, 0.3 * threshold, 0.99 * threshold], np.float32)
  above = np.array([1.01 * threshold, 0.5 * (1 + threshold), 1.0], np.float32)
  dl_dp = jax.vmap(jax.grad(losses.phuber_cross_entropy), (0, None))
  np.testing.assert_allclose(dl_dp(below, tau), -tau, rtol=1e-6)
  np.testing.assert_allclose(dl_dp(above, tau), -1.0 / above, rtol=1e-6)
  # Continuous at p = 1/tau (both pieces give log tau), log tau + 1 at p = 0.
  at = losses.phuber_cross_entropy(np.float32(threshold), tau)
  np.testing.assert_allclose(at, math.log(tau), rtol=1e-6)
  eps = 1e-4 * threshold
  left = losses.phuber_cross_entropy(np.float32(threshold - eps), tau)
  right = losses.phuber_cross_entropy(np.float32(threshold + eps), tau)
  np.testing.assert_allclose(left - right, 2 * eps * tau, rtol=1e-2)
  np.testing.assert_allclose(
      losses.phuber_cross_entropy(np.float32(0.0), tau), math.log(tau) + 1.0,
      rtol=1e-6)


@pytest.mark.parametrize('q, tau', [(0.7, 10.0), (0.5, 2.0)])
def test_phuber_gce_value_and_derivative(q, tau):
  threshold = tau**(1.0 / (q - 1.0))
  below = np.array([0.0, 0.5 * threshold, 0.99 * threshold], np.float32)
  above = np.array([1.01 * threshold, 0.3, 1.0], np.float32)
  dl_dp = jax.vmap(jax.grad(losses.phuber_generalized_cross_entropy),
                   (0, None, None))
  np.testing.assert_allclose(dl_dp(below, q, tau), -tau, rtol=1e-5)
  np.testing.assert_allclose(dl_dp(above, q, tau), -above**(q - 1.0),
                             rtol=1e-5)
  gce_at_threshold = (1.0 - threshold**q) / q
  eps = 1e-3 * threshold
  for p in (threshold - eps, threshold, threshold + eps):
    np.testing.assert_allclose(
        losses.phuber_generalized_cross_entropy(np.float32(p), q, tau),
        gce_at_threshold - tau * (p - threshold), rtol=1e-5)
  np.testing.assert_allclose(
      losses.phuber_generalized_cross_entropy(np.float32(0.0), q, tau),
      gce_at_threshold + tau * threshold, rtol=1e-6)


def test_phuber_is_gradient_clipping_in_p():
  # d PHuber-CE / dp = clip(d CE / dp, -tau, 0) wherever CE is defined.
  p = np.linspace(0.01, 1.0, 100, dtype=np.float32)
  tau = 10.0
  phuber = jax.vmap(jax.grad(losses.phuber_cross_entropy), (0, None))(p, tau)
  ce = jax.vmap(jax.grad(losses.cross_entropy))(p)
  np.testing.assert_allclose(phuber, np.maximum(ce, -tau), rtol=1e-6)


# --- from logits to p --------------------------------------------------------


def test_probability_of_label():
  rng = np.random.default_rng(0)
  logits = (50.0 * rng.standard_normal((64, 10))).astype(np.float32)
  logits[0, 3] = logits[1, 5] = 500.0  # p == 1 and p == 0 in float32
  labels = rng.integers(0, 10, 64).astype(np.int32)
  labels[:2] = (3, 0)
  ref = special.softmax(logits.astype(np.float64), axis=-1)[np.arange(64), labels]
  out = losses.probability_of_label(logits, labels)
  assert out[0] == 1.0 and out[1] == 0.0
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-30)


def test_log_probabilities():
  rng = np.random.default_rng(1)
  logits = (50.0 * rng.standard_normal((16, 10))).astype(np.float32)
  labels = rng.integers(0, 10, 16).astype(np.int32)
  ref = special.log_softmax(logits.astype(np.float64), axis=-1)
  log_probs, log_p = losses.log_probabilities(logits.astype(np.float16), labels)
  assert log_probs.dtype == log_p.dtype == np.float32  # promoted
  ref16 = special.log_softmax(logits.astype(np.float16).astype(np.float64), -1)
  np.testing.assert_allclose(log_probs, ref16, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(log_p, ref16[np.arange(16), labels], rtol=1e-5,
                             atol=1e-4)
  log_probs, log_p = losses.log_probabilities(logits, labels)
  np.testing.assert_allclose(log_p, ref[np.arange(16), labels], rtol=1e-5,
                             atol=1e-4)


def test_probability_of_label_bad_inputs():
  logits, labels = np.zeros((4, 3), np.float32), np.zeros(4, np.int32)
  with pytest.raises(ValueError, match="`logits` must be a float array"):
    losses.probability_of_label(logits[0], labels)  # logits of rank 1
  with pytest.raises(ValueError, match="`labels` must be an int array"):
    losses.probability_of_label(logits, labels.astype(np.float32))
  with pytest.raises(ValueError, match="same batch size"):
    losses.probability_of_label(logits, labels[:3])  # batch sizes differ


@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_out_of_range_labels(bad):
  # Concrete: refused, naming the label and where it is. Traced: NaN for
  # that example only, never the last class (-1) or a silent fill.
  logits = np.log(np.array([[0.2, 0.3, 0.5]] * 4, np.float32))
  labels = np.array([0, 1, bad, 2], np.int32)
  with pytest.raises(ValueError, match=rf"\[0, 3\).*1 do not \({bad} at 2\)"):
    losses.probability_of_label(logits, labels)
  p = np.asarray(jax.jit(losses.probability_of_label)(logits, labels))
  np.testing.assert_allclose(p[[0, 1, 3]], [0.2, 0.3, 0.5], rtol=1e-6)
  assert np.isnan(p[2])
