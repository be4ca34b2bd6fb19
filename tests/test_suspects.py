"""Tests for the list of suspect labels, the held-out folds and the audit."""

import os

import jax
import numpy as np
from PIL import Image
import pytest
from scipy import stats
from sklearn import metrics

import ogc_jax
from experiments import audit
from experiments import cli
from experiments import input_pipeline
from experiments import suspects
from experiments import validate
from experiments import workdir as workdir_lib
from experiments.configs import digits
from experiments.errors import ConfigError
from tests.conftest import TINY
from tests.conftest import train_keeping_run_end


# ----------------------------------------------------------------------------
# The measures, against scikit-learn.


@pytest.mark.parametrize('seed', range(6))
def test_auroc_and_average_precision_are_scikit_learns(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(5, 400))
  wrong = rng.random(n) < rng.uniform(0.05, 0.8)
  wrong[:2] = [True, False]  # both classes
  # Scores with many ties (posteriors rounded to 1 in float32 tie too).
  score = np.round(rng.random(n) + wrong * rng.uniform(0, 1), seed % 3)
  assert suspects.auroc(score, wrong) == pytest.approx(
      metrics.roc_auc_score(wrong, score), abs=1e-12)
  assert suspects.average_precision(score, wrong) == pytest.approx(
      metrics.average_precision_score(wrong, score), abs=1e-12)


def test_measures_of_one_class_are_none_and_all_ties_are_chance():
  assert suspects.auroc([0.1, 0.9], [False, False]) is None
  assert suspects.auroc([0.1, 0.9], [True, True]) is None
  assert suspects.average_precision([0.1, 0.9], [False, False]) is None
  assert suspects.auroc(np.ones(10), np.arange(10) < 3) == 0.5
  assert suspects.average_precision(np.ones(10), np.arange(10) < 3) == (
      pytest.approx(0.3))


@pytest.mark.parametrize('flagged_rate,wrong_rate', [
    (0.3, 0.4), (0.0, 0.4), (0.3, 0.0), (0.0, 0.0), (1.0, 0.5)])
def test_flag_measures_are_scikit_learns(flagged_rate, wrong_rate):
  rng = np.random.default_rng(0)
  flagged, wrong = rng.random(200) < flagged_rate, rng.random(200) < wrong_rate
  got = suspects.flag_measures(flagged, wrong)
  for name, fn in (('precision', metrics.precision_score),
                   ('recall', metrics.recall_score), ('f1', metrics.f1_score)):
    assert got[name] == pytest.approx(fn(wrong, flagged, zero_division=0)), name


def test_evaluate_without_the_true_labels_counts_only():
  measures = suspects.evaluate([0.9, 0.2, 0.7], [True, False, True])
  assert measures == {'examples': 3, 'flagged': 2, 'noisy': None,
                      'auroc': None, 'average_precision': None,
                      'precision': None, 'recall': None, 'f1': None}


def test_ranking_by_score_then_margin_then_index():
  score = np.array([30.0, -2.0, 30.0, 30.0, 9.0], np.float32)
  margin = np.array([-3.0, 4.0, -5.0, -3.0, -9.0], np.float32)
  order = suspects.ranking(score, margin)
  assert order.tolist() == [2, 0, 3, 4, 1]
  assert suspects.suspicion(order).tolist() == [4, 1, 5, 3, 2]


def test_margins_against_a_loop():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(50, 7)).astype(np.float32)
  labels = rng.integers(0, 7, 50)
  expected = [row[y] - max(np.delete(row, y)) for row, y in zip(logits, labels)]
  np.testing.assert_array_equal(suspects.label_margins(logits, labels),
                                np.float32(expected))


def test_the_flag_is_on_for_ogc_unless_set():
  config = digits.get_config()
  for method, default in (('ogc_ce', True), ('ogc_gce', True), ('ce', False),
                          ('gce', False)):
    config.method = method
    for value, expected in ((None, default), (True, True), (False, False)):
      config.label_issues = value
      assert suspects.enabled(config) is expected, (method, value)


# ----------------------------------------------------------------------------
# The list a tiny OGC run writes.


@pytest.fixture(scope='module')
def tiny_ogc_run(tmp_path_factory):
  """A 4-epoch OGC-CE run on digits holding out a fold, with its `RunEnd`."""
  config = digits.get_config()
  config.update_from_flattened_dict(
      {**TINY, 'num_devices': 1, 'holdout.folds': 4, 'holdout.fold': 1,
       'cache_dir': str(tmp_path_factory.mktemp('cache'))})
  workdir = str(tmp_path_factory.mktemp('ogc'))
  return (workdir, *train_keeping_run_end(config, workdir))


def test_the_list_ranks_every_example_by_the_mixtures_log_odds(tiny_ogc_run):
  workdir, result, run = tiny_ogc_run
  table = workdir_lib.read_label_issues(workdir)
  data = run.data
  n = len(data.labels)
  assert table['rank'].tolist() == list(range(1, n + 1))
  # Every example trained on once (not the held-out fold), by its index in
  # the dataset's training split.
  assert n == 1437 - len(data.heldout.indices)
  np.testing.assert_array_equal(np.sort(table['index']), data.indices)
  position = np.searchsorted(data.indices, table['index'])
  np.testing.assert_array_equal(table['given_label'], data.labels[position])
  assert set(table['path']) == {''}  # digits is no image folder
  # The loss and prediction of the trained network, in evaluation mode.
  logits = run.logits(data.images)
  np.testing.assert_array_equal(table['predicted_label'],
                                np.argmax(logits, -1)[position])
  p = np.exp(jax.nn.log_softmax(np.float64(logits)))[np.arange(n), data.labels]
  np.testing.assert_allclose(
      table['loss'], -np.log(np.clip(p, ogc_jax.MIN_PROB, ogc_jax.MAX_PROB))[
          position], rtol=2e-6, atol=1e-6)
  # The score is the log-odds under the mixture fitted to all the losses,
  # in float64 with SciPy.
  gmm = ogc_jax.GMM(**result['label_issues']['mixture'])
  in_order = np.empty(n, np.float32)
  in_order[position] = table['loss']
  refit = ogc_jax.fit_gmm(in_order, fit="converged")
  np.testing.assert_allclose(np.array(refit), np.array(gmm), rtol=1e-6)
  g = {k: np.float64(v) for k, v in result['label_issues']['mixture'].items()}
  h = np.float64(np.float32(table['loss']))
  log_odds = (np.log(g['weight_noisy']) + stats.norm.logpdf(
      h, g['mean_noisy'], np.sqrt(g['var_noisy'])) - np.log1p(
          -g['weight_noisy']) - stats.norm.logpdf(
              h, g['mean_clean'], np.sqrt(g['var_clean'])))
  np.testing.assert_allclose(table['score'], log_odds, rtol=1e-5, atol=1e-3)
  # The margin of the given label's logit.
  expected_margin = suspects.label_margins(logits, data.labels)[position]
  np.testing.assert_allclose(table['margin'], expected_margin, rtol=1e-6)
  # Ranked by score, ties by margin; flagged above 0 (posterior 0.5).
  key = np.stack([-table['score'], table['margin']], 1)
  assert all(tuple(a) <= tuple(b) for a, b in zip(key, key[1:]))
  np.testing.assert_array_equal(table['flagged'], table['score'] > 0)
  assert 0 < table['flagged'].sum() < n
  # No two examples tie in the ranking's key unless their logits are equal.
  pairs = np.float32(np.stack([table['score'], table['margin']], 1))
  assert len(np.unique(pairs, axis=0)) == len(np.unique(
      np.float32(logits), axis=0))


def test_the_result_measures_the_list_against_the_true_labels(tiny_ogc_run):
  workdir, result, run = tiny_ogc_run
  table = workdir_lib.read_label_issues(workdir)
  position = np.searchsorted(run.data.indices, table['index'])
  wrong = (run.data.labels != run.data.true_labels)[position]
  block = result['label_issues']
  assert workdir_lib.read_result(workdir)['label_issues'] == block
  rank_score = -table['rank']  # the list's order, without ties
  assert block['auroc'] == pytest.approx(
      metrics.roc_auc_score(wrong, rank_score))
  assert block['average_precision'] == pytest.approx(
      metrics.average_precision_score(wrong, rank_score))
  assert block['f1'] == pytest.approx(metrics.f1_score(wrong, table['flagged']))
  assert block['flagged'] == table['flagged'].sum()
  assert block['noisy'] == wrong.sum() > 0.35 * len(wrong)
  assert block['auroc'] > 0.9  # 4 epochs already separate most
  # OGC's last queue mixture, measured on the same losses.
  queue = block['queue_mixture']
  assert queue['mixture'] == {
      k: pytest.approx(float(v)) for k, v in run.state.gmm._asdict().items()}
  posterior = np.asarray(ogc_jax.noisy_posterior(run.state.gmm,
                                                 np.float32(table['loss'])))
  assert queue['flagged'] == np.sum(posterior > 0.5)
  assert queue['f1'] == pytest.approx(metrics.f1_score(wrong,
                                                       posterior > 0.5))
  # Its ranking: by the queue mixture's log-odds, ties by margin.
  queue_score = np.asarray(ogc_jax.noisy_log_odds(run.state.gmm,
                                                  np.float32(table['loss'])))
  order = np.lexsort((np.arange(len(wrong)), table['margin'], -queue_score))
  assert queue['auroc'] == pytest.approx(metrics.roc_auc_score(
      wrong[order], -np.arange(len(order))))


# ----------------------------------------------------------------------------
# Held-out folds.


def _tiny(data_cache, **overrides):
  config = digits.get_config()
  config.update_from_flattened_dict({**TINY, 'cache_dir': data_cache,
                                     **overrides})
  return config


def test_folds_are_disjoint_cover_and_keep_the_noisy_labels(data_cache):
  whole = input_pipeline.load_data(_tiny(data_cache))
  assert whole.heldout is None and whole.true_labels_known
  np.testing.assert_array_equal(whole.indices, np.arange(1437))
  held, trained = [], []
  for fold in range(3):
    data = input_pipeline.load_data(_tiny(
        data_cache, **{'holdout.folds': 3, 'holdout.fold': fold}))
    out = data.heldout
    assert len(out.indices) + len(data.indices) == 1437
    assert not set(out.indices) & set(data.indices)
    # The same noisy (and true) labels in every fold, held out or trained on.
    for part in (out, data):
      np.testing.assert_array_equal(part.labels, whole.labels[part.indices])
      np.testing.assert_array_equal(part.true_labels,
                                    whole.true_labels[part.indices])
      np.testing.assert_array_equal(part.images, whole.images[part.indices])
    # Stratified: each given label's examples split to within one.
    counts = np.bincount(out.labels, minlength=10)
    expected = np.bincount(whole.labels, minlength=10) / 3
    assert np.all(np.abs(counts - expected) < 1)
    held.append(out.indices)
    trained.append(data.indices)
  assert sorted(np.concatenate(held)) == list(range(1437))
  # Another seed: another split of other noisy labels.
  other = input_pipeline.load_data(_tiny(
      data_cache, seed=1, **{'holdout.folds': 3, 'holdout.fold': 0}))
  assert not np.array_equal(other.heldout.indices, held[0])


@pytest.mark.parametrize('folds,fold,message', [
    (1, 0, r'config\.holdout\.folds=1; expected 0 .* or an integer >= 2'),
    (-2, 0, r'config\.holdout\.folds=-2'),
    (5, 5, r'config\.holdout\.fold=5; expected an integer in \[0, 5\)'),
    (5, -1, r'config\.holdout\.fold=-1'),
    (0, 2, r'config\.holdout\.fold=2 without config\.holdout\.folds'),
])
def test_bad_folds_are_one_line_at_validation(folds, fold, message):
  config = digits.get_config()
  config.holdout.folds, config.holdout.fold = folds, fold
  with pytest.raises(ConfigError, match=message) as error:
    validate.validate_config(config)
  assert '\n' not in str(error.value)


def test_a_fold_run_writes_its_held_out_probabilities(tiny_ogc_run,
                                                       data_cache):
  workdir, _, run = tiny_ogc_run
  held = workdir_lib.read_heldout_probs(workdir)
  whole = input_pipeline.load_data(_tiny(data_cache))
  config = _tiny(data_cache, **{'holdout.folds': 4, 'holdout.fold': 1})
  fold = input_pipeline.holdout_folds(config, whole.labels)
  np.testing.assert_array_equal(held['indices'], np.flatnonzero(fold == 1))
  np.testing.assert_array_equal(held['labels'], whole.labels[fold == 1])
  np.testing.assert_array_equal(held['true_labels'],
                                whole.true_labels[fold == 1])
  # The trained network's probabilities of the examples it did not train on.
  np.testing.assert_allclose(
      held['probs'], jax.nn.softmax(run.logits(whole.images[fold == 1])),
      rtol=1e-6, atol=1e-7)
  assert held['probs'].dtype == np.float32 and held['probs'].shape == (
      np.sum(fold == 1), 10)


# ----------------------------------------------------------------------------
# The audit command.


def _image_folder(root, per_class=24):
  """Three classes of 6x6 RGB images, each a bright square in its own corner."""
  rng = np.random.default_rng(0)
  corners = {'ant': (0, 0), 'bee': (0, 3), 'cat': (3, 0)}
  for split, count in (('train', per_class), ('test', 4)):
    for name, (row, col) in corners.items():
      os.makedirs(root / split / name)
      for i in range(count):
        image = rng.integers(0, 60, (6, 6, 3), np.uint8)
        image[row:row + 3, col:col + 3] += 180
        Image.fromarray(image).save(root / split / name / f'{i:02d}.png')


def test_audit_of_a_ce_run_on_an_image_folder_writes_the_list_and_sheet(
    tmp_path, fresh_flags, capsys, data_cache):
  del fresh_flags
  folder, workdir = tmp_path / 'images', tmp_path / 'run'
  _image_folder(folder)
  # The user's own labels, as a path,label CSV over the folder (the route of
  # CIFAR-10N): 12 of the 72 are wrong, 'ant' images called 'bee' or 'cat'.
  names = ('ant', 'bee', 'cat')
  given = np.repeat(np.arange(3), 24)
  given[:12] = [1, 2] * 6
  rows = [f'train/{names[i // 24]}/{i % 24:02d}.png,{names[g]}'
          for i, g in enumerate(given)]
  (tmp_path / 'labels.csv').write_text('path,label\n' + '\n'.join(rows))
  argv = ['experiments.audit', f'--workdir={workdir}', '--top=5',
          f'--config.dataset=folder:{folder}', '--config.method=ce',
          f'--config.labels_csv={tmp_path / "labels.csv"}',
          '--config.noise.kind=none', '--config.noise.rate=0',
          '--config.num_epochs=3', '--config.batch_size=8',
          '--config.progress=False', '--config.num_devices=1',
          f'--config.cache_dir={data_cache}']
  audit.main(cli.parse_flags(argv, define_flags=audit._define_top))  # pylint: disable=protected-access
  out = capsys.readouterr().out
  # CE writes no list as it ends: the audit restored the run and wrote it.
  assert workdir_lib.read_result(workdir)['label_issues'] is None
  table = workdir_lib.read_label_issues(workdir)
  assert len(table['index']) == 72
  for index, path, label in zip(table['index'], table['path'],
                                table['given_label']):
    assert path == f'train/{names[index // 24]}/{index % 24:02d}.png'
    assert label == given[index]
  wrong = table['given_label'] != table['index'] // 24
  assert wrong.sum() == 12
  # The sheet: 5 suspects, one row of titled images.
  with Image.open(workdir_lib.label_issues_sheet_path(workdir)) as sheet:
    assert sheet.format == 'PNG' and sheet.width > 3 * sheet.height
  assert f"{workdir / 'label_issues.png'}: the top 5" in out
  auroc = metrics.roc_auc_score(wrong, -table['rank'])
  assert f'AUROC {auroc:.3f}' in out
  flagged = table['flagged'].sum()
  assert f'72 training examples, {flagged} flagged' in out
  # The false alarms: the top suspects whose given label is right.
  clean_in_top = int(np.sum(~wrong[np.argsort(table['rank'])][:5]))
  assert (f"{workdir / 'label_issues_clean.png'}: the top suspects whose "
          f'given label is right; {clean_in_top} of the top 5 are') in out
  with Image.open(workdir_lib.label_issues_clean_sheet_path(workdir)) as sheet:
    assert sheet.format == 'PNG'
  # The folders are the truth: the realised transition matrix, 'ant' given
  # 'ant', 'bee' and 'cat' in 12, 6 and 6 of its 24 images.
  np.testing.assert_allclose(
      workdir_lib.read_result(workdir)['transition_matrix'],
      [[0.5, 0.25, 0.25], [0, 1, 0], [0, 0, 1]])
  with Image.open(workdir_lib.noise_transition_path(workdir)) as plot:
    assert plot.format == 'PNG'
  assert (f"{workdir / 'noise_transition.png'}: true class against given "
          f'label; 16.67% of the labels are wrong, the list flags '
          f'{100 * flagged / 72:.2f}%') in out
