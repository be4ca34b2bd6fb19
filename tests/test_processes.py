"""Tests for sweeps/processes.py: the time-boxed runner's processes.

The runs are conftest.FAKE_TRAIN; when a run must be stopped is a `Policy`
whose deadline or lateness follows what the runs have written, so that no
assertion depends on how fast the machine is.
"""

import io
import time

from experiments import environment
from sweeps import processes
from tests.conftest import alive
from tests.conftest import fake_runs

class _Scripted(processes.Policy):
  """A deadline and a lateness that come once a condition holds."""
  check_every_s = 0.05

  def __init__(self, deadline_when, late_when=lambda: False):
    self._deadline_when = deadline_when
    self._late_when = late_when

  @property
  def deadline(self):
    return 0.0 if self._deadline_when() else None

  def late(self, runs):
    return ['slow by 1 s'] if self._late_when() else []


def test_the_deadline_stops_the_runs_going_with_their_processes(
    tmp_path, fake_train):
  del fake_train
  runs = fake_runs(tmp_path, ['slow', 'fast'])
  out = io.StringIO()
  slow = runs[0].workdir

  def deadline_when():  # fast has finished, and slow is going and reported
    text = out.getvalue()
    return ('fast symmetric:0.4 seed 0: done' in text
            and (slow / 'child.pid').exists()
            and 'slow symmetric:0.4 seed 0: epoch 1/2, test 25.0%, ' in text)

  outcome = processes.execute(runs, 'config.py', jobs=2, env=environment.child_env(
      tmp_path, 2), out=out, status_every_s=0.05,
                           policy=_Scripted(deadline_when))
  assert (outcome.done, outcome.stopped, outcome.failed) == (
      [runs[1]], [runs[0]], [])
  text = out.getvalue()
  assert '[1/2] slow symmetric:0.4 seed 0: started\n' in text
  assert '[2/2] fast symmetric:0.4 seed 0: done in' in text
  assert 'final 50.0%' in text
  assert ('[1/2] slow symmetric:0.4 seed 0: stopped unfinished at the '
          'deadline after' in text)
  # The stopped run's process group is gone, the process it started too.
  child = int((slow / 'child.pid').read_text())
  for _ in range(100):
    if not alive(child):
      break
    time.sleep(0.1)
  assert not alive(child)
  # Its workdir stays, for a later resume: the log holds its command line.
  assert '--config.method=slow' in (slow / 'log.txt').read_text()
  assert not (slow / 'result.json').exists()


def test_late_runs_give_way_and_no_other_run_starts(tmp_path, fake_train):
  del fake_train
  runs = fake_runs(tmp_path, ['slow', 'slow2', 'fast'])
  out = io.StringIO()
  policy = _Scripted(
      deadline_when=lambda: 'stopped early' in out.getvalue(),
      late_when=lambda: (runs[1].workdir / 'child.pid').exists())
  outcome = processes.execute(runs, 'config.py', jobs=2, env=environment.child_env(
      tmp_path, 2), out=out, policy=policy)
  text = out.getvalue()
  # The last run in order is stopped; the first one ends at the deadline.
  assert outcome.stopped == [runs[1], runs[0]], text
  assert outcome.not_started == [runs[2]]
  assert ('[2/3] slow2 symmetric:0.4 seed 0: stopped early after' in text
          and 'projected past the deadline: slow by 1 s; dropped' in text)
  assert '[3/3] fast symmetric:0.4 seed 0: not started' in text
  assert set(outcome.seconds) == {1, 2}


def test_a_finished_run_is_skipped_and_a_failed_one_reported(tmp_path,
                                                             fake_train):
  del fake_train
  runs = fake_runs(tmp_path, ['fast', 'fails'])
  runs[0].workdir.mkdir(parents=True)
  (runs[0].workdir / 'result.json').write_text('{}')
  out = io.StringIO()
  outcome = processes.execute(runs, 'config.py', jobs=1,
                              env=environment.child_env(tmp_path, 1), out=out)
  assert outcome.failed == [runs[1]]
  text = out.getvalue()
  assert '[1/2] fast symmetric:0.4 seed 0: skipped (finished)' in text
  log = runs[1].workdir / 'log.txt'
  assert (f'[2/2] fails symmetric:0.4 seed 0: FAILED (exit code 3) after'
          in text and f'log: {log}\n    Traceback: boom' in text)
