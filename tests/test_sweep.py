"""Tests for experiments/sweep.py: the scheduler and the command line."""

import json
import pathlib
import re
import sys
import time

import pytest

from experiments import grid
from experiments import plot
from experiments import runner
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
  command = runner.train_command(runs[1], 'experiments/configs/digits.py')
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


# ----------------------------------------------------------------------------
# Specification files.


def _write_spec(path, **spec):
  path.write_text(json.dumps(spec))
  return path


def test_spec_names_the_same_sweep_as_the_flags(tmp_path, capsys):
  _write_grid(tmp_path / 'runs')
  spec = _write_spec(
      tmp_path / 'spec.json', config='experiments/configs/none.py',
      methods=['ce', 'ogc_ce@ogc.epsilon=5:OGC-CE'],
      noise=['symmetric:0.2', 'asymmetric:0.4', 'instance:0.4'],
      seeds=[0, 1, 2], set=['num_epochs=5'], root=str(tmp_path / 'runs'),
      table=str(tmp_path / 'out' / 'digits.md'), title='Digits sweep')
  from_spec = sweep.load_spec(spec)
  args = sweep.build_parser().parse_args([
      '--config', 'experiments/configs/none.py',
      '--methods', 'ce,ogc_ce@ogc.epsilon=5:OGC-CE',
      '--noise', 'symmetric:0.2,asymmetric:0.4,instance:0.4',
      '--seeds', '0,1,2', '--set', 'num_epochs=5',
      '--root', str(tmp_path / 'runs'),
      '--table', str(tmp_path / 'out' / 'digits.md'),
      '--title', 'Digits sweep'])
  from_flags = sweep.sweep_from_args(args)
  assert from_spec.runs() == from_flags.runs()
  assert (from_spec.table, from_spec.title) == (from_flags.table,
                                                from_flags.title)
  # The config path is relative to the repository root, wherever we are.
  assert from_spec.config == str(
      sweep.REPO_ROOT / 'experiments/configs/none.py')
  assert runner.config_for_record(from_spec.config) == (
      'experiments/configs/none.py')

  assert sweep.main(['--spec', str(spec), '--aggregate-only']) == 0
  text = (tmp_path / 'out' / 'digits.md').read_text()
  assert f'python -m experiments.sweep --spec {spec}' in text.splitlines()
  assert _table_rows(text)['ce'][0] == '82.0 ± 2.0'
  assert '12/18 runs finished' in capsys.readouterr().out


def test_spec_relative_paths_are_from_the_repository_root(tmp_path):
  spec = _write_spec(tmp_path / 's.json', config='experiments/configs/d.py',
                     methods=['ce'], noise=['none'], root='runs/x')
  loaded = sweep.load_spec(spec)
  assert loaded.root == sweep.REPO_ROOT / 'runs' / 'x'
  assert loaded.table == sweep.REPO_ROOT / 'runs' / 'x' / 'results.md'
  assert loaded.seeds == (0,)
  assert loaded.title == 'Sweep of experiments/configs/d.py'


@pytest.mark.parametrize('spec, message', [
    ({'methods': ['ce'], 'noise': ['none'], 'root': 'r'}, 'lacks config'),
    ({'config': 'c.py', 'methods': ['ce'], 'noise': ['none'], 'root': 'r',
      'seed': [0]}, "unknown key 'seed' \\(did you mean 'seeds'\\?\\); valid "
     'keys: config, methods, noise, seeds, set, root, table, title'),
    ({'config': 'c.py', 'methods': 'ce,gce', 'noise': ['none'], 'root': 'r'},
     "'methods' must be a list of strings, not \"ce,gce\""),
    ({'config': 'c.py', 'methods': ['ce'], 'noise': ['none'], 'root': 'r',
      'seeds': [0, True]}, "'seeds' must be a list of integers"),
    ({'config': 'c.py', 'methods': ['ce'], 'noise': ['none'], 'root': 'r',
      'seeds': [1, 1]}, 'repeat a seed'),
    ({'config': 'c.py', 'methods': ['ce'], 'noise': ['gaussian:0.2'],
      'root': 'r'}, "unknown kind 'gaussian'"),
    ({'config': 'c.py', 'methods': ['ce'], 'noise': ['none'], 'root': 'r',
      'set': ['seed=1']}, 'which the sweep sets'),
    ([1, 2], 'expected a JSON object'),
])
def test_bad_spec_is_an_error_naming_file_and_key(tmp_path, spec, message):
  path = tmp_path / 'spec.json'
  path.write_text(json.dumps(spec))
  with pytest.raises(ValueError, match=f'spec {re.escape(str(path))}: .*'
                     f'{message}'):
    sweep.load_spec(path)
  (tmp_path / 'broken.json').write_text('{"config": ')
  with pytest.raises(ValueError, match='broken.json is not valid JSON'):
    sweep.load_spec(tmp_path / 'broken.json')


def test_spec_with_a_flag_that_names_the_sweep_is_an_error(tmp_path, capsys):
  spec = _write_spec(tmp_path / 's.json', config='c.py', methods=['ce'],
                     noise=['none'], root=str(tmp_path / 'r'))
  for flags in (['--root', 'other'], ['--set', 'num_epochs=3'],
                ['--seeds', '1']):
    with pytest.raises(SystemExit):
      sweep.main(['--spec', str(spec), '--aggregate-only'] + flags)
    assert (f'--spec names the whole sweep; {flags[0]} cannot be given'
            in capsys.readouterr().err)
  with pytest.raises(SystemExit):
    sweep.main(['--methods', 'ce', '--noise', 'none'])
  assert '--config, --root required (or --spec FILE)' in capsys.readouterr().err
  # --jobs and --aggregate-only go with --spec.
  assert sweep.main(['--spec', str(spec), '--aggregate-only', '--jobs',
                     '2']) == 0


@pytest.mark.parametrize('name', ['cifar10_resnet18', 'cifar10_resnet18_seeds',
                                  'digits_rehearsal'])
def test_shipped_specs_name_valid_sweeps(name):
  pytest.importorskip('ml_collections')
  from experiments import train  # pylint: disable=g-import-not-at-top
  loaded = sweep.load_spec(
      sweep.REPO_ROOT / 'experiments' / 'sweeps' / f'{name}.json')
  sweep.check_sweep_config(loaded)
  config = sweep.load_config(loaded.config)
  for method in loaded.methods:
    config.method = method.name
    for key, value in method.overrides:
      config.loss_hparams[key.split('.')[1]] = float(value)
    train.Method(config)  # an unknown method or hyperparameter raises
    config.loss_hparams.tau = None


def test_cifar10_spec_is_the_issue_table():
  loaded = sweep.load_spec(
      sweep.REPO_ROOT / 'experiments/sweeps/cifar10_resnet18.json')
  assert [m.label for m in loaded.methods] == [
      'CE', 'GCE', 'PHuber-CE tau=2', 'OGC-CE', 'OGC-GCE', 'Focal', 'OGC-FL',
      'SCE', 'NCE+RCE', 'PHuber-CE tau=10']
  assert [n.spec for n in loaded.noises] == [
      'symmetric:0.2', 'symmetric:0.5', 'symmetric:0.8', 'asymmetric:0.4',
      'instance:0.4']
  assert loaded.seeds == (0,)
  assert {k: loaded.set_overrides[k] for k in (
      'dataset', 'num_epochs', 'dtype', 'noise.protocol')} == {
          'dataset': 'cifar10_jpeg', 'num_epochs': '150', 'dtype': 'bfloat16',
          'noise.protocol': 'authors'}
  assert runner.repo_relative(loaded.root) == (
      'results/records/cifar10_resnet18')
  assert runner.repo_relative(loaded.table) == (
      'results/cifar10_resnet18.md')
  # The 25 core cells come first.
  assert {r.method.label for r in loaded.runs()[:25]} == {
      'CE', 'GCE', 'PHuber-CE tau=2', 'OGC-CE', 'OGC-GCE'}
  seeds = sweep.load_spec(
      sweep.REPO_ROOT / 'experiments/sweeps/cifar10_resnet18_seeds.json')
  # Seed 0 of CE and OGC-CE is the same run in both specs.
  shared = {r.workdir: r.overrides for r in loaded.runs()}
  for run in seeds.runs():
    if run.seed == 0:
      assert shared[run.workdir] == run.overrides


def test_recorded_settings_conflict_is_an_error(tmp_path):
  runs = grid.plan_runs(tmp_path, [METHODS[0]], [NOISES[0]], [0],
                        {'num_epochs': '5'})
  runs[0].workdir.mkdir(parents=True)
  record = {'config': runner.config_for_record('experiments/configs/d.py'),
            'overrides': runs[0].overrides}
  (runs[0].workdir / workdir_lib.SWEEP_ARGS_FILE).write_text(json.dumps(record))
  sweep.check_recorded_settings(runs, 'experiments/configs/d.py')
  other = grid.plan_runs(tmp_path, [METHODS[0]], [NOISES[0]], [0],
                         {'num_epochs': '50'})
  with pytest.raises(ValueError, match='run with other settings'):
    sweep.check_recorded_settings(other, 'experiments/configs/d.py')


# ----------------------------------------------------------------------------
# Running, with a stand-in for experiments.train (conftest.FAKE_TRAIN).

@pytest.mark.parametrize('jobs', [1, 2])
def test_main_runs_missing_skips_finished_and_reports_failures(
    tmp_path, monkeypatch, capsys, jobs, fake_train, fake_config):
  del fake_train
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  config = fake_config
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
      runner.SINGLE_THREAD_XLA_FLAGS if jobs > 1 else '')
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


@pytest.mark.slow
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
      'test_accuracy.png', 'memorised.png', 'threshold.png',
      'h_histogram_ogc_ce_symmetric_0.4_seed_0.png']
  assert len(notes) == 2


def test_load_config_sets_overrides_as_the_command_line_does():
  config = sweep.load_config(
      str(DIGITS_CONFIG), {'noise.rate': '0.2', 'noise.mapping': 'mnist',
                           'loss_hparams.tau': '5', 'progress': 'False',
                           'lr_decay_epochs': '(0.5,)'})
  assert (config.noise.rate, config.noise.mapping, config.loss_hparams.tau,
          config.progress, tuple(config.lr_decay_epochs)) == (
              0.2, 'mnist', 5.0, False, (0.5,))
  with pytest.raises(ValueError, match=r"method entry 'x': unknown config key "
                     r"'ogc.eps' \(ogc has: epsilon, queue_size"):
    sweep.load_config(str(DIGITS_CONFIG), {'ogc.eps': '2'}, "method entry 'x'")
  with pytest.raises(ValueError, match='--set: .*num_epochs'):
    sweep.load_config(str(DIGITS_CONFIG), {'num_epochs': 'many'})
