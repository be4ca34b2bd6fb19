"""End-to-end tests of the training harness on digits (no download)."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import data
from experiments import train
from experiments.configs import digits
from ogc_jax import losses as ogc_losses
from experiments import noise as noise_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  """The decoded-data cache of this module's runs, not the user's ~/.cache."""
  return str(tmp_path_factory.mktemp('data_cache'))


def tiny_config(cache, **overrides):
  config = digits.get_config()
  config.cache_dir = cache
  config.num_epochs = 4
  config.ogc.queue_size = 256
  config.ogc.update_period = 2
  config.noise.rate = 0.4
  config.progress = False
  config.update_from_flattened_dict(overrides)
  return config


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def final_params(workdir):
  ckpt = os.path.join(workdir, 'checkpoints')
  step = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(ckpt, str(step), 'default'))
  return restored['params']


def test_trains_ogc_on_digits_and_writes_everything(tmp_path, cache):
  config = tiny_config(cache, num_epochs=6, checkpoint_every=2)
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(config, workdir)
  rows = read_metrics(workdir)
  assert [r['epoch'] for r in rows] == [1, 2, 3, 4, 5, 6]
  accuracies = [r['test_accuracy'] for r in rows]
  assert result['final_test_accuracy'] == pytest.approx(np.mean(accuracies))
  assert result['best_test_accuracy'] == pytest.approx(max(accuracies))
  assert result['final_test_accuracy'] > 0.6  # 10 classes: chance is 0.1
  # The true noise rate is the one the noise module realises.
  digits_data = data.load_digits()
  expected = noise_lib.symmetric(digits_data.train_labels, 10, 0.4, config.seed)
  assert rows[-1]['true_noise_rate'] == pytest.approx(expected.noise_rate)
  last = rows[-1]
  # The threshold was fitted: tau below "no clipping", mixture present.
  assert last['num_threshold_updates'] > 0
  assert last['tau'] < 1e7 and last['gmm']['mean_clean'] < last['gmm']['mean_noisy']
  assert 0 < last['estimated_noise_rate'] < 1
  # Clipped examples as OGC counted them: a whole number of the epoch's
  # 11 x 128 examples.
  clipped = last['clipped_fraction'] * 11 * 128
  assert 0 < clipped < 11 * 128 and abs(clipped - round(clipped)) < 1e-3
  # Clipping only lowers gradients, and noisy samples lose more of theirs.
  assert last['grad_noisy_after'] <= last['grad_noisy_before']
  assert last['grad_clean_after'] <= last['grad_clean_before']
  assert (last['grad_noisy_after'] / last['grad_noisy_before']
          < last['grad_clean_after'] / last['grad_clean_before'])
  queue = np.load(os.path.join(workdir, 'queues', 'epoch_0006.npy'))
  assert queue.shape == (256,) and np.all(np.isfinite(queue))
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['method'] == 'ogc_ce'
  # A finished workdir returns its result without training again.
  assert train.train_and_evaluate(config, workdir) == result


def test_a_baseline_is_its_loss_under_weights_of_one():
  config = tiny_config(None, method='gce', **{'loss_hparams.q': 0.5})
  method = train.Method(config)
  weighting = train.make_weighting(config, method, 0.1)
  logits = jnp.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
  labels = jnp.array([0, 2])
  p = ogc_losses.probability_of_label(logits, labels)
  weights, state = weighting.update(p, weighting.init())
  assert state == {} and weights.tolist() == [1.0, 1.0]
  # GCE by hand: (1 - p^q) / q, averaged over the batch.
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  p_label = np.asarray(probs)[[0, 1], [0, 2]].astype(np.float64)
  expected = np.mean((1 - p_label ** 0.5) / 0.5)
  assert float(method.loss(logits, labels, p, weights)) == pytest.approx(
      expected, rel=1e-6)
  assert not method.is_ogc


@pytest.mark.slow
def test_baseline_method_and_bad_configs(tmp_path, cache):
  result = train.train_and_evaluate(
      tiny_config(cache, method='gce', num_epochs=2), str(tmp_path / 'gce'))
  assert result['config']['method'] == 'gce'
  assert read_metrics(str(tmp_path / 'gce'))[-1]['tau'] is None
  with pytest.raises(ValueError, match='Unknown method'):
    train.train_and_evaluate(tiny_config(cache, method='nope'),
                             str(tmp_path / 'x'))
  with pytest.raises(ValueError, match='does not take'):
    train.train_and_evaluate(
        tiny_config(cache, **{'method': 'ce', 'loss_hparams.tau': 2.0}),
        str(tmp_path / 'y'))
  with pytest.raises(ValueError, match='different configuration'):
    train.train_and_evaluate(tiny_config(cache, method='gce', num_epochs=3),
                             str(tmp_path / 'gce'))


def test_a_batch_larger_than_the_data_creates_no_workdir(tmp_path, cache):
  with pytest.raises(train.ConfigError, match=r'config\.batch_size=5000 '
                     r"exceeds the 1437 training images of 'digits'"):
    train.train_and_evaluate(tiny_config(cache, batch_size=5000),
                             str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_sharded_training_equals_single_device(tmp_path, cache):
  if jax.device_count() < 8:
    pytest.skip('needs XLA_FLAGS=--xla_force_host_platform_device_count=8')
  results = {}
  for n in (1, 8):
    workdir = str(tmp_path / f'dev{n}')
    results[n] = train.train_and_evaluate(
        tiny_config(cache, num_epochs=2, num_devices=n), workdir)
    assert results[n]['devices'] == n
  p1, p8 = final_params(str(tmp_path / 'dev1')), final_params(str(tmp_path / 'dev8'))
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p1, p8)
  m1, m8 = read_metrics(str(tmp_path / 'dev1')), read_metrics(str(tmp_path / 'dev8'))
  for a, b in zip(m1, m8):
    assert a['test_accuracy'] == pytest.approx(b['test_accuracy'], abs=1 / 360)
    assert a['tau'] == pytest.approx(b['tau'], rel=1e-3)
    assert a['loss'] == pytest.approx(b['loss'], rel=1e-4)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path, cache):
  args = ['--config.num_epochs=6', '--config.ogc.queue_size=256',
          '--config.ogc.update_period=2', '--config.progress=False',
          f'--config.cache_dir={cache}']
  cmd = lambda workdir: [sys.executable, '-m', 'experiments.train',
                         f'--workdir={workdir}'] + args
  env = dict(os.environ, XLA_FLAGS='')  # one device, as a user's laptop
  full = tmp_path / 'full'
  subprocess.run(cmd(full), cwd=REPO, env=env, check=True, capture_output=True)

  killed = tmp_path / 'killed'
  proc = subprocess.Popen(cmd(killed), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  ckpt = killed / 'checkpoints'
  while time.time() < deadline and proc.poll() is None:
    if ckpt.exists() and any(d.name.isdigit() and int(d.name) >= 2
                             for d in ckpt.iterdir()):
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.05)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'the run ended before it was killed'
  assert not (killed / 'result.json').exists()
  subprocess.run(cmd(killed), cwd=REPO, env=env, check=True, capture_output=True)

  results = [json.loads((d / 'result.json').read_text()) for d in (full, killed)]
  for key in ('final_test_accuracy', 'best_test_accuracy', 'last_test_accuracy'):
    assert results[0][key] == results[1][key], key
  metrics = [read_metrics(str(d)) for d in (full, killed)]
  assert [r['epoch'] for r in metrics[1]] == [1, 2, 3, 4, 5, 6]
  for a, b in zip(*metrics):
    assert a['test_accuracy'] == b['test_accuracy']
    assert a['tau'] == b['tau']
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         final_params(str(full)), final_params(str(killed)))
