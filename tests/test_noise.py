"""Tests for `experiments.noise`."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
from scipy import special, stats

from experiments import noise

# CIFAR-100 coarse label of each fine label, as distributed with the dataset
# (the widely used ``sparse2coarse`` table); an independent check of the
# module's superclass table.
_CIFAR100_COARSE_LABELS = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3,
    3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19,
    2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
])


def _balanced_labels(num_classes, per_class):
  return np.arange(num_classes).repeat(per_class)


def _binomial_tolerance(p, n, sigmas=5.0):
  """Half-width of a `sigmas`-sigma interval for a proportion of n trials."""
  return sigmas * math.sqrt(p * (1.0 - p) / n)


def _recount(true, noisy, num_classes):
  counts, _, _ = np.histogram2d(
      true, noisy, bins=num_classes, range=[[0, num_classes]] * 2)
  with np.errstate(invalid='ignore'):  # rows of absent classes: 0 / 0
    return counts / counts.sum(axis=1, keepdims=True)


def _check_diagnostics(out, true, num_classes):
  """Checks transition matrix and noise rate against a direct recount."""
  assert out.labels.dtype == np.int32
  assert out.labels.shape == true.shape
  assert out.transition_matrix.dtype == np.float64
  np.testing.assert_allclose(out.transition_matrix.sum(axis=1), 1.0)
  present = np.bincount(true, minlength=num_classes) > 0
  np.testing.assert_allclose(
      out.transition_matrix[present],
      _recount(true, out.labels, num_classes)[present])
  np.testing.assert_array_equal(
      out.transition_matrix[~present], np.eye(num_classes)[~present])
  assert out.noise_rate == np.mean(out.labels != true)


# ----------------------------------------------------------------------------
# Determinism.


@pytest.mark.parametrize('kind', ['symmetric', 'asymmetric', 'instance'])
def test_same_seed_same_labels_different_seed_different_labels(kind):
  true = _balanced_labels(10, 200)
  features = np.random.default_rng(0).normal(size=(true.size, 3, 4))
  kwargs = dict(features=features, dataset='cifar10')
  a = noise.corrupt_labels(kind, true, 10, 0.4, 1, **kwargs)
  b = noise.corrupt_labels(kind, true, 10, 0.4, 1, **kwargs)
  c = noise.corrupt_labels(kind, true, 10, 0.4, 2, **kwargs)
  np.testing.assert_array_equal(a.labels, b.labels)
  np.testing.assert_array_equal(a.transition_matrix, b.transition_matrix)
  assert a.noise_rate == b.noise_rate
  assert np.any(a.labels != c.labels)


def test_inputs_are_not_modified():
  true = _balanced_labels(10, 50)
  copy = true.copy()
  noise.symmetric(true, 10, 0.5, 0)
  noise.instance_dependent(true, np.ones((true.size, 2)), 10, 0.5, 0)
  np.testing.assert_array_equal(true, copy)


# ----------------------------------------------------------------------------
# Symmetric noise.


@pytest.mark.parametrize('num_classes,rate', [(10, 0.2), (10, 0.8), (4, 0.5)])
def test_symmetric_statistics(num_classes, rate):
  per_class = 2000
  true = _balanced_labels(num_classes, per_class)
  out = noise.symmetric(true, num_classes, rate, seed=3)
  _check_diagnostics(out, true, num_classes)
  n = true.size
  assert abs(out.noise_rate - rate) < _binomial_tolerance(rate, n)
  t = out.transition_matrix
  off = t[~np.eye(num_classes, dtype=bool)]
  expected = rate / (num_classes - 1)
  assert np.all(np.abs(off - expected) < _binomial_tolerance(
      expected, per_class))
  assert np.all(np.abs(np.diag(t) - (1 - rate)) < _binomial_tolerance(
      rate, per_class))


def test_symmetric_flipped_labels_are_uniform_over_other_classes():
  true = np.zeros(30000, dtype=np.int64)
  out = noise.symmetric(true, 4, 0.6, seed=0)
  flipped = out.labels[out.labels != true]
  # Flips never land on the true class, and each other class gets ~1/3.
  counts = np.bincount(flipped, minlength=4)
  assert counts[0] == 0
  _, p_value = stats.chisquare(counts[1:])
  assert p_value > 1e-4


def test_zero_rate_is_identity():
  true = _balanced_labels(10, 5)
  for out in (noise.symmetric(true, 10, 0.0, 0),
              noise.asymmetric(true, 10, 0.0, 0, dataset='digits'),
              noise.instance_dependent(true, np.ones((50, 3)), 10, 0.0, 0),
              noise.corrupt_labels('none', true, 10, 0.0, 0)):
    np.testing.assert_array_equal(out.labels, true)
    np.testing.assert_array_equal(out.transition_matrix, np.eye(10))
    assert out.noise_rate == 0.0


def test_transition_matrix_identity_rows_for_absent_classes():
  true = np.array([0, 0, 0, 2, 2, 2] * 100)
  out = noise.symmetric(true, 4, 0.5, seed=0)
  _check_diagnostics(out, true, 4)
  np.testing.assert_array_equal(out.transition_matrix[1], [0, 1, 0, 0])
  np.testing.assert_array_equal(out.transition_matrix[3], [0, 0, 0, 1])


def test_empty_labels():
  out = noise.symmetric(np.zeros(0, dtype=np.int32), 3, 0.3, seed=0)
  assert out.labels.shape == (0,)
  assert out.noise_rate == 0.0
  np.testing.assert_array_equal(out.transition_matrix, np.eye(3))


# ----------------------------------------------------------------------------
# Asymmetric noise.


def test_cifar10_mapping_names():
  names = noise.CIFAR10_CLASSES
  by_name = {names[k]: names[v]
             for k, v in noise.ASYMMETRIC_MAPPINGS['cifar10'].items()}
  assert by_name == {'truck': 'automobile', 'bird': 'airplane', 'cat': 'dog',
                     'dog': 'cat', 'deer': 'horse'}


def test_asymmetric_cifar10_statistics():
  rate, per_class = 0.4, 2000
  true = _balanced_labels(10, per_class)
  out = noise.asymmetric(true, 10, rate, seed=5, dataset='cifar10')
  _check_diagnostics(out, true, 10)
  t = out.transition_matrix
  expected = np.eye(10)
  for source, target in {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}.items():
    expected[source, source] = 1 - rate
    expected[source, target] = rate
  tol = _binomial_tolerance(rate, per_class)
  np.testing.assert_allclose(t, expected, rtol=0, atol=tol)
  # Unmapped classes never change and flipped mass goes only to the mapped
  # class: exact zeros, not merely small entries.
  for c in (0, 1, 6, 7, 8):
    np.testing.assert_array_equal(t[c], np.eye(10)[c])
  assert np.all(t[expected == 0] == 0)
  # Half the classes are mapped, so the realised rate is about rate / 2.
  assert abs(out.noise_rate - rate / 2) < _binomial_tolerance(
      rate / 2, true.size)


def test_asymmetric_digits_mapping():
  assert noise.ASYMMETRIC_MAPPINGS['mnist'] == {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
  assert noise.ASYMMETRIC_MAPPINGS['digits'] == noise.ASYMMETRIC_MAPPINGS[
      'mnist']
  true = _balanced_labels(10, 300)
  out = noise.asymmetric(true, 10, 0.3, seed=0, dataset='mnist')
  _check_diagnostics(out, true, 10)
  changed = out.labels != true
  pairs = set(zip(true[changed].tolist(), out.labels[changed].tolist()))
  assert pairs == {(2, 7), (3, 8), (5, 6), (6, 5), (7, 1)}


def test_cifar100_tables_are_consistent():
  fine = noise.CIFAR100_FINE_CLASSES
  assert len(fine) == 100 and len(set(fine)) == 100
  # Fine labels are numbered in alphabetical order of the class names.
  assert list(fine) == sorted(fine)
  groups = list(noise.CIFAR100_SUPERCLASSES.values())
  assert len(groups) == 20
  assert all(len(g) == 5 for g in groups)
  members = [name for g in groups for name in g]
  assert sorted(members) == sorted(fine)  # a partition: each class once
  # Superclass table agrees with the dataset's coarse labels.
  coarse = np.empty(100, dtype=np.int64)
  for k, group in enumerate(groups):
    for name in group:
      coarse[fine.index(name)] = k
  np.testing.assert_array_equal(coarse, _CIFAR100_COARSE_LABELS)


def test_cifar100_mapping_is_within_superclass_5_cycles():
  mapping = noise.ASYMMETRIC_MAPPINGS['cifar100']
  assert sorted(mapping) == list(range(100))
  assert sorted(mapping.values()) == list(range(100))  # a permutation
  for c in range(100):
    assert mapping[c] != c
    assert _CIFAR100_COARSE_LABELS[mapping[c]] == _CIFAR100_COARSE_LABELS[c]
    # Applying the mapping five times returns to the start, and not sooner.
    x, length = mapping[c], 1
    while x != c:
      x, length = mapping[x], length + 1
    assert length == 5
  # Spot checks: aquatic mammals beaver 4 -> dolphin 30 -> otter 55 -> seal 72
  # -> whale 95 -> beaver 4; fish; flowers; people.
  for cycle in ([4, 30, 55, 72, 95], [1, 32, 67, 73, 91], [54, 62, 70, 82, 92],
                [2, 11, 35, 46, 98]):
    for a, b in zip(cycle, cycle[1:] + cycle[:1]):
      assert mapping[a] == b
  fine = noise.CIFAR100_FINE_CLASSES
  assert fine[mapping[fine.index('tulip')]] == 'orchid'
  assert fine[mapping[fine.index('tractor')]] == 'lawn_mower'


def test_asymmetric_cifar100_statistics():
  rate, per_class = 0.3, 200
  true = _balanced_labels(100, per_class)
  out = noise.asymmetric(true, 100, rate, seed=0, dataset='cifar100')
  _check_diagnostics(out, true, 100)
  mapping = noise.ASYMMETRIC_MAPPINGS['cifar100']
  changed = out.labels != true
  expected_targets = np.array([mapping[c] for c in true[changed]])
  np.testing.assert_array_equal(out.labels[changed], expected_targets)
  # Every class is mapped, so the realised rate is about `rate` itself.
  assert abs(out.noise_rate - rate) < _binomial_tolerance(rate, true.size)


# ----------------------------------------------------------------------------
# Instance-dependent noise.


def _instance_reference(true, features, num_classes, rate, seed,
                        normalise=True):
  """Sample-by-sample transcription of Xia et al.'s algorithm (float64)."""
  rng = np.random.default_rng(seed)
  n = true.size
  q = noise._truncated_normal(rng, rate, 0.1, n)
  w = rng.standard_normal((num_classes, features[0].size, num_classes))
  flip_u = rng.random(n)
  target_u = rng.random(n)
  noisy = np.empty(n, dtype=np.int64)
  for i in range(n):
    x = features[i].reshape(-1).astype(np.float64)
    if normalise:
      x = x / np.linalg.norm(x)
    y = true[i]
    scores = x @ w[y]
    scores[y] = -np.inf
    p = q[i] * special.softmax(scores)
    p[y] = 1.0 - q[i]
    # Draw from p: keep y with probability p[y], else draw from the rest of p.
    if flip_u[i] < 1.0 - p[y]:
      rest = np.where(np.arange(num_classes) == y, 0.0, p) / (1.0 - p[y])
      noisy[i] = np.searchsorted(np.cumsum(rest), target_u[i], side='right')
    else:
      noisy[i] = y
  return noisy


def test_instance_matches_per_sample_reference(monkeypatch):
  # A small chunk size exercises the chunked path, including partial chunks.
  monkeypatch.setattr(noise, '_CHUNK_SIZE', 7)
  rng = np.random.default_rng(1)
  true = rng.integers(0, 5, size=300)
  features = rng.integers(0, 256, size=(300, 4, 3)).astype(np.uint8)
  out = noise.instance_dependent(true, features, 5, 0.35, seed=11)
  np.testing.assert_array_equal(
      out.labels, _instance_reference(true, features, 5, 0.35, 11))
  _check_diagnostics(out, true, 5)


def test_truncated_normal_matches_scipy():
  rng = np.random.default_rng(0)
  for mean in (0.05, 0.4):
    draws = noise._truncated_normal(rng, mean, 0.1, 20000)
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    reference = stats.truncnorm(-mean / 0.1, (1 - mean) / 0.1, loc=mean,
                                scale=0.1)
    assert stats.kstest(draws, reference.cdf).pvalue > 1e-3
    standard_error = reference.std() / math.sqrt(draws.size)
    assert abs(draws.mean() - reference.mean()) < 5 * standard_error


@pytest.mark.parametrize('rate', [0.1, 0.4])
def test_instance_two_classes_flip_with_mean_flip_rate(rate):
  # With two classes a flip always goes to the other class, so the realised
  # noise rate estimates E[q] of the truncated normal (0.129 for rate 0.1).
  n = 20000
  rng = np.random.default_rng(0)
  true = rng.integers(0, 2, size=n)
  features = rng.normal(size=(n, 5))
  out = noise.instance_dependent(true, features, 2, rate, seed=4)
  _check_diagnostics(out, true, 2)
  mean_q = stats.truncnorm(-rate / 0.1, (1 - rate) / 0.1, loc=rate,
                           scale=0.1).mean()
  assert abs(out.noise_rate - mean_q) < _binomial_tolerance(mean_q, n)
  if rate == 0.1:
    assert abs(mean_q - 0.1288) < 1e-3  # truncation bias is visible
  assert np.all(out.labels[out.labels != true] == 1 - true[out.labels != true])


def test_instance_noise_rate_and_feature_dependence():
  n, num_classes, rate = 10000, 10, 0.4
  rng = np.random.default_rng(0)
  true = rng.integers(0, num_classes, size=n)
  features_a = rng.normal(size=(n, 6, 6))
  features_b = rng.normal(size=(n, 6, 6))
  a = noise.instance_dependent(true, features_a, num_classes, rate, seed=0)
  b = noise.instance_dependent(true, features_b, num_classes, rate, seed=0)
  _check_diagnostics(a, true, num_classes)
  # E[q] equals rate to 1e-6 here (truncation 4 sigma away).
  assert abs(a.noise_rate - rate) < _binomial_tolerance(rate, n)
  # Same seed, so the same samples flip (same q and u); where they go depends
  # on the features.
  np.testing.assert_array_equal(a.labels != true, b.labels != true)
  flipped = a.labels != true
  assert np.mean(a.labels[flipped] != b.labels[flipped]) > 0.5
  # Rescaling inputs does not change anything: only their direction counts.
  c = noise.instance_dependent(true, 7.0 * features_a, num_classes, rate,
                               seed=0)
  np.testing.assert_array_equal(a.labels, c.labels)


def test_instance_targets_depend_on_features_not_uniform():
  # Identical inputs in a class share one flip distribution, so their flips
  # concentrate on a few classes instead of spreading over all C - 1.
  n, num_classes = 5000, 10
  true = np.zeros(n, dtype=np.int64)
  features = np.tile(np.arange(1.0, 9.0), (n, 1))
  out = noise.instance_dependent(true, features, num_classes, 0.5, seed=0)
  row = out.transition_matrix[0, 1:] / out.transition_matrix[0, 1:].sum()
  assert row.max() > 2.0 / (num_classes - 1)


def test_instance_zero_feature_row_flips_uniformly():
  n = 18000
  true = np.zeros(n, dtype=np.int64)
  out = noise.instance_dependent(true, np.zeros((n, 3)), 4, 0.5, seed=0)
  counts = np.bincount(out.labels[out.labels != true], minlength=4)
  assert counts[0] == 0
  assert stats.chisquare(counts[1:]).pvalue > 1e-4


# ----------------------------------------------------------------------------
# The OGC authors' protocol: exact counts per transition-matrix cell.


def _move_counts(true, noisy, num_classes):
  """counts[i, j] = #{true = i, noisy = j}, by a plain loop."""
  counts = np.zeros((num_classes, num_classes), dtype=np.int64)
  for t, y in zip(true.tolist(), noisy.tolist()):
    counts[t, y] += 1
  return counts


def test_authors_symmetric_cifar100_half_noise_realises_39_6_percent():
  # By hand: T[i, j] = 0.5 / 99 = 0.00505 off the diagonal; 500 images a
  # class give 0.00505 * 500 = 2.525 images per cell, truncated to 2; 2 * 99
  # = 198 of 500 images of each class move, 198 / 500 = 39.6%.
  true = np.random.default_rng(0).permutation(_balanced_labels(100, 500))
  out = noise.symmetric(true, 100, 0.5, seed=0, protocol='authors')
  _check_diagnostics(out, true, 100)
  counts = _move_counts(true, out.labels, 100)
  expected = np.full((100, 100), 2)
  np.fill_diagonal(expected, 500 - 198)
  np.testing.assert_array_equal(counts, expected)
  assert out.noise_rate == 198 / 500 == 0.396


@pytest.mark.parametrize('rate,per_cell', [
    (0.2, 111),  # 0.2 / 9 * 5000 = 111.1
    (0.5, 277),  # 277.8: truncated, not rounded
    (0.8, 444),  # 444.4
])
def test_authors_symmetric_cifar10_counts(rate, per_cell):
  true = np.random.default_rng(1).permutation(_balanced_labels(10, 5000))
  out = noise.symmetric(true, 10, rate, seed=0, protocol='authors')
  counts = _move_counts(true, out.labels, 10)
  expected = np.full((10, 10), per_cell)
  np.fill_diagonal(expected, 5000 - 9 * per_cell)
  np.testing.assert_array_equal(counts, expected)
  assert out.noise_rate == 9 * per_cell / 5000


def test_authors_asymmetric_cifar10_counts():
  # int(0.4 * 5000) = 2000 images of each of the 5 mapped classes move to
  # their image; 10000 of 50000 labels change: 20%.
  true = np.random.default_rng(2).permutation(_balanced_labels(10, 5000))
  out = noise.asymmetric(true, 10, 0.4, seed=0, dataset='cifar10',
                         protocol='authors')
  counts = _move_counts(true, out.labels, 10)
  expected = np.diag(np.full(10, 5000))
  for source, target in ((9, 1), (2, 0), (3, 5), (5, 3), (4, 7)):
    expected[source, source] = 3000
    expected[source, target] = 2000
  np.testing.assert_array_equal(counts, expected)
  assert out.noise_rate == 0.2


def test_authors_cifar100_blocks_mapping():
  mapping = noise.ASYMMETRIC_MAPPINGS['cifar100_blocks']
  assert [mapping[c] for c in range(10)] == [1, 2, 3, 4, 0, 6, 7, 8, 9, 5]
  assert mapping[99] == 95 and mapping[95] == 96
  # Not the real superclasses: apple (0) -> aquarium_fish (1) crosses them.
  assert _CIFAR100_COARSE_LABELS[0] != _CIFAR100_COARSE_LABELS[mapping[0]]
  true = _balanced_labels(100, 500)
  out = noise.asymmetric(true, 100, 0.4, seed=0, dataset='cifar100_blocks',
                         protocol='authors')
  counts = _move_counts(true, out.labels, 100)
  expected = np.diag(np.full(100, 300))
  expected[np.arange(100), [mapping[c] for c in range(100)]] = 200
  np.testing.assert_array_equal(counts, expected)
  assert out.noise_rate == 0.4


def test_authors_truncation_with_uneven_classes():
  # Classes of 7, 3 and 0 samples, a hand-written matrix:
  # row 0: 0.3 * 7 = 2.1 -> 2 to class 1, 0.2 * 7 = 1.4 -> 1 to class 2;
  # row 1: 0.5 * 3 = 1.5 -> 1 to class 0, 0.1 * 3 = 0.3 -> 0 to class 2.
  true = np.array([0] * 7 + [1] * 3)
  matrix = np.array([[0.5, 0.3, 0.2], [0.5, 0.4, 0.1], [0.0, 0.0, 1.0]])
  out = noise.from_transition_matrix(true, matrix, seed=4)
  np.testing.assert_array_equal(
      _move_counts(true, out.labels, 3), [[4, 2, 1], [1, 2, 0], [0, 0, 0]])
  assert out.noise_rate == 4 / 10
  np.testing.assert_array_equal(out.transition_matrix[2], [0, 0, 1])


def test_authors_draws_match_their_code():
  # Output of the authors' `create_class_dependent_noisy_label(labels, T,
  # seed)` (github.com/Virusdoll/OGC, datasets/tools.py), run with NumPy
  # 1.26 on these labels: one sample of each class to each other class.
  true = np.array([0, 1, 1, 1, 2, 2, 2, 1, 0, 2, 0, 0, 1, 0, 2, 0, 2, 2, 0,
                   1, 1])
  matrix = np.full((3, 3), 0.25) + 0.25 * np.eye(3)
  theirs = {
      0: [0, 1, 1, 1, 2, 2, 0, 1, 2, 2, 0, 0, 1, 0, 1, 0, 2, 2, 1, 2, 0],
      3: [0, 1, 1, 1, 0, 2, 2, 2, 0, 2, 0, 0, 1, 1, 1, 0, 2, 2, 2, 1, 0],
  }
  for seed, labels in theirs.items():
    out = noise.from_transition_matrix(true, matrix, seed)
    np.testing.assert_array_equal(out.labels, labels)


def test_authors_flips_depend_only_on_order_within_class():
  # CIFAR-10 as a class-by-class folder and in its original shuffled order:
  # the same images (by rank within their class) get the same noisy labels.
  shuffled = np.random.default_rng(3).permutation(_balanced_labels(10, 300))
  by_class = np.argsort(shuffled, kind='stable')
  a = noise.symmetric(shuffled, 10, 0.5, seed=0, protocol='authors')
  b = noise.symmetric(shuffled[by_class], 10, 0.5, seed=0, protocol='authors')
  np.testing.assert_array_equal(a.labels[by_class], b.labels)
  c = noise.symmetric(shuffled, 10, 0.5, seed=1, protocol='authors')
  assert np.any(a.labels != c.labels)
  np.testing.assert_array_equal(a.transition_matrix, c.transition_matrix)


def test_default_protocol_is_ours():
  true = _balanced_labels(10, 100)
  for protocol in ({}, {'protocol': 'ours'}):
    out = noise.corrupt_labels('symmetric', true, 10, 0.4, 5, **protocol)
    np.testing.assert_array_equal(out.labels,
                                  noise.symmetric(true, 10, 0.4, 5).labels)
  authors = noise.corrupt_labels('symmetric', true, 10, 0.4, 5,
                                 protocol='authors')
  np.testing.assert_array_equal(
      authors.labels,
      noise.from_transition_matrix(
          true, 0.6 * np.eye(10) + 0.4 / 9 * (1 - np.eye(10)), 5).labels)


def test_authors_instance_targets_are_argmax_on_raw_pixels():
  # Without the L2 normalisation, 0-255 pixels give scores hundreds apart and
  # a flipped sample goes to the arg-max class of x @ W[y], but for near ties.
  rng = np.random.default_rng(0)
  n, num_classes = 2000, 10
  true = rng.integers(0, num_classes, size=n)
  pixels = rng.integers(0, 256, size=(n, 4, 4, 3)).astype(np.uint8)
  out = noise.instance_dependent(true, pixels, num_classes, 0.4, seed=2,
                                 protocol='authors')
  _check_diagnostics(out, true, num_classes)
  np.testing.assert_array_equal(
      out.labels,
      _instance_reference(true, pixels, num_classes, 0.4, 2, normalise=False))
  draws = np.random.default_rng(2)
  noise._truncated_normal(draws, 0.4, 0.1, n)
  projection = draws.standard_normal((num_classes, 48, num_classes))
  flipped = np.flatnonzero(out.labels != true)
  scores = np.einsum('nd,ndc->nc',
                     pixels[flipped].reshape(-1, 48).astype(np.float64),
                     projection[true[flipped]])
  scores[np.arange(flipped.size), true[flipped]] = -np.inf
  assert np.mean(out.labels[flipped] == scores.argmax(axis=1)) > 0.99
  # Same flips as ours (same draws), different targets.
  ours = noise.instance_dependent(true, pixels, num_classes, 0.4, seed=2)
  np.testing.assert_array_equal(ours.labels != true, out.labels != true)
  assert np.mean(ours.labels[flipped] != out.labels[flipped]) > 0.3


def test_realised_noise_of_given_labels():
  true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
  given = np.array([0, 1, 2, 0, 1, 1, 0, 2])
  out = noise.realised_noise(true, given, 4)
  assert out.noise_rate == 3 / 8
  np.testing.assert_array_equal(out.labels, given)
  np.testing.assert_allclose(out.transition_matrix, [
      [0.5, 0.25, 0.25, 0], [0, 1, 0, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 1]])
  with pytest.raises(ValueError, match='noisy_labels.*shape'):
    noise.realised_noise(true, given[:3], 4)
  with pytest.raises(ValueError, match='noisy_labels.*4'):
    noise.realised_noise(true, given + 2, 4)


@pytest.mark.parametrize('matrix,message', [
    (np.eye(3)[:2], 'square'),
    (np.array([[0.5, 0.6], [0.0, 1.0]]), 'sum to 1'),
    (np.array([[1.5, -0.5], [0.0, 1.0]]), 'non-negative'),
    (np.array([[np.nan, 1.0], [0.0, 1.0]]), 'finite'),
    (np.ones((1, 1)), 'num_classes'),
])
def test_from_transition_matrix_bad_matrix(matrix, message):
  with pytest.raises(ValueError, match=message):
    noise.from_transition_matrix(np.array([0, 1]), matrix, 0)


def test_authors_protocol_bad_arguments():
  with pytest.raises(ValueError, match="protocol.*'paper'.*'ours', 'authors'"):
    noise.corrupt_labels('symmetric', np.array([0, 1]), 2, 0.2, 0,
                         protocol='paper')
  with pytest.raises(ValueError, match='seed.*2\\*\\*32'):
    noise.symmetric(np.array([0, 1]), 2, 0.2, 2**32, protocol='authors')


# ----------------------------------------------------------------------------
# Dispatcher and argument validation.


def test_dispatcher_matches_functions():
  true = _balanced_labels(10, 30)
  features = np.random.default_rng(0).normal(size=(300, 4))
  pairs = [
      (noise.corrupt_labels('symmetric', true, 10, 0.3, 2),
       noise.symmetric(true, 10, 0.3, 2)),
      (noise.corrupt_labels('asymmetric', true, 10, 0.3, 2, dataset='cifar10'),
       noise.asymmetric(true, 10, 0.3, 2, 'cifar10')),
      (noise.corrupt_labels('instance', true, 10, 0.3, 2, features=features),
       noise.instance_dependent(true, features, 10, 0.3, 2)),
  ]
  for got, want in pairs:
    np.testing.assert_array_equal(got.labels, want.labels)


def test_none_kind():
  true = np.array([3, 1, 2])
  out = noise.corrupt_labels('none', true, 4, 0, 0)
  np.testing.assert_array_equal(out.labels, true)
  np.testing.assert_array_equal(out.transition_matrix[1:4], np.eye(4)[1:4])
  with pytest.raises(ValueError, match='rate'):
    noise.corrupt_labels('none', true, 4, 0.2, 0)


@pytest.mark.parametrize('rate', [-0.1, 1.0, 1.5, float('nan'), '0.2', None,
                                  True])
def test_bad_rate(rate):
  with pytest.raises(ValueError, match='rate'):
    noise.symmetric(np.array([0, 1]), 2, rate, 0)
  with pytest.raises(ValueError, match='rate'):
    noise.corrupt_labels('instance', np.array([0, 1]), 2, rate, 0,
                         features=np.ones((2, 2)))


@pytest.mark.parametrize('labels', [
    np.array([0, 1, 10]), np.array([-1, 0]), np.array([[0, 1]]),
    np.array([0.0, 1.0]), 3,
])
def test_bad_labels(labels):
  with pytest.raises(ValueError, match='labels'):
    noise.symmetric(labels, 10, 0.2, 0)


def test_bad_kind_lists_valid_kinds():
  with pytest.raises(ValueError, match='kind.*symmetric.*instance'):
    noise.corrupt_labels('pairflip', np.array([0, 1]), 2, 0.2, 0)


@pytest.mark.parametrize('dataset', [None, 'svhn', 'CIFAR10'])
def test_asymmetric_unknown_dataset(dataset):
  with pytest.raises(ValueError, match="dataset.*'cifar10'"):
    noise.corrupt_labels('asymmetric', np.array([0, 1]), 10, 0.2, 0,
                         dataset=dataset)


def test_asymmetric_mapping_outside_num_classes():
  with pytest.raises(ValueError, match='num_classes'):
    noise.asymmetric(np.array([0, 1]), 5, 0.2, 0, dataset='cifar10')


def test_bad_features_and_other_arguments():
  true = np.array([0, 1, 1])
  with pytest.raises(ValueError, match='features'):
    noise.instance_dependent(true, np.ones((4, 2)), 2, 0.2, 0)
  with pytest.raises(ValueError, match='features'):
    noise.instance_dependent(true, np.array([[1.0], [np.nan], [1.0]]), 2, 0.2,
                             0)
  with pytest.raises(ValueError, match='features'):
    noise.corrupt_labels('instance', true, 2, 0.2, 0)
  with pytest.raises(ValueError, match='num_classes'):
    noise.symmetric(true, 1, 0.2, 0)
  with pytest.raises(ValueError, match='seed'):
    noise.symmetric(true, 2, 0.2, None)
  with pytest.raises(ValueError, match='seed'):
    noise.symmetric(true, 2, 0.2, -3)


# ----------------------------------------------------------------------------
# Properties.


@settings(max_examples=50, deadline=None)
@given(
    data=st.data(),
    num_classes=st.integers(2, 12),
    n=st.integers(1, 60),
    rate=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(['symmetric', 'asymmetric', 'instance']),
    protocol=st.sampled_from(noise.PROTOCOLS),
)
def test_outputs_are_valid(data, num_classes, n, rate, seed, kind, protocol):
  if kind == 'asymmetric':
    num_classes = max(num_classes, 10)
  true = np.array(data.draw(
      st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n)))
  features = np.random.default_rng(seed).normal(size=(n, 3))
  out = noise.corrupt_labels(kind, true, num_classes, rate, seed,
                             features=features, dataset='mnist',
                             protocol=protocol)
  assert out.labels.shape == (n,)
  assert out.labels.min() >= 0 and out.labels.max() < num_classes
  assert out.transition_matrix.shape == (num_classes, num_classes)
  assert np.all(out.transition_matrix >= 0)
  _check_diagnostics(out, true, num_classes)
