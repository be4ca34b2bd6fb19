"""The train loop's dispatch: chunks of steps give the same run as single steps."""

import json
import os

import numpy as np
import pytest

from experiments import train
from experiments.configs import digits

TIMING = ('step_time_ms', 'images_per_second', 'epoch_time_s')


def _metrics(config, workdir):
  train.train_and_evaluate(config, str(workdir))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _flatten(rows):
  out = []
  for r in rows:
    for k in sorted(r):
      v = r[k]
      if isinstance(v, dict):
        out += [v[j] for j in sorted(v)]
      elif isinstance(v, (int, float)):
        out.append(v)
  return np.asarray(out, np.float64)


@pytest.mark.parametrize('steps_per_dispatch', [0, 4])
def test_chunked_steps_match_single_steps(tmp_path, steps_per_dispatch):
  # Digits: 11 steps an epoch, so 4 gives chunks of 4, 4 and 3 (two programs).
  def config(n):
    return _tiny(tmp_path, num_epochs=3, steps_per_dispatch=n)

  single = _metrics(config(1), tmp_path / 'single')
  chunked = _metrics(config(steps_per_dispatch), tmp_path / 'chunked')
  assert [r['epoch'] for r in chunked] == [1, 2, 3]
  assert chunked[-1]['num_threshold_updates'] > 0  # refits inside the loop
  np.testing.assert_allclose(_flatten(chunked), _flatten(single), rtol=1e-5,
                             atol=1e-6)


def _tiny(tmp_path, seed=0, kind='symmetric', rate=0.4, **overrides):
  c = digits.get_config()
  c.cache_dir = str(tmp_path / 'cache')
  c.num_epochs = 2
  c.ogc.queue_size = 256
  c.ogc.update_period = 2
  c.progress = False
  c.seed = seed
  c.noise.kind = kind
  c.noise.rate = rate
  for key, value in overrides.items():
    c[key] = value
  return c


def test_packed_runs_match_runs_trained_alone(tmp_path):
  configs = [_tiny(tmp_path, 0), _tiny(tmp_path, 1),
             _tiny(tmp_path, 0, 'asymmetric', 0.3)]
  alone = [_metrics(c, tmp_path / f'alone{i}') for i, c in enumerate(configs)]
  # One run is finished before packing: it is returned, not retrained.
  finished = train.train_and_evaluate(configs[0], str(tmp_path / 'packed0'))
  results = train.train_and_evaluate_runs(
      configs, [str(tmp_path / f'packed{i}') for i in range(3)])
  assert results[0] == finished
  assert [r['packed_runs'] for r in results] == [1, 2, 2]
  for i, single in enumerate(alone):
    with open(tmp_path / f'packed{i}' / 'metrics.jsonl') as f:
      packed = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
                for line in f]
    # Batched matmuls differ from single ones in the last bits; EM, which
    # stops at a log-likelihood tolerance, turns that into ~1e-4 in the
    # mixture and tau, and a sample near the threshold may then be clipped
    # in one run and not the other: diagnostics agree to ~0.5% after two
    # epochs, test accuracy to a test image or two (digits has 360).
    np.testing.assert_allclose([r['test_accuracy'] for r in packed],
                               [r['test_accuracy'] for r in single], atol=2 / 360)
    assert packed[-1]['num_threshold_updates'] > 0
    np.testing.assert_allclose(_flatten(packed), _flatten(single), rtol=1e-2,
                               atol=1e-6)
  # The runs' own settings reach them: the noise differs as configured.
  assert results[2]['true_noise_rate'] != results[1]['true_noise_rate']


def test_packing_refuses_runs_that_differ_in_more_than_seed_and_noise(
    tmp_path):
  with pytest.raises(ValueError, match=r"differ in \['method'\]"):
    train.train_and_evaluate_runs(
        [_tiny(tmp_path), _tiny(tmp_path, 1, method='ce')],
        [str(tmp_path / 'a'), str(tmp_path / 'b')])
  with pytest.raises(ValueError, match='distinct workdirs'):
    train.train_and_evaluate_runs([_tiny(tmp_path), _tiny(tmp_path, 1)],
                                  [str(tmp_path / 'a'), str(tmp_path / 'a')])
