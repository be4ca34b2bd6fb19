"""Tests for sweeps/sweep.py: the scheduler and the command line."""

import json
import pathlib
import re
import sys
import time

import pytest

from experiments import environment
from experiments import workdir as workdir_lib
from sweeps import grid
from sweeps import plot
from sweeps import run_files
from sweeps import runner
from sweeps import sweep
from tests.conftest import write_spec
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
      "python -m sweeps --config experiments/configs/none.py "
      '--methods ce,ogc_ce@ogc.epsilon=5:OGC-CE '
      "--noise symmetric:0.2,asymmetric:0.4,instance:0.4 --seeds 0,1,2 "
      f"--root {tmp_path / 'runs'} --table {table} --title 'Digits sweep' "
      "--set num_epochs=5")
  assert expected_command in text.splitlines()
  assert _table_rows(text)['ce'][0] == '82.0 ± 2.0'
  assert len(table.with_suffix('.csv').read_text().splitlines()) == 13
  assert '12/18 runs finished' in capsys.readouterr().out


def _error(argv):
  """The one line `sweep.main` exits with."""
  with pytest.raises(SystemExit) as exit_:
    sweep.main(argv)
  message = exit_.value.code
  assert message.startswith('error: ') and '\n' not in message, message
  return message


def test_main_rejects_bad_arguments(tmp_path):
  base = ['--config', 'c.py', '--root', str(tmp_path), '--aggregate-only']
  assert "Unknown noise kind='gaussian'" in _error(
      base + ['--methods', 'ce', '--noise', 'gaussian:0.2'])
  assert 'which the sweep sets' in _error(
      base + ['--methods', 'ce', '--noise', 'none', '--set', 'seed=1'])
  assert '--out goes with --spec' in _error(
      base + ['--methods', 'ce', '--noise', 'none', '--out', 'x'])


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
  assert from_spec.committed_table == tmp_path / 'out' / 'digits.md'
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
  assert from_flags.committed_table is None
  # The config path is relative to the repository root, wherever we are.
  assert from_spec.config == str(
      sweep.REPO_ROOT / 'experiments/configs/none.py')
  assert runner.config_for_record(from_spec.config) == (
      'experiments/configs/none.py')

  assert sweep.main(['--spec', str(spec), '--aggregate-only',
                     '--results']) == 0
  text = (tmp_path / 'out' / 'digits.md').read_text()
  assert f'python -m sweeps --spec {spec}' in text.splitlines()
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
      'root': 'r'}, "Unknown noise kind='gaussian'"),
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
    assert (f'--spec names the whole sweep; {flags[0]} cannot be given'
            in _error(['--spec', str(spec), '--aggregate-only'] + flags))
  assert '--config, --root required (or --spec FILE)' in _error(
      ['--methods', 'ce', '--noise', 'none'])
  assert '--out and --results name two places' in _error(
      ['--spec', str(spec), '--out', 'x', '--results'])
  # --jobs, --aggregate-only, --out and --results go with --spec.
  assert sweep.main(['--spec', str(spec), '--aggregate-only', '--jobs',
                     '2', '--out', str(tmp_path / 'fresh')]) == 0
  assert (tmp_path / 'fresh' / 'results.md').is_file()


SPECS = sorted((sweep.REPO_ROOT / 'sweeps' / 'specs').glob('*.json'))


@pytest.mark.parametrize('path', SPECS, ids=lambda p: p.stem)
def test_shipped_specs_name_valid_sweeps_and_their_tables(path):
  import optax  # pylint: disable=g-import-not-at-top
  from experiments import config_lib  # pylint: disable=g-import-not-at-top
  from experiments import methods  # pylint: disable=g-import-not-at-top
  loaded = sweep.load_spec(path)
  sweep.check_sweep_config(loaded)
  for method in loaded.methods:  # an unknown method or hyperparameter raises
    config = config_lib.load(loaded.config, {**loaded.set_overrides,
                                             **dict(method.overrides),
                                             'method': method.name})
    methods.create_method(config, optax.constant_schedule(0.1))
  # The committed records and tables are under results/; a rehearsal's
  # under runs/. A table a spec has made names the spec's command.
  root = runner.repo_relative(loaded.root)
  assert root.startswith(('results/records/', 'runs/')), root
  if loaded.table.is_file():
    assert loaded.command in loaded.table.read_text().splitlines()


def test_cifar10_spec_is_the_issue_table():
  loaded = sweep.load_spec(
      sweep.REPO_ROOT / 'sweeps/specs/cifar10_resnet18.json')
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
      sweep.REPO_ROOT / 'sweeps/specs/cifar10_resnet18_seeds.json')
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
  (runs[0].workdir / run_files.SWEEP_ARGS_FILE).write_text(json.dumps(record))
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
  ce_1 = grid.run_dir(root, grid.parse_method('ce'), NOISES[0], 1)
  assert workdir_lib.read_result(ce_1)['num_epochs'] == 2
  env = json.loads((ce_1 / 'env.json').read_text())
  assert env['JAX_COMPILATION_CACHE_DIR'] == str(root.resolve() / '.jax_cache')
  assert env['XLA_FLAGS'] == (environment.SINGLE_THREAD_XLA_FLAGS if jobs > 1
                              else '')
  # The log shows the command with paths from the repository.
  assert (ce_1 / 'log.txt').read_text().startswith(
      f'$ python -m experiments.train --config {runner.repo_relative(config)} '
      f'--workdir {runner.repo_relative(ce_1)} --config.method=ce')
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
  assert 'run with other settings' in _error(argv[:-1] + ['num_epochs=3'])


def test_main_rejects_unknown_override_key(tmp_path):
  assert ("method entry 'ogc_ce@ogc.eps=2': --config.ogc.eps: the "
          "configuration has no key 'ogc.eps' (did you mean 'ogc.epsilon'"
          in _error(['--config', str(DIGITS_CONFIG), '--methods',
                     'ogc_ce@ogc.eps=2', '--noise', 'none', '--root',
                     str(tmp_path / 'r')]))
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


def test_a_spec_sweeps_elsewhere_and_compares_with_the_committed_table(
    tmp_path, capsys, fake_train, fake_config):
  del fake_train
  committed = tmp_path / 'results' / 'records'
  spec = _write_spec(
      tmp_path / 'spec.json', config=str(fake_config), methods=['ce', 'gce'],
      noise=['symmetric:0.2'], seeds=[0, 1], root=str(committed),
      table=str(tmp_path / 'results' / 'table.md'), set=['num_epochs=2'])
  # The committed table: ce as the fake trains it (0.5 + seed / 100), gce
  # far from it, and a cell this sweep does not have.
  (tmp_path / 'results').mkdir()
  (tmp_path / 'results' / 'table.csv').write_text(
      'method,label,noise_kind,noise_rate,seed,final_test_accuracy\n'
      'ce,ce,symmetric,0.2,0,0.5\nce,ce,symmetric,0.2,1,0.51\n'
      'gce,gce,symmetric,0.2,0,0.7\ngce,gce,symmetric,0.2,1,0.71\n')
  fresh = tmp_path / 'fresh'
  assert sweep.main(['--spec', str(spec), '--out', str(fresh)]) == 0
  out = capsys.readouterr().out
  assert not committed.exists()
  assert (fresh / 'table.md').is_file() and (fresh / 'table.csv').is_file()
  assert ('ce, symmetric 20%: 50.5 ± 0.7 (2 seeds) here, 50.5 ± 0.7 (2 seeds) '
          'committed: identical') in out
  assert ('gce, symmetric 20%: 50.5 ± 0.7 (2 seeds) here, 70.5 ± 0.7 (2 '
          'seeds) committed: outside the seed spread (|difference| 20.0 > '
          '1.4 points)') in out
  assert '2 cells: 1 identical, 1 outside the seed spread' in out
  # Told to, it runs into the committed records and writes the table.
  assert sweep.main(['--spec', str(spec), '--results']) == 0
  assert len(list(committed.rglob('result.json'))) == 4
  assert 'ce,ce,symmetric,0.2,0,0.5,' in (
      tmp_path / 'results' / 'table.csv').read_text()


def test_sweep_configs_are_the_training_command_s(tmp_path):
  # The sweep checks its runs' configs with the training command's loader
  # (experiments.config_lib), so a value is read as the command line reads it.
  from experiments import config_lib  # pylint: disable=g-import-not-at-top
  spec = _write_spec(
      tmp_path / 's.json', config=str(DIGITS_CONFIG), methods=['ce'],
      noise=['none'], root=str(tmp_path / 'r'),
      set=['progress=False', 'lr_decay_epochs=(0.5,)', 'noise.mapping=mnist'])
  loaded = sweep.load_spec(spec)
  sweep.check_sweep_config(loaded)
  config = config_lib.load(loaded.config, loaded.runs()[0].overrides)
  assert (config.method, config.noise.kind, config.progress,
          tuple(config.lr_decay_epochs), config.noise.mapping) == (
              'ce', 'none', False, (0.5,), 'mnist')
  bad = _write_spec(tmp_path / 'b.json', config=str(DIGITS_CONFIG),
                    methods=['ce'], noise=['none'], root=str(tmp_path / 'r'),
                    set=['num_epochs=many'])
  with pytest.raises(ValueError, match='--set: flag --config.num_epochs=many'):
    sweep.check_sweep_config(sweep.load_spec(bad))


def test_aggregate_only_with_no_finished_run_leaves_the_committed_table(
    tmp_path):
  # The ResNet-18 spec before its records are merged: no run under its root.
  table = tmp_path / 'results' / 'resnet.md'
  table.parent.mkdir()
  table.write_text('committed\n')
  table.with_suffix('.csv').write_text('committed\n')
  (tmp_path / 'runs').mkdir()
  spec = _write_spec(
      tmp_path / 'spec.json', config='experiments/configs/none.py',
      methods=['ce'], noise=['symmetric:0.2'], seeds=[0],
      root=str(tmp_path / 'runs'), table=str(table))
  message = _error(['--spec', str(spec), '--results', '--aggregate-only'])
  assert 'no run of the sweep is finished under' in message
  assert f'{table} is left as it is' in message
  assert table.read_text() == table.with_suffix('.csv').read_text() == (
      'committed\n')


# ----------------------------------------------------------------------------
# Where the runs go: a spec's resources and the Ray flags.


def test_a_spec_says_what_each_run_asks_ray_for(tmp_path, fake_config):
  spec = write_spec(tmp_path / 'spec.json', tmp_path / 'runs', ['ce'],
                    fake_config, resources={'num_cpus': 2, 'num_gpus': 0.5})
  loaded = sweep.load_spec(spec)
  assert loaded.resources == {'cpus_per_run': 2.0, 'gpus_per_run': 0.5}
  options = sweep.ray_options(loaded, sweep.build_parser().parse_args(
      ['--spec', str(spec), '--gpus-per-run', '0.25']))
  assert (options.cpus_per_run, options.gpus_per_run) == (2.0, 0.25)
  for bad, words in (({'gpus': 1}, "'resources' must be an object"),
                     ({'num_gpus': True}, "'resources' must be an object"),
                     ({'num_gpus': 1.5}, 'whole number, not 1.5'),
                     ({'num_cpus': 0}, 'CPUs per run must be > 0')):
    write_spec(spec, tmp_path / 'runs', ['ce'], fake_config, resources=bad)
    with pytest.raises(ValueError, match=re.escape(words)):
      sweep.load_spec(spec)


def test_ray_flags_are_checked_before_any_run(tmp_path, fake_config,
                                              fake_train):
  del fake_train
  base = ['--config', str(fake_config), '--methods', 'ce', '--noise',
          'symmetric:0.2', '--root', str(tmp_path / 'r')]
  assert '--jobs must be at least 1' in _error(base + ['--jobs', '0'])
  assert 'GPUs per run must be >= 0' in _error(base + ['--gpus-per-run',
                                                       '-1'])
  # This machine's Ray instance has no GPU: refused before any run starts.
  assert ('a run asks for 1 GPUs, and the Ray instance here has 0'
          in _error(base + ['--gpus-per-run', '1']))
  assert not list((tmp_path / 'r').rglob('log.txt'))


def test_a_misspelt_method_or_a_bad_value_fails_before_any_run(tmp_path):
  base = ['--config', str(DIGITS_CONFIG), '--noise', 'symmetric:0.2',
          '--seeds', '0,1', '--root', str(tmp_path / 'r')]
  assert ("error: run ogc_cee symmetric:0.2 seed 0: Unknown OGC base loss "
          "'cee' in config.method='ogc_cee'" in _error(
              base + ['--methods', 'ce,ogc_cee']))
  assert '`epsilon` must be a finite scalar >= 0' in _error(
      base + ['--methods', 'ce,ogc_ce@ogc.epsilon=-1'])
  assert not (tmp_path / 'r').exists()
