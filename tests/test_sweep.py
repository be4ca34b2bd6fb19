"""Tests for experiments/sweep.py: the scheduler and the command line."""

import json
import pathlib
import sys
import textwrap
import time

import pytest

from experiments import grid
from experiments import plot
from experiments import sweep
from experiments import workdir as workdir_lib
from tests.test_tables import _table_rows
from tests.test_tables import _write_grid
from tests.test_tables import METHODS
from tests.test_tables import NOISES


# ----------------------------------------------------------------------------
# Planning and the environment of the runs.


def test_plan_runs_merges_overrides_method_last():
  method = grid.parse_method('ogc_ce@ogc.epsilon=5')
  runs = grid.plan_runs(
      'root', [method, grid.parse_method('ce')],
      [grid.parse_noise('symmetric:0.4')], [0, 1],
      {'ogc.epsilon': '2', 'num_epochs': '3'})
  assert [r.index for r in runs] == [1, 2, 3, 4]
  assert runs[1].overrides == {
      'method': 'ogc_ce', 'noise.kind': 'symmetric', 'noise.rate': '0.4',
      'seed': '1', 'ogc.epsilon': '5', 'num_epochs': '3'}
  assert runs[2].overrides['ogc.epsilon'] == '2'
  command = sweep.train_command(runs[1], 'experiments/configs/digits.py')
  assert command[:3] == [sys.executable, '-m', 'experiments.train']
  assert command[command.index('--workdir') + 1] == str(
      pathlib.Path('root/ogc_ce+ogc.epsilon=5/symmetric_0.4/seed_1').resolve())
  assert '--config.ogc.epsilon=5' in command
  assert '--config.noise.rate=0.4' in command


def test_check_override_keys():
  ml_collections = pytest.importorskip('ml_collections')
  config = ml_collections.ConfigDict(
      {'num_epochs': 3, 'ogc': {'epsilon': 1.0}, 'loss_hparams': {'tau': 2.0}})
  sweep.check_override_keys(config, ['ogc.epsilon', 'loss_hparams.tau'], 'x')
  with pytest.raises(ValueError, match=r"unknown config key 'ogc.eps' \(ogc "
                     r'has: epsilon\)'):
    sweep.check_override_keys(config, ['ogc.eps'], 'x')
  with pytest.raises(ValueError, match="unknown config key 'num_epochs.x'"):
    sweep.check_override_keys(config, ['num_epochs.x'], 'x')


def test_child_env(tmp_path, monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--foo')
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  env = sweep.child_env(tmp_path, jobs=1)
  assert env['XLA_FLAGS'] == '--foo'
  assert env['JAX_COMPILATION_CACHE_DIR'] == str(tmp_path / '.jax_cache')
  env = sweep.child_env(tmp_path, jobs=2)
  assert env['XLA_FLAGS'] == '--foo ' + sweep.SINGLE_THREAD_XLA_FLAGS


def test_aggregate_only_writes_table_with_its_command(tmp_path, capsys):
  _write_grid(tmp_path / 'runs')
  table = tmp_path / 'out' / 'digits.md'
  argv = ['--config', 'experiments/configs/none.py',
          '--methods', 'ce,ogc_ce@ogc.epsilon=5:OGC-CE',
          '--noise', 'symmetric:0.2,asymmetric:0.4,instance:0.4',
          '--seeds', '0,1,2', '--root', str(tmp_path / 'runs'),
          '--table', str(table), '--title', 'Digits sweep',
          '--set', 'num_epochs=5', '--aggregate-only']
  assert sweep.main(argv) == 0
  text = table.read_text()
  assert text.startswith('# Digits sweep\n')
  expected_command = (
      "python -m experiments.sweep --config experiments/configs/none.py "
      '--methods ce,ogc_ce@ogc.epsilon=5:OGC-CE '
      "--noise symmetric:0.2,asymmetric:0.4,instance:0.4 --seeds 0,1,2 "
      f"--root {tmp_path / 'runs'} --table {table} --title 'Digits sweep' "
      "--set num_epochs=5")
  assert expected_command in text.splitlines()
  assert _table_rows(text)['ce'][0] == '82.0 ± 2.0'
  assert len(table.with_suffix('.csv').read_text().splitlines()) == 13
  assert '12/18 runs finished' in capsys.readouterr().out


def test_main_rejects_bad_arguments(tmp_path, capsys):
  base = ['--config', 'c.py', '--root', str(tmp_path), '--aggregate-only']
  with pytest.raises(SystemExit):
    sweep.main(base + ['--methods', 'ce', '--noise', 'gaussian:0.2'])
  assert "unknown kind 'gaussian'" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    sweep.main(base + ['--methods', 'ce', '--noise', 'none', '--set', 'seed=1'])
  assert 'which the sweep sets' in capsys.readouterr().err


def test_recorded_settings_conflict_is_an_error(tmp_path):
  runs = grid.plan_runs(tmp_path, [METHODS[0]], [NOISES[0]], [0],
                        {'num_epochs': '5'})
  runs[0].workdir.mkdir(parents=True)
  record = {'config': sweep._config_for_record('experiments/configs/d.py'),
            'overrides': runs[0].overrides}
  (runs[0].workdir / workdir_lib.SWEEP_ARGS_FILE).write_text(json.dumps(record))
  sweep.check_recorded_settings(runs, 'experiments/configs/d.py')
  other = grid.plan_runs(tmp_path, [METHODS[0]], [NOISES[0]], [0],
                         {'num_epochs': '50'})
  with pytest.raises(ValueError, match='run with other settings'):
    sweep.check_recorded_settings(other, 'experiments/configs/d.py')


# ----------------------------------------------------------------------------
# Running, with a stand-in for experiments.train.

# Writes result.json with final = 0.5 + seed / 100 unless the method is
# `fails`; records the environment it saw and counts its launches.
_FAKE_TRAIN = textwrap.dedent('''
    import json, os, pathlib, sys
    workdir = pathlib.Path(sys.argv[1])
    overrides = dict(a[len('--config.'):].split('=', 1) for a in sys.argv[2:])
    launches = workdir / 'launches'
    launches.write_text(str(int(launches.read_text() or 0) + 1)
                        if launches.exists() else '1')
    print('training', overrides['method'])
    if overrides['method'] == 'fails':
      print('Traceback: boom', file=sys.stderr)
      sys.exit(3)
    (workdir / 'result.json').write_text(json.dumps({
        'final_test_accuracy': 0.5 + int(overrides['seed']) / 100,
        'best_test_accuracy': 0.6, 'wall_time_s': 0.1,
        'num_epochs': int(overrides['num_epochs']),
        'env': {k: os.environ.get(k) for k in
                ('XLA_FLAGS', 'JAX_COMPILATION_CACHE_DIR')}}))
''')


def _fake_train_command(run, config_path):
  del config_path
  return ([sys.executable, '-c', _FAKE_TRAIN, str(run.workdir)]
          + [f'--config.{k}={v}' for k, v in run.overrides.items()])


@pytest.mark.parametrize('jobs', [1, 2])
def test_main_runs_missing_skips_finished_and_reports_failures(
    tmp_path, monkeypatch, capsys, jobs):
  monkeypatch.setattr(sweep, 'train_command', _fake_train_command)
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  config = tmp_path / 'config.py'
  config.write_text(textwrap.dedent('''
      import ml_collections
      def get_config():
        return ml_collections.ConfigDict({
            'method': 'ce', 'seed': 0, 'num_epochs': 1,
            'noise': {'kind': 'none', 'rate': 0.0}})
  '''))
  root = tmp_path / 'runs'
  argv = ['--config', str(config), '--methods', 'ce,fails',
          '--noise', 'symmetric:0.2', '--seeds', '0,1', '--root', str(root),
          '--jobs', str(jobs), '--set', 'num_epochs=2']
  assert sweep.main(argv) == 1  # `fails` failed
  out = capsys.readouterr().out
  assert out.count(': started') == 4
  assert '[1/4] ce symmetric:0.2 seed 0: done in' in out
  assert '[2/4] ce symmetric:0.2 seed 1: done in' in out
  assert 'final 51.0%' in out
  failed_log = grid.run_dir(root, grid.parse_method('fails'),
                            NOISES[0], 1) / 'log.txt'
  assert '[4/4] fails symmetric:0.2 seed 1: FAILED (exit code 3)' in out
  assert f'log: {failed_log}\n    Traceback: boom' in out
  assert '4 runs: 2 done, 0 skipped (finished), 2 failed' in out
  assert 'training fails' in failed_log.read_text()
  result = json.loads((grid.run_dir(root, grid.parse_method('ce'), NOISES[0],
                                    1) / 'result.json').read_text())
  assert result['num_epochs'] == 2
  assert result['env']['JAX_COMPILATION_CACHE_DIR'] == str(
      root.resolve() / '.jax_cache')
  assert result['env']['XLA_FLAGS'] == (
      sweep.SINGLE_THREAD_XLA_FLAGS if jobs > 1 else '')
  rows = _table_rows((root / 'results.md').read_text())
  assert rows == {'ce': ['**50.5 ± 0.7**'], 'fails': ['–']}  # sd(50, 51)

  # Again: finished runs are skipped, failed ones retried (and fail again).
  assert sweep.main(argv) == 1
  out = capsys.readouterr().out
  assert out.count(': skipped (finished)') == 2
  assert '4 runs: 0 done, 2 skipped (finished), 2 failed' in out
  launches = {p.parent.parent.parent.name + '/' + p.parent.name:
              int(p.read_text()) for p in root.rglob('launches')}
  assert launches == {'ce/seed_0': 1, 'ce/seed_1': 1, 'fails/seed_0': 2,
                      'fails/seed_1': 2}

  # Other settings on the same root are refused before anything runs.
  with pytest.raises(SystemExit):
    sweep.main(argv[:-1] + ['num_epochs=3'])
  assert 'run with other settings' in capsys.readouterr().err


def test_main_rejects_unknown_override_key(tmp_path, capsys):
  config = tmp_path / 'config.py'
  config.write_text('import ml_collections\n'
                    'def get_config():\n'
                    '  return ml_collections.ConfigDict(\n'
                    '      {"ogc": {"epsilon": 1.0}})\n')
  with pytest.raises(SystemExit):
    sweep.main(['--config', str(config), '--methods', 'ogc_ce@ogc.eps=2',
                '--noise', 'none', '--root', str(tmp_path / 'r')])
  assert "unknown config key 'ogc.eps'" in capsys.readouterr().err
  assert not (tmp_path / 'r').exists()


# ----------------------------------------------------------------------------
# End to end, with experiments.train on the digits config.

DIGITS_CONFIG = sweep.REPO_ROOT / 'experiments' / 'configs' / 'digits.py'


def test_end_to_end_on_digits_runs_skips_and_resumes(tmp_path, monkeypatch,
                                                      capsys):
  # The test conftest's 8 simulated devices are for the sharding tests; the
  # training processes get the machine as it is, and a cache under the root.
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  root = tmp_path / 'runs'
  argv = ['--config', str(DIGITS_CONFIG), '--methods', 'ce,ogc_ce',
          '--noise', 'symmetric:0.4', '--seeds', '0', '--root', str(root),
          '--jobs', '1', '--set', 'num_epochs=2', '--set', 'progress=False',
          '--set', f'cache_dir={tmp_path / "data_cache"}']
  assert sweep.main(argv) == 0
  out = capsys.readouterr().out
  noise = grid.parse_noise('symmetric:0.4')
  workdirs = {m: grid.run_dir(root, grid.parse_method(m), noise, 0)
              for m in ('ce', 'ogc_ce')}
  finals = {}
  for index, (method, workdir) in enumerate(workdirs.items(), start=1):
    result = json.loads((workdir / 'result.json').read_text())
    finals[method] = result['final_test_accuracy']
    # The overrides reached the run's config.
    config = json.loads((workdir / 'config.json').read_text())
    assert (config['method'], config['noise']['kind'], config['noise']['rate'],
            config['seed'], config['num_epochs']) == (
                method, 'symmetric', 0.4, 0, 2)
    epochs = [json.loads(line)['epoch'] for line in
              (workdir / 'metrics.jsonl').read_text().splitlines()]
    assert epochs == [1, 2]
    assert (f'[{index}/2] {method} symmetric:0.4 seed 0: done in' in out
            and f'final {100 * finals[method]:.1f}%' in out)
  assert (workdirs['ogc_ce'] / 'queues' / 'epoch_0002.npy').exists()
  assert any((root / '.jax_cache').iterdir())
  rows = _table_rows((root / 'results.md').read_text())
  assert rows.keys() == {'ce', 'ogc_ce'}
  assert rows['ce'][0].strip('*') == f'{100 * finals["ce"]:.1f}'

  # Again: nothing to do.
  start = time.monotonic()
  assert sweep.main(argv) == 0
  assert time.monotonic() - start < 5
  out = capsys.readouterr().out
  assert out.count(': skipped (finished)') == 2
  assert '2 runs: 0 done, 2 skipped (finished), 0 failed' in out

  # Without its result.json, ogc_ce runs again, resuming from its checkpoint
  # at the last epoch, and ends with the same result.
  (workdirs['ogc_ce'] / 'result.json').unlink()
  assert sweep.main(argv) == 0
  out = capsys.readouterr().out
  assert '[1/2] ce symmetric:0.4 seed 0: skipped (finished)' in out
  assert '[2/2] ogc_ce symmetric:0.4 seed 0: started (resuming)' in out
  assert '2 runs: 1 done, 1 skipped (finished), 0 failed' in out
  result = json.loads((workdirs['ogc_ce'] / 'result.json').read_text())
  assert result['final_test_accuracy'] == finals['ogc_ce']

  # The real workdirs plot: the OGC run has tau and queues, CE has neither.
  notes = []
  written = plot.make_plots(list(workdirs.values()), tmp_path / 'plots',
                            log=notes.append)
  assert [p.name for p in written] == [
      'test_accuracy.png', 'threshold.png',
      'h_histogram_ogc_ce_symmetric_0.4_seed_0.png']
  assert len(notes) == 2
