"""Fakes shared by the tests of the sweep, the runner and the lease."""

import json
import sys
import textwrap

import pytest

from experiments import runner

# A stand-in for ``python -m experiments.train WORKDIR --config.KEY=VALUE...``
# whose behaviour the method names: it counts its launches, prints
# "training METHOD", writes config.json and one epoch of metrics; then
# `fails` exits 3 after "Traceback: boom" on stderr; `paced*` writes 10
# epochs of 0.1 s (epoch_time_s 0.1); `slow*` starts a process of its own,
# writes its pid to child.pid and sleeps. Otherwise it writes result.json with
# final = 0.5 + seed / 100 and the environment it saw.
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
    (workdir / 'result.json').write_text(json.dumps({
        'final_test_accuracy': 0.5 + int(overrides.get('seed', 0)) / 100,
        'best_test_accuracy': 0.6, 'wall_time_s': 0.25,
        'num_epochs': num_epochs, 'true_noise_rate': 0.2,
        'env': {k: os.environ.get(k) for k in
                ('XLA_FLAGS', 'JAX_COMPILATION_CACHE_DIR')}}))
''')


def fake_train_command(run, config_path):
  del config_path
  return ([sys.executable, '-c', FAKE_TRAIN, str(run.workdir)]
          + [f'--config.{k}={v}' for k, v in run.overrides.items()])


@pytest.fixture
def fake_train(monkeypatch):
  """Runs start `FAKE_TRAIN` instead of experiments.train."""
  monkeypatch.setattr(runner, 'train_command', fake_train_command)


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
