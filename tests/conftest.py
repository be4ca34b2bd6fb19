"""Fixtures shared by the tests.

* `tiny_config` and `tiny_args`: the digits config cut to seconds, as a
  ConfigDict and as ``--config.KEY=VALUE`` flags;
* `fake_train`, `fake_config`, `write_spec`, `fake_runs` and `alive`: a
  stand-in for the training command and its runs, for the tests of the
  sweep, the runners and the lease;
* `fresh_flags`: absl's global flags as a new process has them, for the
  commands' flag parsing in-process.
"""

import json
import pathlib
import sys
import textwrap

from absl import app
from absl import flags
import pytest

from experiments.configs import digits
from sweeps import grid
from sweeps import runner
from sweeps import sweep as sweep_lib

# The digits config cut to seconds: a few epochs, a small queue refitted
# often, 40% symmetric noise, no progress bar.
TINY = {'num_epochs': 4, 'ogc.queue_size': 256, 'ogc.update_period': 2,
        'noise.rate': 0.4, 'progress': False}


@pytest.fixture(scope='session')
def data_cache(tmp_path_factory):
  """The decoded-data cache of the tests' runs, not the user's ~/.cache."""
  return str(tmp_path_factory.mktemp('data_cache'))


@pytest.fixture
def tiny_config(data_cache):
  """``tiny_config(**overrides)``: the digits config with `TINY`'s values.

  Overrides are dotted keys (``**{'noise.kind': 'none'}``) and win over
  `TINY`.
  """
  def build(**overrides):
    config = digits.get_config()
    config.update_from_flattened_dict(
        {**TINY, 'cache_dir': data_cache, **overrides})
    return config
  return build


@pytest.fixture
def fresh_flags(monkeypatch):
  """absl's global flags as a new process has them, for `cli.parse_flags`."""
  flag_values = flags.FlagValues()
  monkeypatch.setattr(flags, 'FLAGS', flag_values)
  monkeypatch.setattr(app, 'FLAGS', flag_values)
  return flag_values


@pytest.fixture
def tiny_args(data_cache):
  """``tiny_args(**overrides)``: `tiny_config`'s values as command-line flags."""
  def build(**overrides):
    return [f'--config.{key}={value}' for key, value in
            {**TINY, 'cache_dir': data_cache, **overrides}.items()]
  return build


# A stand-in for ``python -m experiments.train WORKDIR --config.KEY=VALUE...``
# whose behaviour the method names: it counts its launches, prints
# "training METHOD", writes config.json and one epoch of metrics; then
# `fails` exits 3 after "Traceback: boom" on stderr; `paced*` writes 10
# epochs of 0.1 s (epoch_time_s 0.1); `slow*` starts a process of its own,
# writes its pid to child.pid and sleeps. Otherwise it writes the environment
# it saw to env.json, and result.json through `experiments.workdir`, as the
# training does (its other fields null), with final = 0.5 + seed / 100.
FAKE_TRAIN = textwrap.dedent('''
    import json, os, pathlib, subprocess, sys, time
    workdir = pathlib.Path(sys.argv[1])
    overrides = dict(a[len('--config.'):].split('=', 1) for a in sys.argv[2:])
    method, num_epochs = overrides['method'], int(overrides.get('num_epochs', 2))
    launches = workdir / 'launches'
    launches.write_text(str(int(launches.read_text() or 0) + 1)
                        if launches.exists() else '1')
    print('training', method)
    (workdir / 'config.json').write_text(json.dumps(
        {'method': method, 'num_epochs': num_epochs}))
    (workdir / 'metrics.jsonl').write_text(
        '{"epoch": 1, "test_accuracy": 0.25}\\n')
    if method == 'fails':
      print('Traceback: boom', file=sys.stderr)
      sys.exit(3)
    if method.startswith('paced'):
      (workdir / 'config.json').write_text(json.dumps({'num_epochs': 10}))
      lines = ''
      for epoch in range(1, 11):
        time.sleep(0.1)
        lines += json.dumps({'epoch': epoch, 'test_accuracy': 0.5,
                             'epoch_time_s': 0.1}) + '\\n'
        (workdir / 'metrics.jsonl').write_text(lines)
    if method.startswith('slow'):
      child = subprocess.Popen([sys.executable, '-c',
                                'import time; time.sleep(600)'])
      (workdir / 'child.pid').write_text(str(child.pid))
      time.sleep(600)
    (workdir / 'env.json').write_text(json.dumps(
        {k: os.environ.get(k) for k in
         ('XLA_FLAGS', 'JAX_COMPILATION_CACHE_DIR')}))
    from experiments import workdir as workdir_lib
    result = dict.fromkeys(workdir_lib.RESULT_KEYS)
    result.update(final_test_accuracy=0.5 + int(overrides.get('seed', 0)) / 100,
                  best_test_accuracy=0.6, wall_time_s=0.25,
                  num_epochs=num_epochs, true_noise_rate=0.2)
    workdir_lib.write_result(workdir, result)
''')


def fake_train_command(run, config_path):
  del config_path
  return ([sys.executable, '-c', FAKE_TRAIN, str(run.workdir)]
          + [f'--config.{k}={v}' for k, v in run.overrides.items()])


@pytest.fixture
def fake_train(monkeypatch):
  """Runs start `FAKE_TRAIN` instead of experiments.train; its methods
  (``fails``, ``slow``, ...) are its own, so the training's validation of a
  sweep's configs (`sweeps.sweep.validate_runs`) is left out."""
  monkeypatch.setattr(runner, 'train_command', fake_train_command)
  monkeypatch.setattr(sweep_lib, 'validate_runs', lambda sweep: None)


def fake_runs(root, methods):
  """The runs of `FAKE_TRAIN`'s ``methods`` at symmetric 40%, seed 0."""
  return grid.plan_runs(root, [grid.parse_method(m) for m in methods],
                        [grid.parse_noise('symmetric:0.4')], [0], {})


def alive(pid):
  """Whether a process runs (a zombie waiting for its reaper does not)."""
  try:
    state = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1]
  except FileNotFoundError:
    return False
  return state.split()[0] != 'Z'


@pytest.fixture
def fake_config(tmp_path):
  """A config file with the keys a sweep sets."""
  config = tmp_path / 'config.py'
  config.write_text(textwrap.dedent('''
      import ml_collections
      def get_config():
        return ml_collections.ConfigDict({
            'method': 'ce', 'seed': 0, 'num_epochs': 1,
            'noise': {'kind': 'none', 'rate': 0.0}})
  '''))
  return config


def write_spec(path, root, methods, config, **more):
  """A sweep specification of ``methods`` at symmetric:0.4, seed 0."""
  path.write_text(json.dumps(dict(
      config=str(config), methods=methods, noise=['symmetric:0.4'], seeds=[0],
      root=str(root), **more)))
  return path


def full_result(final_test_accuracy, **fields):
  """A result.json with every field (`workdir.RESULT_KEYS`), as a run writes it.

  The fields not given are those of a 1-epoch run at 20% noise.
  """
  return {'final_test_accuracy': final_test_accuracy,
          'best_test_accuracy': final_test_accuracy,
          'last_test_accuracy': final_test_accuracy, 'num_epochs': 1,
          'true_noise_rate': 0.2,
          'transition_matrix': [[0.8, 0.2], [0.2, 0.8]], 'wall_time_s': 1.0,
          'devices': 1, 'config': {}, 'label_issues': None,
          'classes_never_predicted': [], **fields}


def train_keeping_run_end(config, workdir):
  """``train.train_and_evaluate``, and the `experiments.suspects.RunEnd` its
  end of run scored the list from: ``(result, run_end)``."""
  from experiments import suspects  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  ends = []
  real = suspects.end_of_run

  def end_of_run(run, queue_gmm=None):
    ends.append(run)
    return real(run, queue_gmm)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(suspects, 'end_of_run', end_of_run)
    result = train.train_and_evaluate(config, workdir)
  (run_end,) = ends
  return result, run_end
