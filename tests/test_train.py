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
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import orbax.checkpoint as ocp
import pytest

from benchmarks import per_example as per_example_route
from experiments import data
from experiments import evaluation as evaluation_lib
from experiments import methods
from experiments import noise as noise_lib
from experiments import train
from experiments import workdir as workdir_lib
from experiments.errors import ConfigError
from tests.conftest import train_keeping_run_end

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def read_summaries(workdir):
  """tag -> [(step, value)] of the TensorBoard event files in ``workdir``.

  Read record by record (TFRecord framing: length, its CRC, the Event proto,
  its CRC) with tensorboardX's own proto, independent of its writer.
  """
  import struct  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  folder = workdir_lib.summaries_dir(workdir)
  series = {}
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event.FromString(
          data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        series.setdefault(value.tag, []).append((event.step,
                                                 value.simple_value))
  return series


def final_params(workdir):
  ckpt = os.path.join(workdir, 'checkpoints')
  step = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(ckpt, str(step), 'default'))
  return restored['params']


def test_trains_ogc_on_digits_and_writes_everything(tmp_path, tiny_config):
  config = tiny_config(num_epochs=6, checkpoint_every=2)
  workdir = str(tmp_path / 'run')
  result, end = train_keeping_run_end(config, workdir)
  rows = read_metrics(workdir)
  assert [r['epoch'] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert all(set(r) == set(evaluation_lib.ROW_KEYS) for r in rows)
  assert set(result) == set(workdir_lib.RESULT_KEYS)
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
  # TensorBoard holds the same rows: flat, nested and per-class fields.
  summaries = read_summaries(workdir)
  for tag, values in (
      ('test_accuracy', [r['test_accuracy'] for r in rows]),
      ('gmm/mean_clean', [r['gmm']['mean_clean'] for r in rows]),
      ('test_accuracy_per_class/3',
       [r['test_accuracy_per_class'][3] for r in rows])):
    assert [step for step, _ in summaries[tag]] == [1, 2, 3, 4, 5, 6], tag
    np.testing.assert_allclose([v for _, v in summaries[tag]], values,
                               rtol=1e-6, err_msg=tag)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['method'] == 'ogc_ce'
  # The end of the run (once) sees the final state and the trained network:
  # its test predictions give the last epoch's accuracy.
  assert end.is_main and end.workdir == workdir
  assert int(end.state.num_threshold_updates) == last['num_threshold_updates']
  test = data.load_digits()
  logits = end.logits(test.test_images)
  assert logits.shape == (360, 10)
  predictions = np.argmax(logits, -1)
  assert np.mean(predictions == test.test_labels) == pytest.approx(
      rows[-1]['test_accuracy'], abs=1e-9)
  # Per class, from the same pass: the accuracies weighted by the classes'
  # test examples give back the accuracy, the predictions count every test
  # example; the last epoch's are the trained network's.
  totals = np.bincount(test.test_labels, minlength=10)
  for row in rows:
    assert np.dot(row['test_accuracy_per_class'], totals) == pytest.approx(
        row['test_accuracy'] * 360, abs=1e-9)
    assert sum(row['test_predictions_per_class']) == 360
  assert rows[-1]['test_predictions_per_class'] == np.bincount(
      predictions, minlength=10).tolist()
  np.testing.assert_allclose(
      rows[-1]['test_accuracy_per_class'],
      [np.mean(predictions[test.test_labels == c] == c) for c in range(10)],
      atol=1e-12)
  assert result['classes_never_predicted'] == np.flatnonzero(
      np.bincount(predictions, minlength=10) == 0).tolist()
  assert len(end.data.labels) == 1437
  # A finished workdir returns its result without training again.
  assert train.train_and_evaluate(config, workdir) == result


def test_a_baseline_is_its_loss_and_fills_no_ogc_field(tiny_config):
  config = tiny_config(method='gce', **{'loss_hparams.q': 0.5})
  method = methods.create_method(config, lambda step: 0.1)
  assert type(method) is methods.Baseline and method.init() == {}
  logits = jnp.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
  labels = jnp.array([0, 2])
  # The network is its parameters: the gradient is d loss / d logits.
  grads, step = method.gradients(lambda params, x: (params, {}), logits, None,
                                 labels, method.init())
  # GCE by hand: (1 - p^q) / q, averaged over the batch; its gradient with
  # respect to logit j is -p^q (1[j = y] - p_j) / 2.
  probs = np.exp(np.float64(logits))
  probs /= probs.sum(-1, keepdims=True)
  p_label = probs[[0, 1], [0, 2]]
  assert float(step.loss) == pytest.approx(
      np.mean((1 - p_label ** 0.5) / 0.5), rel=1e-6)
  one_hot = np.eye(3)[[0, 2]]
  np.testing.assert_allclose(
      grads, -(p_label ** 0.5)[:, None] * (one_hot - probs) / 2, rtol=1e-5)
  assert step.state == {} and method.step_sums(step, None) == {}
  # Its metrics rows have every field, OGC's null.
  sums = train.EpochSums.zeros(method)._replace(count=128.0, loss=12.8,
                                                n_clean=77.0, n_noisy=51.0)
  evaluation = evaluation_lib.Evaluation(correct=np.array([1, 1]),
                                total=np.array([2, 2]),
                                predicted=np.array([2, 2]))
  row = evaluation_lib.epoch_row(
      1, evaluation, 0.1, sums, noise_lib.NoisyLabels(
          np.zeros(1), np.eye(2), 0.4), method.metrics({}, sums), 1.0, 11, 128)
  assert set(row) == set(evaluation_lib.ROW_KEYS)
  assert row['loss'] == pytest.approx(0.1) and row['tau'] is None
  assert row['gmm'] is None and row['num_threshold_updates'] is None


class PixelLogits:
  """A network whose logits are its images' pixels, ``[n, 1, 1, classes]``."""

  def apply(self, variables, x, train):
    del variables, train
    return x.reshape(len(x), -1)


def test_evaluation_counts_each_class_over_eight_devices(tiny_config):
  # 11 test examples of 4 classes, in batches of 8 sharded over 8 devices
  # as a run evaluates them: the second batch is 3 examples and 5 of
  # padding, whose label and prediction (class 0) must not count.
  labels = np.int32([0, 0, 0, 1, 1, 1, 1, 2, 2, 0, 1])
  predicted = np.int32([0, 1, 0, 1, 1, 0, 1, 0, 1, 3, 1])
  images = (200 * np.eye(4, dtype=np.uint8)[predicted])[:, None, None, :]
  devices = jax.devices()
  assert len(devices) == 8
  mesh = Mesh(np.array(devices), ('data',))
  config = tiny_config(method='ce')
  method = methods.create_method(config, lambda step: 0.1)
  steps = train.make_steps(config, PixelLogits(), method, None,
                           np.zeros(4, np.float32), np.ones(4, np.float32),
                           NamedSharding(mesh, P('data')), 11)
  eval_step = jax.jit(steps.evaluate,
                      out_shardings=NamedSharding(mesh, P()))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P('data')))
  state = train.TrainState(step=jnp.zeros([], jnp.int32), params={},
                           batch_stats={}, opt_state={}, method_state={})
  evaluation = evaluation_lib.evaluate(eval_step, state, images, labels, 8, put)
  # By hand: class 0 has 2 of its 4 right, class 1 4 of 5, class 2 none of
  # 2, class 3 no test example; class 2 is never predicted.
  np.testing.assert_array_equal(evaluation.correct, [2, 4, 0, 0])
  np.testing.assert_array_equal(evaluation.total, [4, 5, 2, 0])
  np.testing.assert_array_equal(evaluation.predicted, [4, 6, 0, 1])
  sums = train.EpochSums.zeros(method)._replace(count=1.0)
  row = evaluation_lib.epoch_row(
      1, evaluation, 0.1, sums, noise_lib.NoisyLabels(
          np.zeros(1), np.eye(2), 0.0), {}, 1.0, 1, 8)
  assert row['test_accuracy'] == 6 / 11
  assert row['test_accuracy_per_class'] == [0.5, 0.8, 0.0, None]
  assert row['test_predictions_per_class'] == [4, 6, 0, 1]
  assert evaluation_lib.classes_never_predicted(row) == [2]
  json.dumps(row, allow_nan=False)  # a metrics.jsonl line


@pytest.mark.slow
def test_per_example_route_gives_the_fused_update(tiny_config):
  # Without BatchNorm the two routes of OGC are one update: the same
  # parameters and OGC state after steps with refits that clip, in the
  # harness's step. Epsilon 1 sets the target ratio at 1.1, which this queue's
  # mixtures cross with part of the examples clipped. (Not epsilon 0: its
  # target, 1, is met by every tau that clips all examples, so bisection
  # ends anywhere on that flat stretch, on the last bits of the losses.)
  import optax  # pylint: disable=g-import-not-at-top
  from experiments import models  # pylint: disable=g-import-not-at-top
  config = tiny_config(batch_size=32, **{'ogc.queue_size': 64, 'ogc.epsilon': 1.0})
  rng = np.random.default_rng(0)
  num_train = 128
  arrays = (rng.integers(0, 256, (num_train, 8, 8, 1), np.uint8),
            rng.integers(0, 10, num_train).astype(np.int32))
  arrays += (np.where(rng.random(num_train) < 0.4, (arrays[1] + 1) % 10,
                      arrays[1]).astype(np.int32),)
  sharding = NamedSharding(Mesh(np.array(jax.devices()[:1]), ('data',)), P())
  model = models.from_config(config, 10)
  schedule = optax.constant_schedule(config.learning_rate)
  tx = train.create_optimizer(config, schedule)
  states = {}
  routes = (('fused', methods.OGC(config, schedule)),
            ('per_example', per_example_route.OGCPerExample(config, schedule)))
  for name, method in routes:
    steps = train.make_steps(config, model, method, tx, np.float32([0.5]),
                             np.float32([0.3]), sharding, num_train)
    state = train.create_train_state(jax.random.key(0), model, tx, method,
                                     (8, 8, 1))
    carry = (state, train.EpochSums.zeros(method))
    step = jax.jit(steps.train)
    for _ in range(8):
      carry = step(*carry, arrays, jnp.arange(num_train), jax.random.key(1))
    states[name] = carry
  (fused, fused_sums), (per_example, per_example_sums) = states.values()
  assert int(fused.method_state.num_threshold_updates) == 4
  # OGC clipped some examples, not all.
  assert 0 < fused_sums.method['clipped'] < 8 * 32
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
      (fused.params, fused.method_state), (per_example.params,
                                           per_example.method_state))
  np.testing.assert_allclose(per_example_sums.method['clipped'],
                             fused_sums.method['clipped'])


@pytest.mark.slow
def test_baseline_method_and_bad_configs(tmp_path, tiny_config):
  result = train.train_and_evaluate(
      tiny_config(method='gce', num_epochs=2), str(tmp_path / 'gce'))
  assert result['config']['method'] == 'gce'
  rows = read_metrics(str(tmp_path / 'gce'))
  assert all(set(r) == set(evaluation_lib.ROW_KEYS) for r in rows)
  assert rows[-1]['tau'] is None and rows[-1]['grad_noisy_before'] is None
  assert not (tmp_path / 'gce' / 'queues').exists()
  with pytest.raises(ValueError, match='Unknown method'):
    train.train_and_evaluate(tiny_config(method='nope'),
                             str(tmp_path / 'x'))
  with pytest.raises(ValueError, match='does not take'):
    train.train_and_evaluate(
        tiny_config(**{'method': 'ce', 'loss_hparams.tau': 2.0}),
        str(tmp_path / 'y'))
  with pytest.raises(ValueError, match='different configuration'):
    train.train_and_evaluate(tiny_config(method='gce', num_epochs=3),
                             str(tmp_path / 'gce'))


def test_a_batch_larger_than_the_data_creates_no_workdir(tmp_path,
                                                        tiny_config):
  with pytest.raises(ConfigError, match=r'config\.batch_size=5000 '
                     r"exceeds the 1437 training images of 'digits'"):
    train.train_and_evaluate(tiny_config(batch_size=5000),
                             str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_sharded_training_equals_single_device(tmp_path, tiny_config):
  if jax.device_count() < 8:
    pytest.skip('needs XLA_FLAGS=--xla_force_host_platform_device_count=8')
  results = {}
  for n in (1, 8):
    workdir = str(tmp_path / f'dev{n}')
    results[n] = train.train_and_evaluate(
        tiny_config(num_epochs=2, num_devices=n), workdir)
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
def test_killed_run_resumes_to_the_same_result(tmp_path, tiny_args):
  args = tiny_args(num_epochs=6)
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
