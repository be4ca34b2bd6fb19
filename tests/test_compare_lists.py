"""Tests for sweeps/compare_lists.py: the comparison's cleanlab part and table."""

import csv

from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
import numpy as np
import pytest
from sklearn import metrics

from experiments import files
from experiments import workdir as workdir_lib
from sweeps import grid
from sweeps import compare_lists as comparison
from tests.conftest import full_result

NOISE = grid.parse_noise('symmetric:0.4')


def _noisy_predictions(n=300, classes=4, seed=0):
  """Labels, 40% of them wrong, and probabilities that mostly know better."""
  rng = np.random.default_rng(seed)
  true = rng.integers(0, classes, n)
  given = np.where(rng.random(n) < 0.4,
                   (true + rng.integers(1, classes, n)) % classes, true)
  logits = rng.normal(0, 1, (n, classes)) + 3 * np.eye(classes)[true]
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  return given.astype(np.int32), true.astype(np.int32), probs.astype(np.float32)


def _write_folds(root, seed, given, true, probs, wall_time_s=2.0):
  """The fold runs' records and held-out probabilities, as a run writes them."""
  folds = np.arange(len(given)) % comparison.FOLDS
  for k, method in enumerate(comparison.FOLD_RUNS):
    workdir = grid.run_dir(root, method, NOISE, seed)
    workdir.mkdir(parents=True)
    out = np.flatnonzero(folds == k)[::-1]  # any order: the table sorts
    workdir_lib.write_heldout_probs(workdir, indices=out, probs=probs[out],
                                    labels=given[out], true_labels=true[out])
    workdir_lib.write_result(workdir, full_result(0.5,
                                                  wall_time_s=wall_time_s))


def test_cleanlab_on_the_folds_is_cleanlab_on_the_whole_set(tmp_path):
  given, true, probs = _noisy_predictions()
  _write_folds(tmp_path, 0, given, true, probs)
  workdirs = [grid.run_dir(tmp_path, m, NOISE, 0) for m in comparison.FOLD_RUNS]
  measures = comparison.cleanlab_measures(workdirs)
  issues = find_label_issues(given, probs)
  wrong = given != true
  assert measures['flagged'] == issues.sum() and measures['noisy'] == wrong.sum()
  assert measures['f1'] == pytest.approx(metrics.f1_score(wrong, issues))
  quality = get_label_quality_scores(given, probs)
  assert measures['auroc'] == pytest.approx(
      metrics.roc_auc_score(wrong, -quality))
  assert measures['average_precision'] == pytest.approx(
      metrics.average_precision_score(wrong, -quality))
  assert measures['cleanlab_version'] == '2.9.0'
  # Folds that overlap are refused.
  with pytest.raises(ValueError, match='overlap'):
    comparison.heldout_predictions(workdirs[:1] * 2)


def _ogc_block(f1, queue_f1=None):
  block = {'examples': 300, 'flagged': 130, 'noisy': 120, 'auroc': 0.9,
           'average_precision': 0.8, 'precision': 0.7, 'recall': 0.75,
           'f1': f1, 'mixture': {}}
  if queue_f1 is not None:
    block['queue_mixture'] = dict(block, f1=queue_f1)
  return block


def test_the_table_puts_the_lists_side_by_side(tmp_path):
  given, true, probs = _noisy_predictions()
  for seed in (0, 1):
    _write_folds(tmp_path, seed, given, true, probs, wall_time_s=2.0 + seed)
    for method, block in ((comparison.OGC, _ogc_block(0.7 + seed / 10, 0.6)),
                          (comparison.SMALL_LOSS, _ogc_block(0.5))):
      if method == comparison.SMALL_LOSS and seed == 1:
        continue  # one seed of the small-loss list unfinished
      workdir = grid.run_dir(tmp_path, method, NOISE, seed)
      workdir.mkdir(parents=True)
      workdir_lib.write_result(workdir, full_result(
          0.5, wall_time_s=10.0 + seed, label_issues=block))
  rows = comparison.collect(tmp_path, [NOISE], [0, 1])
  assert [(r.row, r.seed) for r in rows] == [
      ('ogc', 0), ('ogc_queue', 0), ('cleanlab', 0), ('small_loss', 0),
      ('ogc', 1), ('ogc_queue', 1), ('cleanlab', 1)]
  cleanlab_row = rows[2]
  assert cleanlab_row.trainings == 5 and cleanlab_row.wall_time_s == 10.0
  record = comparison.cleanlab_path(tmp_path, NOISE, 0)
  assert files.read_json(record)['measures'] == cleanlab_row.measures
  text = comparison.render_table(rows, [NOISE], [0, 1], title='T',
                                 command='cmd')
  lines = {line.split(' | ')[1]: line for line in text.splitlines()
           if line.startswith('| symmetric 40% |')}
  assert lines["OGC-CE's list (one training)"].endswith(
      '| 0.900 ± 0.000 | 0.800 ± 0.000 | 0.750 ± 0.071 | 0.700 ± 0.000 | '
      '0.750 ± 0.000 | 130 ± 0 | 120 ± 0 | 1 | 10 ± 1 |')
  assert '| small-loss mixture, CE (1/2) |' in text
  # 5 x 2 s and 5 x 3 s: 12.5 ± 3.5, to the second.
  assert '| 5 | 12 ± 4 |' in lines['cleanlab, 5-fold CE']
  # The best F1 of the setting is in bold, and only it.
  f1s = {key: line.split(' | ')[4] for key, line in lines.items()}
  assert sum(f.startswith('**') for f in f1s.values()) == 1
  comparison.write_csv(rows, tmp_path / 't.csv')
  with open(tmp_path / 't.csv', newline='') as f:
    written = list(csv.DictReader(f))
  assert [r['list'] for r in written] == [r.row for r in rows]
  assert float(written[0]['f1']) == 0.7 and written[0]['trainings'] == '1'
