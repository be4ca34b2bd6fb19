"""The train loop's dispatch: chunks of steps give the same run as single steps."""

import json
import os

import numpy as np
import pytest

from experiments import train

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


@pytest.mark.slow
@pytest.mark.parametrize('steps_per_dispatch', [0, 4])
def test_chunked_steps_match_single_steps(tmp_path, tiny_config,
                                          steps_per_dispatch):
  # Digits: 11 steps an epoch, so 4 gives chunks of 4, 4 and 3 (two programs).
  def config(n):
    return tiny_config(num_epochs=3, steps_per_dispatch=n)

  single = _metrics(config(1), tmp_path / 'single')
  chunked = _metrics(config(steps_per_dispatch), tmp_path / 'chunked')
  assert [r['epoch'] for r in chunked] == [1, 2, 3]
  assert chunked[-1]['num_threshold_updates'] > 0  # refits inside the loop
  np.testing.assert_allclose(_flatten(chunked), _flatten(single), rtol=1e-5,
                             atol=1e-6)

