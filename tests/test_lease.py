"""Tests for experiments/lease.py and experiments/timeboxed_sweep.sh on the CPU."""

import io
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest

from experiments import grid
from experiments import lease
from experiments import sweep
from experiments import workdir as workdir_lib
from tests.test_tables import _table_rows

NOISE = grid.parse_noise('symmetric:0.4')


def _write_spec(path, root, methods, config, **more):
  path.write_text(json.dumps(dict(
      config=str(config), methods=methods, noise=['symmetric:0.4'], seeds=[0],
      root=str(root), **more)))
  return path


def _archive_members(path):
  with tarfile.open(path) as tar:
    return sorted(tar.getnames())


# ----------------------------------------------------------------------------
# The schedule, with a stand-in for experiments.train: `fast` finishes at
# once; `fails` fails; `slow` writes one epoch, starts a process of its own
# and sleeps; `paced*` takes 20 epochs of 0.2 s.

_FAKE_TRAIN = textwrap.dedent('''
    import json, pathlib, subprocess, sys, time
    workdir = pathlib.Path(sys.argv[1])
    overrides = dict(a[len('--config.'):].split('=', 1) for a in sys.argv[2:])
    (workdir / 'config.json').write_text(json.dumps(
        {'method': overrides['method'], 'num_epochs': 2}))
    (workdir / 'metrics.jsonl').write_text(
        '{"epoch": 1, "test_accuracy": 0.25}\\n')
    if overrides['method'] == 'fails':
      print('Traceback: boom', file=sys.stderr)
      sys.exit(3)
    if overrides['method'].startswith('paced'):  # 20 epochs of 0.2 s
      (workdir / 'config.json').write_text(json.dumps({'num_epochs': 20}))
      lines = ''
      for epoch in range(1, 21):
        time.sleep(0.2)
        lines += json.dumps({'epoch': epoch, 'test_accuracy': 0.5,
                             'epoch_time_s': 0.2}) + '\\n'
        (workdir / 'metrics.jsonl').write_text(lines)
    if overrides['method'] == 'slow':
      child = subprocess.Popen([sys.executable, '-c',
                                'import time; time.sleep(600)'])
      (workdir / 'child.pid').write_text(str(child.pid))
      time.sleep(600)
    (workdir / 'result.json').write_text(json.dumps({
        'final_test_accuracy': 0.5, 'best_test_accuracy': 0.6,
        'wall_time_s': 0.25, 'num_epochs': 2, 'true_noise_rate': 0.2}))
''')


def _fake_train_command(run, config_path):
  del config_path
  return ([sys.executable, '-c', _FAKE_TRAIN, str(run.workdir)]
          + [f'--config.{k}={v}' for k, v in run.overrides.items()])


@pytest.fixture
def fake_config(tmp_path):
  config = tmp_path / 'config.py'
  config.write_text(textwrap.dedent('''
      import ml_collections
      def get_config():
        return ml_collections.ConfigDict({
            'method': 'ce', 'seed': 0, 'num_epochs': 1,
            'noise': {'kind': 'none', 'rate': 0.0}})
  '''))
  return config


def _alive(pid):
  """Whether a process runs (a zombie waiting for its reaper does not)."""
  try:
    state = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1]
  except FileNotFoundError:
    return False
  return state.split()[0] != 'Z'


def test_lease_stops_a_run_at_the_deadline_and_packs_only_finished_ones(
    tmp_path, monkeypatch, capsys, fake_config):
  pytest.importorskip('ml_collections')
  monkeypatch.setattr(sweep, 'train_command', _fake_train_command)
  root = tmp_path / 'runs'
  spec = _write_spec(tmp_path / 'spec.json', root, ['slow', 'fast'],
                     fake_config)
  out = tmp_path / 'out'
  status = lease.main(['run', '--spec', str(spec), '--budget-s', '4',
                       '--reserve-s', '1', '--out', str(out), '--jobs', '2',
                       '--run-seconds', '1', '--no-prepare',
                       '--status-every-s', '1.5'])
  assert status == 0
  text = capsys.readouterr().out
  assert ('[1/2] slow symmetric:0.4 seed 0: started, expected to take 1 s'
          in text)
  assert '[2/2] fast symmetric:0.4 seed 0: done in' in text
  assert '[1/2] slow symmetric:0.4 seed 0: epoch 1/2, test 25.0%' in text
  assert ('[1/2] slow symmetric:0.4 seed 0: stopped unfinished at the deadline'
          in text)
  assert '1 done, 1 stopped at the deadline' in text

  # Only what finished comes back: the fast run's record, no partial one.
  assert sorted(p.name for p in out.iterdir()) == [
      'lease.json', 'lease.md', 'records.tar.gz']
  assert _archive_members(out / 'records.tar.gz') == [
      'fast/symmetric_0.4/seed_0/config.json',
      'fast/symmetric_0.4/seed_0/log.txt',
      'fast/symmetric_0.4/seed_0/metrics.jsonl',
      'fast/symmetric_0.4/seed_0/result.json',
      'fast/symmetric_0.4/seed_0/sweep_args.json',
      'lease.json']
  summary = json.loads((out / 'lease.json').read_text())
  assert [(r['name'], r['status']) for r in summary['runs']] == [
      ('slow symmetric:0.4 seed 0', 'stopped'),
      ('fast symmetric:0.4 seed 0', 'done')]
  assert summary['counts']['done'] == 1
  # The stopped run's log ends with its command line.
  assert '--config.method=slow' in summary['runs'][0]['log_tail']
  assert ('| fast symmetric:0.4 seed 0 | done |'
          in (out / 'lease.md').read_text())
  # The stopped run's process group is gone, the process it started too.
  slow = grid.run_dir(root, grid.parse_method('slow'), NOISE, 0)
  child = int((slow / 'child.pid').read_text())
  for _ in range(50):
    if not _alive(child):
      break
    time.sleep(0.1)
  assert not _alive(child)
  assert not workdir_lib.result_path(slow).exists()


def test_lease_starts_no_run_that_cannot_finish(tmp_path, monkeypatch, capsys,
                                                fake_config):
  pytest.importorskip('ml_collections')
  monkeypatch.setattr(sweep, 'train_command', _fake_train_command)
  root = tmp_path / 'runs'
  spec = _write_spec(tmp_path / 'spec.json', root, ['fast', 'slow'],
                     fake_config)
  out = tmp_path / 'out'
  # A run is expected to take 100 s; 50 s are left after the reserve.
  assert lease.main(['run', '--spec', str(spec), '--budget-s', '60',
                     '--reserve-s', '10', '--out', str(out),
                     '--run-seconds', '100', '--no-prepare']) == 0
  text = capsys.readouterr().out
  assert ': started' not in text
  assert text.count('not started: it needs about 100 s') == 2
  assert _archive_members(out / 'records.tar.gz') == ['lease.json']
  assert not root.exists() or not any(root.rglob('config.json'))


def test_run_time_estimate_comes_from_finished_records(tmp_path, monkeypatch,
                                                        capsys, fake_config):
  pytest.importorskip('ml_collections')
  monkeypatch.setattr(sweep, 'train_command', _fake_train_command)
  root = tmp_path / 'runs'
  spec = _write_spec(tmp_path / 'spec.json', root, ['fast', 'slow'],
                     fake_config)
  with pytest.raises(SystemExit):  # nothing to estimate from
    lease.main(['run', '--spec', str(spec), '--budget-s', '60', '--out',
                str(tmp_path / 'out'), '--no-prepare'])
  assert 'give --run-seconds' in capsys.readouterr().err
  workdir = grid.run_dir(root, grid.parse_method('fast'), NOISE, 0)
  workdir.mkdir(parents=True)
  workdir_lib.write_result(workdir, {
      'final_test_accuracy': 0.5, 'best_test_accuracy': 0.5,
      'wall_time_s': 40.0, 'num_epochs': 2, 'true_noise_rate': 0.2})
  # The slow run is expected to take 40 s + 25 s of start-up; 60 s are left.
  assert lease.main(['run', '--spec', str(spec), '--budget-s', '70',
                     '--reserve-s', '10', '--startup-s', '25', '--out',
                     str(tmp_path / 'out'), '--no-prepare']) == 0
  text = capsys.readouterr().out
  assert 'a run expected to take 65 s (the longest finished run' in text
  assert '[1/2] fast symmetric:0.4 seed 0: skipped (finished)' in text
  assert '[2/2] slow symmetric:0.4 seed 0: not started' in text


def test_runs_projected_past_the_deadline_give_way(tmp_path, monkeypatch,
                                                  capsys, fake_config):
  pytest.importorskip('ml_collections')
  monkeypatch.setattr(sweep, 'train_command', _fake_train_command)
  spec = _write_spec(tmp_path / 'spec.json', tmp_path / 'runs',
                     ['paced', 'paced2', 'fast'], fake_config)
  # Both paced runs need 4 s and the deadline is at 3 s: once they have run
  # 3 epochs, the later one is stopped and no other run starts after it.
  assert lease.main(['run', '--spec', str(spec), '--budget-s', '4',
                     '--reserve-s', '1', '--out', str(tmp_path / 'out'),
                     '--jobs', '2', '--run-seconds', '1', '--no-prepare',
                     '--stop-late-every-s', '0.3']) == 0
  text = capsys.readouterr().out
  assert ('[2/3] paced2 symmetric:0.4 seed 0: stopped early after' in text
          and 'projected past the deadline: paced symmetric:0.4 seed 0 by'
          in text)
  assert ('[1/3] paced symmetric:0.4 seed 0: stopped unfinished at the '
          'deadline' in text)
  assert '[3/3] fast symmetric:0.4 seed 0: not started' in text
  summary = json.loads((tmp_path / 'out' / 'lease.json').read_text())
  assert [r['status'] for r in summary['runs']] == [
      'stopped', 'stopped', 'not started']


def test_a_failed_run_is_reported_with_its_log_and_not_packed(
    tmp_path, monkeypatch, capsys, fake_config):
  pytest.importorskip('ml_collections')
  monkeypatch.setattr(sweep, 'train_command', _fake_train_command)
  spec = _write_spec(tmp_path / 'spec.json', tmp_path / 'runs',
                     ['fails', 'fast'], fake_config)
  out = tmp_path / 'out'
  assert lease.main(['run', '--spec', str(spec), '--budget-s', '100',
                     '--out', str(out), '--run-seconds', '1',
                     '--no-prepare']) == 1
  assert '[1/2] fails symmetric:0.4 seed 0: FAILED (exit code 3)' in (
      capsys.readouterr().out)
  summary = json.loads((out / 'lease.json').read_text())
  assert [r['status'] for r in summary['runs']] == ['failed', 'done']
  assert 'Traceback: boom' in summary['runs'][0]['log_tail']
  assert not any(name.startswith('fails/') for name in
                 _archive_members(out / 'records.tar.gz'))


@pytest.mark.parametrize('argv, message', [
    (['--budget-s', '10'], '--budget-s 10 leaves nothing after --reserve-s 15'),
    (['--budget-s', '100', '--jobs', '0'], '--jobs must be at least 1, not 0'),
    (['--budget-s', '100', '--run-seconds', '-1'],
     '--run-seconds must be >= 0, not -1'),
])
def test_lease_run_rejects_bad_arguments(tmp_path, capsys, fake_config, argv,
                                         message):
  pytest.importorskip('ml_collections')
  spec = _write_spec(tmp_path / 'spec.json', tmp_path / 'runs', ['ce'],
                     fake_config)
  with pytest.raises(SystemExit):
    lease.main(['run', '--spec', str(spec), '--out', str(tmp_path / 'o'),
                '--run-seconds', '5'] + argv)
  assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------
# Merging.


def _finished_run(root, method, final=0.5):
  """A finished run's workdir as `execute` and experiments.train leave it."""
  run = grid.plan_runs(root, [grid.parse_method(method)], [NOISE], [0], {})[0]
  run.workdir.mkdir(parents=True)
  workdir_lib.write_json(workdir_lib.config_path(run.workdir),
                         {'method': method, 'seed': 0})
  workdir_lib.write_metrics(run.workdir, [{'epoch': 1, 'test_accuracy': final}])
  workdir_lib.write_sweep_args(run.workdir, {
      'config': sweep.config_for_record('experiments/configs/digits.py'),
      'overrides': run.overrides})
  workdir_lib.write_result(run.workdir, {
      'final_test_accuracy': final, 'best_test_accuracy': final,
      'wall_time_s': 1.0, 'num_epochs': 1, 'true_noise_rate': 0.2})
  (run.workdir / 'checkpoints').mkdir()
  (run.workdir / 'checkpoints' / 'big').write_bytes(b'0' * 1000)
  return run


@pytest.fixture
def returned(tmp_path):
  """An archive of two finished runs, and a spec of a local root."""
  remote = tmp_path / 'remote'
  runs = [_finished_run(remote, 'ce', 0.5), _finished_run(remote, 'gce', 0.6)]
  archive = tmp_path / 'records.tar.gz'
  lease.pack_records(archive, remote, runs, {'spec': 'whatever'})
  local = tmp_path / 'local'
  spec = _write_spec(tmp_path / 'spec.json', local, ['ce', 'gce', 'ogc_ce'],
                     sweep.REPO_ROOT / 'experiments/configs/digits.py')
  return archive, spec, local


def test_merge_is_idempotent_and_aggregate_builds_the_table(returned,
                                                            capsys):
  archive, spec, local = returned
  assert lease.main(['merge', str(archive), '--spec', str(spec)]) == 0
  assert '2 runs merged into' in capsys.readouterr().out
  ce = grid.run_dir(local, grid.parse_method('ce'), NOISE, 0)
  assert sorted(p.name for p in ce.iterdir()) == [
      'config.json', 'metrics.jsonl', 'result.json', 'sweep_args.json']
  assert lease.main(['merge', str(archive), '--spec', str(spec)]) == 0
  assert ('0 runs merged into' in capsys.readouterr().out)
  # The table from records alone, without checkpoints.
  assert sweep.main(['--spec', str(spec), '--aggregate-only']) == 0
  rows = _table_rows((local / 'results.md').read_text())
  assert rows == {'ce': ['50.0'], 'gce': ['**60.0**'], 'ogc_ce': ['–']}


def test_merge_refuses_a_conflicting_record_and_writes_nothing(returned,
                                                               capsys):
  archive, spec, local = returned
  _finished_run(local, 'gce', 0.7)  # the same run, another result
  with pytest.raises(ValueError, match=r'gce/symmetric_0.4/seed_0: finished in '
                     r'.* with a different record \(metrics.jsonl, '
                     r'result.json differ\)'):
    lease.merge(archive, sweep.load_spec(spec))
  assert not grid.run_dir(local, grid.parse_method('ce'), NOISE, 0).exists()
  assert lease.main(['merge', str(archive), '--spec', str(spec)]) == 1
  assert 'nothing merged' in capsys.readouterr().err


def test_merge_refuses_runs_outside_the_spec_or_with_other_settings(
    tmp_path, returned):
  archive, _, local = returned
  only_ce = _write_spec(tmp_path / 'ce.json', local, ['ce'],
                        sweep.REPO_ROOT / 'experiments/configs/digits.py')
  with pytest.raises(ValueError, match='gce/symmetric_0.4/seed_0: not a run of '
                     'the spec'):
    lease.merge(archive, sweep.load_spec(only_ce))
  other = _write_spec(tmp_path / 'o.json', local, ['ce', 'gce'],
                      sweep.REPO_ROOT / 'experiments/configs/digits.py',
                      set=['num_epochs=3'])
  with pytest.raises(ValueError, match='run with other settings'):
    lease.merge(archive, sweep.load_spec(other))
  assert not local.exists()


def test_merge_over_an_unfinished_run_of_the_same_config(returned):
  archive, spec, local = returned
  ce = grid.run_dir(local, grid.parse_method('ce'), NOISE, 0)
  ce.mkdir(parents=True)
  workdir_lib.write_json(workdir_lib.config_path(ce),
                         {'method': 'ce', 'seed': 0, 'progress': False})
  assert lease.merge(archive, sweep.load_spec(spec)) == (2, 0)
  assert workdir_lib.read_result(ce)['final_test_accuracy'] == 0.5
  workdir_lib.result_path(ce).unlink()
  workdir_lib.write_json(workdir_lib.config_path(ce), {'method': 'ce',
                                                       'seed': 1})
  with pytest.raises(ValueError, match='an unfinished run of another '
                     'configuration'):
    lease.merge(archive, sweep.load_spec(spec))


@pytest.mark.parametrize('name', [
    '../evil/x/seed_0/result.json', 'ce/symmetric_0.4/seed_0/checkpoints',
    'ce/symmetric_0.4/seed_0/other.txt', 'ce/result.json'])
def test_read_records_refuses_members_that_are_not_records(tmp_path, name):
  archive = tmp_path / 'a.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    for member in (lease.SUMMARY_FILE, name):
      info = tarfile.TarInfo(member)
      info.size = 2
      tar.addfile(info, io.BytesIO(b'{}'))
  with pytest.raises(ValueError, match='is not'):
    lease.read_records(archive)


# ----------------------------------------------------------------------------
# The whole flow with experiments.train on digits: timeboxed_sweep.sh on the CPU,
# then merge, aggregate and a second lease.

SCRIPT = sweep.REPO_ROOT / 'experiments' / 'timeboxed_sweep.sh'


def test_timeboxed_sweep_script_runs_what_fits_then_merge_and_a_second_lease(
    tmp_path, capsys):
  pytest.importorskip('ml_collections')
  digits = sweep.REPO_ROOT / 'experiments/configs/digits.py'
  common = dict(set=['num_epochs=2', 'checkpoint_every=2', 'progress=False',
                     'save_queues=False', f'cache_dir={tmp_path / "cache"}'])
  remote = _write_spec(tmp_path / 'remote.json', tmp_path / 'remote',
                       ['ce', 'ogc_ce'], digits, **common)
  local = _write_spec(tmp_path / 'local.json', tmp_path / 'local',
                      ['ce', 'ogc_ce'], digits, **common)
  out = tmp_path / 'out'
  env = dict(os.environ, OUT=str(out), DEVICE='cpu', JOBS='1',
             TOTAL_S='300', WHEELS=str(tmp_path / 'no_wheels'),
             XLA_FLAGS='', PYTHON=sys.executable)
  # One run fits: it is expected to take 60 s, 61 s are left; once it has
  # finished, a run is expected to take its wall time + 100 s.
  proc = subprocess.run(
      ['bash', str(SCRIPT), str(remote), '--budget-s', '66', '--reserve-s',
       '5', '--run-seconds', '60', '--startup-s', '100'],
      env=env, capture_output=True, text=True, timeout=240, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  text = proc.stdout
  for phase in ('wheels: none', 'device: exit 0', 'data: exit 0',
                'runs: exit 0', 'report'):
    assert f'== {phase}' in text
  assert 'prepare: digits, 1437 training images' in text
  assert '[1/2] ce symmetric:0.4 seed 0: done in' in text
  assert '[2/2] ogc_ce symmetric:0.4 seed 0: not started' in text
  assert {p.name for p in out.iterdir()} == {
      'timeboxed_sweep.log', 'lease.json', 'lease.md', 'records.tar.gz'}
  assert _archive_members(out / 'records.tar.gz') == [
      'ce/symmetric_0.4/seed_0/config.json', 'ce/symmetric_0.4/seed_0/log.txt',
      'ce/symmetric_0.4/seed_0/metrics.jsonl',
      'ce/symmetric_0.4/seed_0/result.json',
      'ce/symmetric_0.4/seed_0/sweep_args.json', 'lease.json']
  summary = json.loads((out / 'lease.json').read_text())
  assert [r['status'] for r in summary['runs']] == ['done', 'not started']

  # Here: merge, then the table from the records.
  assert lease.main(['merge', str(out / 'records.tar.gz'), '--spec',
                     str(local)]) == 0
  assert sweep.main(['--spec', str(local), '--aggregate-only']) == 0
  capsys.readouterr()
  rows = _table_rows((tmp_path / 'local' / 'results.md').read_text())
  final = summary['runs'][0]['final_test_accuracy']
  assert rows == {'ce': [f'**{100 * final:.1f}**'], 'ogc_ce': ['–']}
  metrics = workdir_lib.read_metrics(
      grid.run_dir(tmp_path / 'local', grid.parse_method('ce'), NOISE, 0))
  assert [r['epoch'] for r in metrics] == [1, 2]

  # A second lease skips the merged run; the other one does not fit.
  assert lease.main(['run', '--spec', str(local), '--budget-s', '30',
                     '--out', str(tmp_path / 'out2'), '--no-prepare']) == 0
  text = capsys.readouterr().out
  assert '[1/2] ce symmetric:0.4 seed 0: skipped (finished)' in text
  assert '[2/2] ogc_ce symmetric:0.4 seed 0: not started' in text
  assert _archive_members(tmp_path / 'out2' / 'records.tar.gz') == [
      'lease.json']


def _processes_mentioning(text):
  found = []
  for cmdline in pathlib.Path('/proc').glob('[0-9]*/cmdline'):
    try:
      if text in cmdline.read_bytes().decode(errors='replace'):
        found.append(cmdline.parent.name)
    except OSError:
      pass
  return found


def test_sigterm_stops_the_runs_and_leaves_the_summary(tmp_path):
  pytest.importorskip('ml_collections')
  spec = _write_spec(
      tmp_path / 'spec.json', tmp_path / 'runs', ['ce'],
      sweep.REPO_ROOT / 'experiments/configs/digits.py',
      set=['num_epochs=500', 'progress=False', f'cache_dir={tmp_path}'])
  out = tmp_path / 'out'
  proc = subprocess.Popen(
      [sys.executable, '-m', 'experiments.lease', 'run', '--spec', str(spec),
       '--budget-s', '600', '--out', str(out), '--run-seconds', '60',
       '--no-prepare'], cwd=sweep.REPO_ROOT, stdout=subprocess.PIPE,
      text=True, env=dict(os.environ, XLA_FLAGS=''))
  for line in proc.stdout:
    if ': started' in line:
      break
  proc.terminate()
  rest = proc.stdout.read()
  assert proc.wait(timeout=60) == 130
  assert 'lease interrupted; 0 finished runs' in rest
  summary = json.loads((out / 'lease.json').read_text())
  assert summary['note'].startswith('Interrupted')
  assert [r['status'] for r in summary['runs']] == ['stopped']
  assert 'stopped unfinished by an interruption' in rest
  workdir = grid.run_dir(tmp_path / 'runs', grid.parse_method('ce'), NOISE, 0)
  assert _processes_mentioning(str(workdir)) == []
