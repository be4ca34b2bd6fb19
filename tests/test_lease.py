"""Tests for sweeps/lease.py and sweeps/timeboxed_sweep.sh on the CPU."""

import json
import os
import pathlib
import subprocess
import sys
import tarfile
import time

import pytest

from experiments import files
from experiments import workdir as workdir_lib
from sweeps import grid
from sweeps import lease
from sweeps import sweep
from tests.conftest import full_result
from tests.conftest import write_spec
from tests.test_tables import _table_rows

NOISE = grid.parse_noise('symmetric:0.4')


def _archive_members(path):
  with tarfile.open(path) as tar:
    return sorted(tar.getnames())


# ----------------------------------------------------------------------------
# The schedule, with a stand-in for experiments.train (conftest.FAKE_TRAIN).


def _run_dir(root, method):
  return grid.run_dir(root, grid.parse_method(method), NOISE, 0)


def test_deadline_policy_fits_and_projects_runs(tmp_path):
  estimate = lease.RunTimeEstimate([], run_seconds=100.0, startup_s=5.0)
  policy = lease.Deadline(time.monotonic() + 1000, estimate, 30.0,
                          on_done=lambda run, seconds: None)
  run = grid.plan_runs(tmp_path, [grid.parse_method('ce')], [NOISE], [0],
                       {})[0]
  assert policy.fits(run)
  assert policy.start_note(run) == ', expected to take 100 s'
  estimate.add(2000.0)  # now a run takes 2000 + 5 s
  assert not policy.fits(run)
  assert policy.not_started_note(run) == 'not started: it needs about 2005 s'
  # Projected from its epoch times: 6 epochs of 0.5 s left (the first epoch,
  # which compiles, left out), 1 s before the deadline.
  run.workdir.mkdir(parents=True)
  files.write_json(workdir_lib.config_path(run.workdir),
                         {'num_epochs': 10})
  workdir_lib.write_metrics(run.workdir, [
      {'epoch': e, 'epoch_time_s': 9.0 if e == 1 else 0.5}
      for e in range(1, 5)])
  assert lease.projected_seconds_left(run.workdir) == 3.0
  assert policy.late([run]) == []
  policy.deadline = time.monotonic() + 1.0
  assert policy.late([run]) == ['ce symmetric:0.4 seed 0 by 2 s']


def test_lease_stops_a_run_at_the_deadline_and_packs_only_finished_ones(
    tmp_path, monkeypatch, capsys, fake_train, fake_config):
  del fake_train
  root, work = tmp_path / 'records', tmp_path / 'work'
  slow, fast = _run_dir(work, 'slow'), _run_dir(work, 'fast')

  class DeadlineOnceFastIsDone(lease.Deadline):
    """The deadline comes once `fast` has finished and `slow` is going."""
    fast_done = False

    @property
    def deadline(self):
      if self.fast_done and (slow / 'child.pid').exists():
        return 0.0
      return self._deadline

    @deadline.setter
    def deadline(self, value):
      self._deadline = value

    def on_done(self, run, seconds):
      super().on_done(run, seconds)
      self.fast_done |= run.workdir == fast

  monkeypatch.setattr(lease, 'Deadline', DeadlineOnceFastIsDone)
  spec = write_spec(tmp_path / 'spec.json', root, ['slow', 'fast'],
                     fake_config)
  out = tmp_path / 'out'
  status = lease.main(['run', '--spec', str(spec), '--budget-s', '600',
                       '--out', str(out), '--jobs', '2', '--run-seconds', '1',
                       '--no-prepare', '--work', str(work)])
  assert status == 0
  text = capsys.readouterr().out
  assert ('[1/2] slow symmetric:0.4 seed 0: started, expected to take 1 s'
          in text)
  assert '[2/2] fast symmetric:0.4 seed 0: done in' in text
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
  assert not workdir_lib.result_path(slow).exists()
  assert not root.exists()  # the committed records are merge's to write


def test_lease_starts_no_run_that_cannot_finish(tmp_path, capsys, fake_train,
                                                fake_config):
  del fake_train
  root = tmp_path / 'runs'
  spec = write_spec(tmp_path / 'spec.json', root, ['fast', 'slow'],
                     fake_config)
  out = tmp_path / 'out'
  # A run is expected to take 100 s; 50 s are left after the reserve.
  assert lease.main(['run', '--spec', str(spec), '--budget-s', '60',
                     '--reserve-s', '10', '--out', str(out),
                     '--run-seconds', '100', '--no-prepare', '--work',
                     str(tmp_path / 'work')]) == 0
  text = capsys.readouterr().out
  assert ': started' not in text
  assert text.count('not started: it needs about 100 s') == 2
  assert _archive_members(out / 'records.tar.gz') == ['lease.json']
  assert not root.exists() or not any(root.rglob('config.json'))


def test_run_time_estimate_comes_from_finished_records(tmp_path, capsys,
                                                        fake_train,
                                                        fake_config):
  del fake_train
  root = tmp_path / 'runs'
  spec = write_spec(tmp_path / 'spec.json', root, ['fast', 'slow'],
                     fake_config)
  work = ['--work', str(tmp_path / 'work')]
  with pytest.raises(SystemExit) as exit_:  # nothing to estimate from
    lease.main(['run', '--spec', str(spec), '--budget-s', '60', '--out',
                str(tmp_path / 'out'), '--no-prepare'] + work)
  assert 'give --run-seconds' in exit_.value.code
  # A finished record of the spec (merged from an earlier lease).
  workdir = _run_dir(root, 'fast')
  workdir.mkdir(parents=True)
  workdir_lib.write_result(workdir, full_result(0.5, wall_time_s=40.0))
  # The slow run is expected to take 40 s + 25 s of start-up; 60 s are left.
  assert lease.main(['run', '--spec', str(spec), '--budget-s', '70',
                     '--reserve-s', '10', '--startup-s', '25', '--out',
                     str(tmp_path / 'out'), '--no-prepare'] + work) == 0
  text = capsys.readouterr().out
  assert 'a run expected to take 65 s (the longest finished run' in text
  assert '[1/2] fast symmetric:0.4 seed 0: skipped (finished)' in text
  assert '[2/2] slow symmetric:0.4 seed 0: not started' in text


def test_a_failed_run_is_reported_with_its_log_and_not_packed(
    tmp_path, capsys, fake_train, fake_config):
  del fake_train
  spec = write_spec(tmp_path / 'spec.json', tmp_path / 'runs',
                     ['fails', 'fast'], fake_config)
  out = tmp_path / 'out'
  assert lease.main(['run', '--spec', str(spec), '--budget-s', '100',
                     '--out', str(out), '--run-seconds', '1',
                     '--no-prepare', '--work', str(tmp_path / 'work')]) == 1
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
def test_lease_run_rejects_bad_arguments(tmp_path, fake_config, argv,
                                         message):
  spec = write_spec(tmp_path / 'spec.json', tmp_path / 'runs', ['ce'],
                     fake_config)
  with pytest.raises(SystemExit) as exit_:
    lease.main(['run', '--spec', str(spec), '--out', str(tmp_path / 'o'),
                '--run-seconds', '5', '--work', str(tmp_path / 'w')] + argv)
  assert exit_.value.code.startswith(f'error: {message}')


# ----------------------------------------------------------------------------
# The whole flow with experiments.train on digits: timeboxed_sweep.sh on the CPU,
# then merge, aggregate and a second lease.

SCRIPT = sweep.REPO_ROOT / 'sweeps' / 'timeboxed_sweep.sh'


@pytest.mark.slow
def test_timeboxed_sweep_script_runs_what_fits_then_merge_and_a_second_lease(
    tmp_path, capsys):
  pytest.importorskip('ml_collections')
  digits = sweep.REPO_ROOT / 'experiments/configs/digits.py'
  common = dict(set=['num_epochs=2', 'checkpoint_every=2', 'progress=False',
                     'save_queues=False', f'cache_dir={tmp_path / "cache"}'])
  remote = write_spec(tmp_path / 'remote.json', tmp_path / 'remote',
                       ['ce', 'ogc_ce'], digits, **common)
  local = write_spec(tmp_path / 'local.json', tmp_path / 'local',
                      ['ce', 'ogc_ce'], digits, **common)
  out = tmp_path / 'out'
  env = dict(os.environ, OUT=str(out), DEVICE='cpu', JOBS='1',
             TOTAL_S='300', WHEELS=str(tmp_path / 'no_wheels'),
             XLA_FLAGS='', PYTHON=sys.executable,
             WORK=str(tmp_path / 'remote_work'))
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
  assert sweep.main(['--spec', str(local), '--results',
                     '--aggregate-only']) == 0
  capsys.readouterr()
  rows = _table_rows((tmp_path / 'local' / 'results.md').read_text())
  final = summary['runs'][0]['final_test_accuracy']
  assert rows == {'ce': [f'**{100 * final:.1f}**'], 'ogc_ce': ['–']}
  metrics = workdir_lib.read_metrics(
      grid.run_dir(tmp_path / 'local', grid.parse_method('ce'), NOISE, 0))
  assert [r['epoch'] for r in metrics] == [1, 2]

  # A second lease skips the merged run; the other one does not fit.
  assert lease.main(['run', '--spec', str(local), '--budget-s', '30',
                     '--out', str(tmp_path / 'out2'), '--no-prepare',
                     '--work', str(tmp_path / 'local_work')]) == 0
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


@pytest.mark.slow
def test_sigterm_stops_the_runs_and_leaves_the_summary(tmp_path):
  pytest.importorskip('ml_collections')
  spec = write_spec(
      tmp_path / 'spec.json', tmp_path / 'runs', ['ce'],
      sweep.REPO_ROOT / 'experiments/configs/digits.py',
      set=['num_epochs=500', 'progress=False', f'cache_dir={tmp_path}'])
  out = tmp_path / 'out'
  proc = subprocess.Popen(
      [sys.executable, '-m', 'sweeps.lease', 'run', '--spec', str(spec),
       '--budget-s', '600', '--out', str(out), '--run-seconds', '60',
       '--no-prepare', '--work', str(tmp_path / 'work')],
      cwd=sweep.REPO_ROOT, stdout=subprocess.PIPE,
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
  workdir = grid.run_dir(tmp_path / 'work', grid.parse_method('ce'), NOISE, 0)
  assert _processes_mentioning(str(workdir)) == []
