"""Tests for sweeps/tables.py: a sweep's results, table and CSV."""

import csv
import json

import pytest

from sweeps import grid
from sweeps import runner
from sweeps import tables
from tests.conftest import full_result


METHODS = [grid.parse_method('ce'),
           grid.parse_method('ogc_ce@ogc.epsilon=5:OGC-CE')]
NOISES = [grid.parse_noise(s) for s in
          ('symmetric:0.2', 'asymmetric:0.4', 'instance:0.4')]
SEEDS = [0, 1, 2]
# final_test_accuracy per (method, noise, seed); absent = unfinished.
FINALS = {
    ('ce', 'symmetric:0.2'): {0: 0.80, 1: 0.82, 2: 0.84},
    ('ogc_ce@ogc.epsilon=5', 'symmetric:0.2'): {0: 0.85, 1: 0.86, 2: 0.87},
    ('ce', 'asymmetric:0.4'): {0: 0.70, 1: 0.74},
    ('ogc_ce@ogc.epsilon=5', 'asymmetric:0.4'): {1: 0.71},
    ('ogc_ce@ogc.epsilon=5', 'instance:0.4'): {0: 0.6, 1: 0.6, 2: 0.6},
}


def _write_grid(root):
  by_entry = {m.entry: m for m in METHODS}
  by_spec = {n.spec: n for n in NOISES}
  for (entry, spec), finals in FINALS.items():
    for seed, final in finals.items():
      workdir = grid.run_dir(root, by_entry[entry], by_spec[spec], seed)
      workdir.mkdir(parents=True)
      (workdir / 'result.json').write_text(json.dumps(full_result(
          final, best_test_accuracy=final + 0.01, wall_time_s=10.0 + seed,
          num_epochs=5, true_noise_rate=by_spec[spec].rate - 0.001 * seed)))
  # An unfinished run (no result.json) and a run outside the grid.
  unfinished = grid.run_dir(root, by_entry['ce'], by_spec['instance:0.4'], 0)
  unfinished.mkdir(parents=True)
  (unfinished / 'metrics.jsonl').write_text('{"epoch": 1}\n')
  outside = grid.run_dir(root, by_entry['ce'], by_spec['instance:0.4'], 7)
  outside.mkdir(parents=True)
  (outside / 'result.json').write_text(json.dumps(full_result(
      0.99, num_epochs=5, true_noise_rate=0.4)))


def _table_rows(table):
  rows = {}
  for line in table.splitlines():
    if line.startswith('| ') and not line.startswith(('| Method', '| ---')):
      cells = [c.strip() for c in line.strip('|').split(' | ')]
      rows[cells[0]] = cells[1:]
  return rows


def test_collect_results_reads_finished_runs_of_the_grid(tmp_path):
  _write_grid(tmp_path)
  results = tables.collect_results(tmp_path, METHODS, NOISES, SEEDS)
  assert len(results) == 12  # 3 + 3 + 2 + 1 + 3
  assert [(r.method.entry, r.noise.spec, r.seed) for r in results[:4]] == [
      ('ce', 'symmetric:0.2', 0), ('ce', 'symmetric:0.2', 1),
      ('ce', 'symmetric:0.2', 2), ('ce', 'asymmetric:0.4', 0)]
  assert results[1].final_test_accuracy == 0.82
  assert results[1].best_test_accuracy == 0.83
  assert results[1].wall_time_s == 11.0


def test_render_table_cells_bold_and_partial_counts(tmp_path):
  _write_grid(tmp_path)
  results = tables.collect_results(tmp_path, METHODS, NOISES, SEEDS)
  table = tables.render_table(results, METHODS, NOISES, SEEDS, title='T',
                              command='python -m sweeps --x')
  lines = table.splitlines()
  assert lines[0] == '# T'
  assert 'python -m sweeps --x' in lines
  assert '| Method | symmetric 20% | asymmetric 40% | instance 40% |' in lines
  assert 'ddof=1' in table
  # By hand: ce sym 0.2 = 80, 82, 84 -> mean 82, sample std 2.
  # OGC sym 0.2 = 85, 86, 87 -> 86 ± 1, the best of its column.
  # ce asym 0.4 = 70, 74 (2 of 3) -> 72 ± sqrt(8) = 2.83, best of its column.
  # OGC asym 0.4 = 71 (1 of 3): no std. OGC instance = 60 x 3 -> 60 ± 0.
  # Realised noise: the runs record rate - 0.001 * seed, a range over seeds.
  assert ('Realised noise rates (the fraction of training labels that differ'
          ' from the true ones, as the runs record it): symmetric 20% '
          '19.80–20.00%; asymmetric 40% 39.90–40.00%; instance 40% '
          '39.80–40.00%.') in lines
  assert _table_rows(table) == {
      'ce': ['82.0 ± 2.0', '**72.0 ± 2.8** (2/3)', '–'],
      'OGC-CE': ['**86.0 ± 1.0**', '71.0 (1/3)', '**60.0 ± 0.0**'],
  }


def test_render_table_bolds_ties_at_the_shown_precision(tmp_path):
  methods = [grid.parse_method(m) for m in ('ce', 'gce', 'sce')]
  noise = grid.parse_noise('symmetric:0.4')
  results = [
      tables.RunResult(methods[0], noise, 0, tmp_path, 0.91234, 0.92, 1.0, 2, 0.4),
      tables.RunResult(methods[1], noise, 0, tmp_path, 0.91199, 0.92, 1.0, 2, 0.4),
      tables.RunResult(methods[2], noise, 0, tmp_path, 0.9114, 0.92, 1.0, 2, 0.4)]
  rows = _table_rows(tables.render_table(results, methods, [noise], [0]))
  assert rows == {'ce': ['**91.2**'], 'gce': ['**91.2**'], 'sce': ['91.1']}


def test_write_csv_rows(tmp_path):
  _write_grid(tmp_path / 'runs')
  results = tables.collect_results(tmp_path / 'runs', METHODS, NOISES, SEEDS)
  tables.write_csv(results, tmp_path / 't.csv')
  with open(tmp_path / 't.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 12
  assert list(rows[0]) == list(tables.CSV_FIELDS)
  row = rows[10]  # OGC instance seed 1
  assert {k: row[k] for k in tables.CSV_FIELDS[:-1]} == {
      'method': 'ogc_ce@ogc.epsilon=5', 'label': 'OGC-CE',
      'noise_kind': 'instance', 'noise_rate': '0.4', 'seed': '1',
      'final_test_accuracy': '0.6', 'best_test_accuracy': '0.61',
      'wall_time_s': '11.000', 'num_epochs': '5', 'true_noise_rate': '0.399',
      'labels_csv': ''}
  assert row['workdir'].endswith('ogc_ce+ogc.epsilon=5/instance_0.4/seed_1')
  # Relative to the repository where the run lies in it, so that a
  # committed CSV names no machine's folders.
  assert tables.read_csv(tmp_path / 't.csv')[
      'ogc_ce@ogc.epsilon=5', 'instance_0.4'] == {0: 0.6, 1: 0.6, 2: 0.6}
  inside = runner.REPO_ROOT / 'runs' / 'x'
  tables.write_csv([results[0]._replace(workdir=inside)], tmp_path / 'r.csv')
  assert (tmp_path / 'r.csv').read_text().splitlines()[1].endswith(',runs/x')
  finals = sorted(float(r['final_test_accuracy']) for r in rows)
  assert finals == sorted(
      v for per_seed in FINALS.values() for v in per_seed.values())


def test_bad_result_json_names_the_file(tmp_path):
  workdir = grid.run_dir(tmp_path, METHODS[0], NOISES[0], 0)
  workdir.mkdir(parents=True)
  (workdir / 'result.json').write_text('{"final_test_accuracy": 0.5}')
  with pytest.raises(ValueError, match=r'result.json lacks \[.best_test'):
    tables.collect_results(tmp_path, METHODS, NOISES, SEEDS)
