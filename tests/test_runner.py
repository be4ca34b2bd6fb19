"""Tests for sweeps/runner.py: runs as Ray tasks on a local Ray instance.

The runs are conftest.FAKE_TRAIN. A cluster of two nodes, with one lost
mid-sweep, is tests/test_ray_cluster.py.
"""

import _thread
import io
import signal
import threading
import time

import pytest

from experiments import environment
from sweeps import runner
from tests.conftest import alive
from tests.conftest import fake_runs


def test_a_finished_run_is_skipped_and_a_failed_one_reported(tmp_path,
                                                             fake_train):
  del fake_train
  runs = fake_runs(tmp_path, ['fast', 'fails', 'fast2'])
  runs[0].workdir.mkdir(parents=True)
  (runs[0].workdir / 'result.json').write_text('{}')
  out = io.StringIO()
  outcome = runner.execute(runs, 'config.py', jobs=1,
                           env=environment.child_env(tmp_path, 1), out=out)
  assert (outcome.skipped, outcome.failed, outcome.done) == (
      [runs[0]], [runs[1]], [runs[2]])
  text = out.getvalue()
  assert text.startswith('Ray: 1 node, ')
  assert '[1/3] fast symmetric:0.4 seed 0: skipped (finished)' in text
  log = runs[1].workdir / 'log.txt'
  assert (f'[2/3] fails symmetric:0.4 seed 0: FAILED (exit code 3) after'
          in text and f'log: {log}\n    Traceback: boom' in text)
  assert runner.last_line(log) == 'Traceback: boom'
  assert '  0 done, 0 running, 1 failed, 1 waiting\n' in text
  assert '  1 done, 0 running, 1 failed, 0 waiting\n' in text
  # The log: the command as the sweep shows it, then the Ray node.
  lines = (runs[2].workdir / 'log.txt').read_text().splitlines()
  assert lines[0].startswith('$ python -m experiments.train --config ')
  assert lines[1].startswith('# on Ray node ')


def test_records_come_back_from_a_node_disk(tmp_path, fake_train):
  del fake_train
  runs = fake_runs(tmp_path / 'root', ['fast'])
  out = io.StringIO()
  outcome = runner.execute(
      runs, 'config.py', jobs=1, env=environment.child_env(tmp_path, 1), out=out,
      options=runner.RayOptions(workdirs='node'), root=tmp_path / 'root')
  assert outcome.done == runs, out.getvalue()
  # The run wrote to the node's disk; its records, not its other files,
  # are under the root.
  on_node = runner.node_root(tmp_path / 'root') / runs[0].workdir.relative_to(
      tmp_path / 'root')
  assert (on_node / 'env.json').exists() and (on_node / 'launches').exists()
  assert sorted(p.name for p in runs[0].workdir.iterdir()) == [
      'config.json', 'log.txt', 'metrics.jsonl', 'result.json',
      'sweep_args.json']


def test_ctrl_c_cancels_the_runs_and_kills_their_processes(tmp_path,
                                                           fake_train):
  del fake_train
  runs = fake_runs(tmp_path, ['slow', 'fast'])
  child_pid = runs[0].workdir / 'child.pid'

  def interrupt_once_started():
    deadline = time.monotonic() + 120
    while not child_pid.exists() and time.monotonic() < deadline:
      time.sleep(0.05)
    _thread.interrupt_main()  # Ctrl-C

  threading.Thread(target=interrupt_once_started, daemon=True).start()
  out = io.StringIO()
  # Ctrl-C as a terminal delivers it, also where this process started with
  # SIGINT ignored (a background job of a script), where interrupt_main
  # would do nothing.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    outcome = runner.execute(runs, 'config.py', jobs=1,
                             env=environment.child_env(tmp_path, 1), out=out)
  finally:
    signal.signal(signal.SIGINT, previous)
  assert outcome.interrupted and outcome.stopped == [runs[0]]
  assert outcome.not_started == [runs[1]]
  assert ('[1/2] slow symmetric:0.4 seed 0: stopped unfinished by an '
          'interruption after') in out.getvalue()
  child = int(child_pid.read_text())
  for _ in range(100):
    if not alive(child):
      break
    time.sleep(0.1)
  assert not alive(child)
  assert not (runs[0].workdir / 'result.json').exists()


def test_bad_ray_options_are_one_line_errors():
  with pytest.raises(ValueError, match='GPUs per run must be >= 0'):
    runner.RayOptions(gpus_per_run=-1).check()
  with pytest.raises(ValueError, match='whole number, not 1.5'):
    runner.RayOptions(gpus_per_run=1.5).check()
  with pytest.raises(ValueError, match="workdirs must be one of shared, node"):
    runner.RayOptions(workdirs='nfs').check()


def test_a_run_asking_for_more_than_ray_has_is_refused(tmp_path, fake_train):
  del fake_train
  with pytest.raises(ValueError, match='a run asks for 1 GPUs, and the Ray '
                     'instance here has 0'):
    runner.execute(fake_runs(tmp_path, ['fast']), 'config.py', jobs=1,
                   env={}, options=runner.RayOptions(gpus_per_run=1))
