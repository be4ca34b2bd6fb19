"""Tests for `ogc_jax.baselines`.

Every loss is checked against a float64 NumPy reference written here from the
paper's formula over the full predicted distribution (not the closed forms in
p that the module uses), and against values worked out by hand.
"""

import functools
import math

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from ogc_jax import baselines
from ogc_jax import losses

_NAMES = ('ce', 'focal', 'mae', 'gce', 'taylor_ce', 'sce', 'nce_rce',
          'nce_agce', 'js', 'logit_clip_ce', 'anl_ce', 'phuber_ce',
          'phuber_gce')
_LOG_1E_4 = math.log(1e-4)

# --- float64 references, one per loss, from each paper's formula -------------


def _softmax(z):
  return special.softmax(z.astype(np.float64), axis=-1)


def _log_softmax(z):
  return special.log_softmax(z.astype(np.float64), axis=-1)


def _label_entry(values, y):
  return values[np.arange(len(y)), y]


def _one_hot(y, num_classes):
  return np.eye(num_classes)[y]


def _ref_ce(z, y):
  return -_label_entry(_log_softmax(z), y)


def _ref_focal(z, y, gamma=0.5):
  p = _label_entry(_softmax(z), y)
  return -(1.0 - p)**gamma * _label_entry(_log_softmax(z), y)


def _ref_mae(z, y):
  return 1.0 - _label_entry(_softmax(z), y)


def _ref_gce(z, y, q=0.7):
  return (1.0 - _label_entry(_softmax(z), y)**q) / q


def _ref_taylor_ce(z, y, order=2):
  p = _label_entry(_softmax(z), y)
  return sum((1.0 - p)**k / k for k in range(1, order + 1))


def _ref_rce(z, y, log_zero):
  # -sum_k p_k log q_k, with the one-hot label q clamped so that log 0 = A.
  label = np.maximum(_one_hot(y, z.shape[1]), math.exp(log_zero))
  return -np.sum(_softmax(z) * np.log(label), axis=-1)


def _ref_nce(z, y):
  log_probs = _log_softmax(z)
  return -_label_entry(log_probs, y) / -np.sum(log_probs, axis=-1)


def _ref_sce(z, y, alpha=0.1, beta=1.0, log_zero=_LOG_1E_4):
  return alpha * _ref_ce(z, y) + beta * _ref_rce(z, y, log_zero)


def _ref_nce_rce(z, y, alpha=1.0, beta=1.0, log_zero=_LOG_1E_4):
  return alpha * _ref_nce(z, y) + beta * _ref_rce(z, y, log_zero)


def _ref_nce_agce(z, y, alpha=1.0, beta=4.0, a=6.0, q=1.5):
  p = _label_entry(_softmax(z), y)
  agce = ((a + 1.0)**q - (a + p)**q) / q
  return alpha * _ref_nce(z, y) + beta * agce


def _ref_js(z, y, pi1=0.7):
  label, probs = _one_hot(y, z.shape[1]), _softmax(z)
  mixture = pi1 * label + (1.0 - pi1) * probs
  divergence = (pi1 * special.rel_entr(label, mixture).sum(-1)
                + (1.0 - pi1) * special.rel_entr(probs, mixture).sum(-1))
  return divergence / (-(1.0 - pi1) * math.log(1.0 - pi1))


def _ref_logit_clip_ce(z, y, norm_bound=1.5, norm_order=2):
  z = z.astype(np.float64)
  norm = np.linalg.norm(z, ord=norm_order, axis=-1, keepdims=True)
  with np.errstate(divide='ignore', invalid='ignore'):  # rows with z = 0
    clipped = np.where(norm > norm_bound, z / norm * norm_bound, z)
  return _ref_ce(clipped, y)


def _ref_anl_ce(z, y, alpha=5.0, beta=5.0, min_prob=1e-7):
  # NNCE as in the authors' code: A + log clamp(p, min_prob), normalized.
  a = -math.log(min_prob)
  negative = a + np.log(np.clip(_softmax(z), min_prob, 1.0))
  nnce = 1.0 - _label_entry(negative, y) / negative.sum(-1)
  return alpha * _ref_nce(z, y) + beta * nnce


def _ref_phuber_ce(z, y, tau=10.0):
  p = _label_entry(_softmax(z), y)
  with np.errstate(divide='ignore'):
    return np.where(p <= 1.0 / tau, -tau * p + math.log(tau) + 1.0,
                    -_label_entry(_log_softmax(z), y))


def _ref_phuber_gce(z, y, q=0.7, tau=10.0):
  p = _label_entry(_softmax(z), y)
  threshold = tau**(1.0 / (q - 1.0))
  # Menon et al.: -tau p plus the negated Fenchel conjugate at tau.
  boundary = tau * threshold + (1.0 - threshold**q) / q
  return np.where(p <= threshold, -tau * p + boundary, (1.0 - p**q) / q)


_REFERENCES = {
    'ce': _ref_ce,
    'focal': _ref_focal,
    'mae': _ref_mae,
    'gce': _ref_gce,
    'taylor_ce': _ref_taylor_ce,
    'sce': _ref_sce,
    'nce_rce': _ref_nce_rce,
    'nce_agce': _ref_nce_agce,
    'js': _ref_js,
    'logit_clip_ce': _ref_logit_clip_ce,
    'anl_ce': _ref_anl_ce,
    'phuber_ce': _ref_phuber_ce,
    'phuber_gce': _ref_phuber_gce,
}

# --- inputs ------------------------------------------------------------------


def _batch(scale, batch_size=64, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  logits = (scale * rng.standard_normal((batch_size, num_classes)))
  labels = rng.integers(0, num_classes, batch_size)
  return logits.astype(np.float32), labels.astype(np.int32)


def _extreme_batch():
  """Logits x50, plus rows where p is exactly 1, exactly 0, and uniform."""
  logits, labels = _batch(scale=50.0)
  special_rows = np.zeros((4, 10), np.float32)
  special_rows[0, 3] = 200.0   # label 3: p == 1 in float32
  special_rows[1, 5] = 200.0   # label 0: p == 0 in float32
  special_rows[3, 1] = -200.0  # label 1: p == 0 in float32
  logits = np.concatenate([logits, special_rows])
  labels = np.concatenate([labels, np.array([3, 0, 7, 1], np.int32)])
  return logits, labels


def _assert_matches_reference(name, out, logits, labels):
  ref = _REFERENCES[name](logits, labels)
  assert np.all(np.isfinite(ref))
  assert out.shape == labels.shape
  assert out.dtype == jnp.float32
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


class ReferenceTest(chex.TestCase):
  """Each loss, with its defaults, against the float64 reference."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*_NAMES)
  def test_moderate_logits(self, name):
    logits, labels = _batch(scale=3.0)
    out = self.variant(baselines.LOSSES[name])(logits, labels)
    _assert_matches_reference(name, out, logits, labels)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*_NAMES)
  def test_extreme_logits(self, name):
    logits, labels = _extreme_batch()
    probs = np.asarray(losses.probability_of_label(logits, labels))
    assert np.any(probs == 0.0) and np.any(probs == 1.0)  # the test's premise
    out = self.variant(baselines.LOSSES[name])(logits, labels)
    _assert_matches_reference(name, out, logits, labels)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      ('focal', {'gamma': 2.0}),
      ('gce', {'q': 0.3}),
      ('taylor_ce', {'order': 6}),
      ('sce', {'alpha': 6.0, 'beta': 0.1, 'log_zero': -4.0}),
      ('nce_rce', {'alpha': 10.0, 'beta': 0.1}),
      ('nce_agce', {'alpha': 10.0, 'beta': 0.1, 'a': 1.8, 'q': 3.0}),
      ('js', {'pi1': 0.3}),
      ('logit_clip_ce', {'norm_bound': 4.0, 'norm_order': 1}),
      ('anl_ce', {'alpha': 10.0, 'beta': 1.0, 'min_prob': 1e-5}),
      ('phuber_ce', {'tau': 2.0}),
      ('phuber_gce', {'q': 0.5, 'tau': 2.0}),
  )
  def test_other_hyperparameters(self, name, hparams):
    logits, labels = _batch(scale=3.0, seed=1)
    loss_fn = functools.partial(baselines.LOSSES[name], **hparams)
    out = self.variant(loss_fn)(logits, labels)
    ref = _REFERENCES[name](logits, labels, **hparams)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


# --- hand-computed values ----------------------------------------------------

_C = 10
_A = -_LOG_1E_4  # 9.2103...
# Uniform logits over C = 10 classes: p = 1/C, sum_k log p_k = C log(1/C).
_UNIFORM = {
    'ce': math.log(_C),
    'focal': 0.9**0.5 * math.log(_C),
    'mae': 0.9,
    'gce': (1.0 - 0.1**0.7) / 0.7,
    'taylor_ce': 0.9 + 0.9**2 / 2,
    'sce': 0.1 * math.log(_C) + _A * 0.9,
    'nce_rce': 0.1 + _A * 0.9,
    'nce_agce': 0.1 + 4.0 * (7.0**1.5 - 6.1**1.5) / 1.5,
    # m_y = 0.7 + 0.3 / 10 = 0.73; the 9 other classes have p_k / m_k = 1 / 0.3.
    'js': (-0.7 * math.log(0.73)
           + 0.3 * (0.1 * math.log(0.1 / 0.73) - 0.9 * math.log(0.3)))
          / (-0.3 * math.log(0.3)),
    'logit_clip_ce': math.log(_C),  # a uniform vector stays uniform
    'anl_ce': 5.0 * 0.1 + 5.0 * 0.9,
    'phuber_ce': math.log(_C),  # p = 1 / tau: both pieces give log tau
    'phuber_gce': (1.0 - 0.1**0.7) / 0.7,  # p = 0.1 > p* = 10**(-1/0.3)
}


@pytest.mark.parametrize('name', _NAMES)
@pytest.mark.parametrize('value', [0.0, 7.0])
def test_uniform_logits(name, value):
  logits = np.full((3, _C), value, np.float32)
  out = baselines.LOSSES[name](logits, np.array([0, 4, 9], np.int32))
  np.testing.assert_allclose(out, _UNIFORM[name], rtol=1e-6)


def test_logit_clip_rescales_to_the_bound():
  # ||(3, 4)|| = 5 > 1.5: the logits become (0.9, 1.2).
  out = baselines.logit_clip_ce_loss(np.array([[3.0, 4.0]], np.float32),
                                  np.array([1], np.int32))
  np.testing.assert_allclose(out, [math.log1p(math.exp(-0.3))], rtol=1e-6)
  # Within the bound the logits are left alone: plain cross-entropy.
  logits, labels = np.array([[0.3, -0.4, 0.5]], np.float32), np.array([2])
  np.testing.assert_allclose(
      baselines.logit_clip_ce_loss(logits, labels),
      baselines.ce_loss(logits, labels), rtol=1e-6)


def test_js_limits():
  # p = 1: no divergence. p = 0: D = H(pi1), so L = 2 for pi1 = 1/2.
  logits = np.array([[300.0, 0.0, 0.0], [-300.0, 0.0, 0.0]], np.float32)
  labels = np.array([0, 0], np.int32)
  np.testing.assert_allclose(baselines.js_loss(logits, labels, pi1=0.5),
                             [0.0, 2.0], atol=1e-6)
  # pi1 -> 0: cross-entropy (Englesson & Azizpour, Proposition 1). The terms
  # of order pi1 cancel, so this limit is checked in float64.
  logits, labels = _batch(scale=2.0)
  with jax.enable_x64(True):
    logits = logits.astype(np.float64)
    np.testing.assert_allclose(
        baselines.js_loss(logits, labels, pi1=1e-7),
        baselines.ce_loss(logits, labels), rtol=1e-4)


def test_anl_nnce_is_clamped_at_min_prob():
  # The label's p = e**-40 is below min_prob = 1e-7: NNCE = 1 - 0 / sum = 1,
  # the largest value, and NCE = 40 / (40 + 2 log(1 + ...)) ~ 1.
  logits = np.array([[-40.0, 0.0, 0.0]], np.float32)
  log_probs = special.log_softmax(logits.astype(np.float64))
  nce = log_probs[0, 0] / log_probs.sum()
  np.testing.assert_allclose(
      baselines.anl_ce_loss(logits, np.array([0]), alpha=1.0, beta=1.0),
      [nce + 1.0], rtol=1e-6)


# --- gradients ---------------------------------------------------------------


@pytest.mark.parametrize('name', _NAMES)
def test_gradients_finite_for_extreme_logits(name):
  logits, labels = _extreme_batch()
  grad = jax.grad(lambda z: baselines.LOSSES[name](z, labels).mean())(logits)
  assert np.all(np.isfinite(grad)), name


@pytest.mark.parametrize('name', _NAMES)
def test_gradients_match_finite_differences(name):
  logits, labels = _batch(scale=2.0, batch_size=6, num_classes=5, seed=2)
  grad = jax.grad(lambda z: baselines.LOSSES[name](z, labels).sum())(logits)
  ref_fn = _REFERENCES[name]
  z = logits.astype(np.float64)
  h = 1e-5
  numeric = np.zeros_like(z)
  for index in np.ndindex(*z.shape):
    step = np.zeros_like(z)
    step[index] = h
    numeric[index] = (ref_fn(z + step, labels).sum()
                      - ref_fn(z - step, labels).sum()) / (2 * h)
  np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-5)


# --- the route through p -----------------------------------------------------


@pytest.mark.parametrize('name, base_loss', [
    ('mae', losses.mae),
    ('taylor_ce', losses.taylor_cross_entropy),
    ('phuber_ce', losses.phuber_cross_entropy),
    ('phuber_gce', losses.phuber_generalized_cross_entropy),
])
def test_logit_loss_from_base_is_the_loss(name, base_loss):
  logits, labels = _extreme_batch()
  np.testing.assert_array_equal(
      baselines.logit_loss_from_base(base_loss)(logits, labels),
      baselines.LOSSES[name](logits, labels))


@pytest.mark.parametrize('name, base_loss', [
    ('ce', losses.cross_entropy),
    ('focal', losses.focal),
    ('gce', losses.generalized_cross_entropy),
])
def test_logit_loss_from_base_agrees_where_p_is_positive(name, base_loss):
  logits, labels = _batch(scale=3.0)
  np.testing.assert_allclose(
      baselines.logit_loss_from_base(base_loss)(logits, labels),
      baselines.LOSSES[name](logits, labels), rtol=1e-5, atol=1e-6)


# --- registry ----------------------------------------------------------------


def test_registry_names():
  assert tuple(baselines.LOSSES) == _NAMES


@pytest.mark.parametrize('name', _NAMES)
def test_default_hyperparameters_are_those_of_the_references(name):
  # Each loss's defaults (the paper's CIFAR-10 setting) live in its signature
  # alone; the float64 references above restate them from the papers.
  assert (losses.hyperparameters(baselines.LOSSES[name])
          == losses.hyperparameters(_REFERENCES[name]))


@pytest.mark.parametrize('name', _NAMES)
def test_bad_inputs_fail_with_their_name(name):
  logits, labels = _batch(scale=1.0, batch_size=4)
  with pytest.raises(ValueError, match='`logits`'):
    baselines.ce_loss(logits[0], labels)  # logits of rank 1
  with pytest.raises(ValueError, match='`labels`'):
    baselines.ce_loss(logits, labels.astype(np.float32))  # float labels
  with pytest.raises(ValueError, match='batch size'):
    baselines.ce_loss(logits, labels[:3])  # batch sizes differ
  for bad in (-1, logits.shape[1]):  # neither the last class nor NaN
    with pytest.raises(ValueError, match=f'{bad} at 0'):
      baselines.LOSSES[name](logits, np.r_[bad, labels[1:]].astype(np.int32))
  with pytest.raises(ValueError, match='order'):
    baselines.taylor_ce_loss(logits, labels, order=0)
