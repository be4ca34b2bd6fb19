"""Several processes for real: two processes of two CPU devices each.

Two `experiments.train` processes meet on 127.0.0.1 (gloo collectives on the
CPU) and train digits for two epochs on a mesh over their four devices. The
result must equal one process's on four devices to float tolerance, and the
workdir must hold one set of files, written by process 0 alone; the same
after a resume from the epoch-1 checkpoint.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from experiments import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300  # per launch; a process that hangs in a collective is killed
TIMING_KEYS = {'epoch_time_s', 'step_time_ms', 'images_per_second',
               'wall_time_s', 'train_time_s'}


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def env_with(devices):
  return dict(os.environ, JAX_PLATFORMS='cpu',
              JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def launch(workdir, args, num_processes):
  """Runs the training command in ``num_processes`` processes; their outputs."""
  cmd = [sys.executable, '-m', 'experiments.train', f'--workdir={workdir}'
         ] + args
  if num_processes == 1:
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env_with(4), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
  else:
    port = free_port()
    procs = [subprocess.Popen(
        cmd + ['--config.distributed=True',
               f'--config.coordinator_address=127.0.0.1:{port}',
               f'--config.num_processes={num_processes}',
               f'--config.process_id={i}'],
        cwd=REPO, env=env_with(2), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(num_processes)]
  outputs = []
  try:
    for proc in procs:
      out, err = proc.communicate(timeout=TIMEOUT_S)
      assert proc.returncode == 0, err[-3000:]
      outputs.append(out)
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return outputs


TENSORBOARD_FILES = os.path.join(workdir_lib.SUMMARIES_DIR,
                                 'events.out.tfevents.*')


def event_files(workdir):
  """The TensorBoard event files of a workdir (one per start of a writer)."""
  return os.listdir(workdir_lib.summaries_dir(workdir))


def files(workdir):
  """Relative paths of the workdir's files, checkpoints' insides aside.

  TensorBoard's event files, named by time and host, are one pattern.
  """
  found = set()
  for root, _, names in os.walk(workdir):
    rel = os.path.relpath(root, workdir)
    if rel.split(os.sep)[0] == workdir_lib.CHECKPOINTS_DIR:
      continue
    if rel == workdir_lib.SUMMARIES_DIR:
      found.add(TENSORBOARD_FILES)
      continue
    found.update(os.path.normpath(os.path.join(rel, n)) for n in names)
  return found


def assert_same_run(a, b):
  ra, rb = (workdir_lib.read_result(str(w)) for w in (a, b))
  for key in ('final_test_accuracy', 'best_test_accuracy',
              'last_test_accuracy', 'true_noise_rate'):
    assert ra[key] == pytest.approx(rb[key], abs=1e-6), key
  assert ra['devices'] == rb['devices'] == 4
  # The test set's counts per class, summed over every process's devices.
  assert ra['classes_never_predicted'] == rb['classes_never_predicted']
  ma, mb = (workdir_lib.read_metrics(str(w)) for w in (a, b))
  assert [r['epoch'] for r in ma] == [r['epoch'] for r in mb] == [1, 2]
  for x, y in zip(ma, mb):
    for key in set(x) - TIMING_KEYS:
      if isinstance(x[key], float):
        assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-6), key
    assert sum(x['test_predictions_per_class']) == 360
    assert x['test_predictions_per_class'] == y['test_predictions_per_class']
    assert x['test_accuracy_per_class'] == pytest.approx(
        y['test_accuracy_per_class'], abs=1e-6)
  np.testing.assert_allclose(
      np.load(os.path.join(a, 'queues', 'epoch_0002.npy')),
      np.load(os.path.join(b, 'queues', 'epoch_0002.npy')), rtol=1e-5)


@pytest.mark.slow
def test_two_processes_equal_one_process_and_write_one_set_of_files(
    tmp_path, tiny_args):
  # Digits' own 60% noise: at 40% a refit's ratio R turns on the last bits
  # of the sums, which differ between the two device layouts.
  args = tiny_args(num_epochs=2, checkpoint_every=1, **{'noise.rate': 0.6})
  one, two = tmp_path / 'one', tmp_path / 'two'
  out_one = launch(one, args, 1)
  out_two = launch(two, args, 2)
  assert_same_run(str(one), str(two))
  assert files(two) == files(one) == {
      'config.json', 'metrics.jsonl', 'result.json', 'label_issues.csv',
      os.path.join('queues', 'epoch_0001.npy'),
      os.path.join('queues', 'epoch_0002.npy'), TENSORBOARD_FILES}
  # Process 0 alone writes the summaries.
  assert len(event_files(two)) == len(event_files(one)) == 1
  # The list scores every training example in both layouts (process 0
  # writes it from the logits of all processes' devices).
  lists = [(w / 'label_issues.csv').read_text().splitlines() for w in (one, two)]
  assert len(lists[0]) == len(lists[1]) > 1
  indices = [sorted(int(row.split(',')[1]) for row in rows[1:]) for rows in lists]
  assert indices[0] == indices[1] == list(range(len(lists[0]) - 1))
  # Process 0 prints the result, process 1 does not (gloo's C++ logs its
  # connections to stdout in both).
  printed = lambda out: json.loads(out[out.index('{'):])
  assert printed(out_two[0])['final_test_accuracy'] == pytest.approx(
      printed(out_one[0])['final_test_accuracy'], abs=1e-6)
  assert '{' not in out_two[1], out_two[1]
  config = json.loads((two / 'config.json').read_text())
  assert config['process_id'] == 0 and config['num_processes'] == 2

  # Resume: as if killed after epoch 1's checkpoint.
  shutil.rmtree(two / workdir_lib.CHECKPOINTS_DIR / '2')
  (two / 'result.json').unlink()
  (two / 'queues' / 'epoch_0002.npy').unlink()
  launch(two, args, 2)
  assert_same_run(str(one), str(two))
  assert files(two) == files(one)


def test_bad_distributed_settings_are_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.train', f'--workdir={tmp_path}',
       '--config.distributed=True', '--config.coordinator_address=127.0.0.1:1'],
      cwd=REPO, env=env_with(1), text=True, capture_output=True, timeout=120)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith('error: config.distributed: ')
  assert 'Number of processes must be defined' in lines[0]
  assert '--config.num_processes' in lines[0]
  assert not os.listdir(tmp_path)
