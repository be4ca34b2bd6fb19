"""Runs planned runs as processes on this machine, within a deadline.

The engine of the time-boxed runner (`sweeps.lease`), for a machine held for a
fixed time without network, where Ray may not be installed and cannot be
brought (its wheel alone is larger than what such a machine is usually
sent): each run (`sweeps.grid.Run`) is ``python -m experiments.train`` in its
own workdir and its own process group, writing to ``WORKDIR/log.txt``, started
and stopped under a `Policy` with a deadline. Sweeps without a deadline, on
this machine or a cluster, run on Ray (`sweeps.runner`).
"""

import os
import signal
import subprocess
import sys
import time
from typing import NamedTuple, Optional, Sequence

from experiments import workdir as workdir_lib
from sweeps import grid
from sweeps import run_files
from sweeps import runner


def stop_process_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
  """Ends a run started by `execute` and every process it started.

  Sends SIGTERM to the run's process group, waits up to ``grace_s`` for the
  run to exit, then SIGKILLs whatever of the group is left.
  """
  for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
      os.killpg(proc.pid, sig)
    except ProcessLookupError:  # the whole group has exited
      pass
    if sig == signal.SIGTERM:
      try:
        proc.wait(timeout=grace_s)
      except subprocess.TimeoutExpired:
        pass
  proc.wait()


class Policy:
  """When runs may start and must stop; this one sets no limit (a sweep).

  Attributes:
    deadline: a ``time.monotonic()`` value at which the runs going are
      stopped, or None.
    check_every_s: how often `late` is asked, or None (never).
  """
  deadline: Optional[float] = None
  check_every_s: Optional[float] = None

  def finished(self, run: grid.Run) -> bool:
    """Whether ``run`` has finished already (it is skipped)."""
    return workdir_lib.result_path(run.workdir).exists()

  def fits(self, run: grid.Run) -> bool:
    """Whether ``run`` may start now."""
    del run
    return True

  def start_note(self, run: grid.Run) -> str:
    """Words after "started" in the run's first line."""
    del run
    return ''

  def not_started_note(self, run: grid.Run) -> str:
    """Why ``run`` was never started."""
    del run
    return 'not started'

  def late(self, runs: Sequence[grid.Run]) -> list[str]:
    """The runs going that would end too late, in words ([]: none)."""
    del runs
    return []

  def on_done(self, run: grid.Run, seconds: float) -> None:
    """Called after each run finishes, with its wall-clock seconds."""


class _Going(NamedTuple):
  run: grid.Run
  proc: subprocess.Popen
  started: float
  log: object


def execute(runs: Sequence[grid.Run], config_path: str, *, jobs: int, env,
            out=None, status_every_s: Optional[float] = None,
            policy: Optional[Policy] = None) -> runner.Outcome:
  """Runs the unfinished runs, ``jobs`` at a time, printing one line per event.

  Each run is a process in its own process group, writing to
  ``WORKDIR/log.txt`` (appended to, so a resumed run keeps its earlier log).
  A failed run is reported and the others go on. Runs start in the given
  order, each once ``policy.fits`` it (a run that does not fit waits, and a
  later one that fits may start first). The runs still going at
  ``policy.deadline`` are stopped (`stop_process_group`); every
  ``policy.check_every_s``, if `Policy.late` names a run, the run last in
  order is stopped so that the others get its share of the machine, and no
  other run starts. A stopped run's workdir stays as it is: the same command
  on the same machine resumes it from its last checkpoint.

  Args:
    runs: the planned runs (`grid.plan_runs`).
    config_path: the config file of the sweep.
    jobs: runs at a time.
    env: the environment of the processes (`experiments.environment.child_env`).
    out: where the progress lines go (default stdout).
    status_every_s: if given, every so many seconds one line per running run
      with its last finished epoch and test accuracy.
    policy: the `Policy` (default: no limit).

  Returns:
    The `Outcome`. On a KeyboardInterrupt the runs going are stopped and the
    `Outcome` so far is returned, marked ``interrupted``.
  """
  out = out or sys.stdout
  policy = policy or Policy()
  pending = list(runs)
  going = []
  outcome = runner.Outcome([], [], [], [], [], {})
  starting = True  # False once a run was stopped to let the others finish

  def say(run, text):
    print(f'[{run.index}/{len(runs)}] {run.name}: {text}', file=out,
          flush=True)

  def finish(g):
    g.log.close()
    going.remove(g)
    run, elapsed = g.run, time.monotonic() - g.started
    outcome.seconds[run.index] = elapsed
    done, line = runner.judge_ended(run, g.proc.returncode, elapsed)
    (outcome.done if done else outcome.failed).append(run)
    say(run, line)
    if done:
      policy.on_done(run, elapsed)

  def stop(g) -> float:
    going.remove(g)
    stop_process_group(g.proc)
    g.log.close()
    outcome.stopped.append(g.run)
    outcome.seconds[g.run.index] = time.monotonic() - g.started
    return outcome.seconds[g.run.index]

  def next_run():
    """The first pending run that is unfinished and fits; finished ones met
    on the way are skipped."""
    for run in list(pending) if starting else []:
      if policy.finished(run):
        pending.remove(run)
        outcome.skipped.append(run)
        say(run, 'skipped (finished)')
      elif policy.fits(run):
        pending.remove(run)
        return run
    return None

  def start(run):
    run.workdir.mkdir(parents=True, exist_ok=True)
    run_files.write_sweep_args(run.workdir,
                                 runner.sweep_args(run, config_path))
    command = runner.train_command(run, config_path)
    log = open(run_files.log_path(run.workdir), 'a')
    log.write(f'$ {runner.shown_command(run, config_path)}\n')
    log.flush()
    resuming = workdir_lib.metrics_path(run.workdir).exists()
    proc = subprocess.Popen(command, cwd=runner.REPO_ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    going.append(_Going(run, proc, time.monotonic(), log))
    say(run, 'started' + (' (resuming)' if resuming else '')
        + policy.start_note(run))

  def status():
    for g in going:
      rows = workdir_lib.read_metrics(g.run.workdir)
      num_epochs = workdir_lib.read_config(g.run.workdir).get('num_epochs',
                                                               '?')
      epoch = (f'epoch {rows[-1]["epoch"]}/{num_epochs}, test '
               f'{100 * rows[-1]["test_accuracy"]:.1f}%' if rows
               else 'no epoch finished yet')
      say(g.run, f'{epoch}, {time.monotonic() - g.started:.0f} s')

  def stop_all(why):
    for g in [g for g in going if g.proc.poll() is not None]:
      finish(g)
    for g in list(going):
      say(g.run, f'stopped unfinished {why} after {stop(g):.0f} s; dropped')

  next_status = time.monotonic() + (status_every_s or float('inf'))
  next_check = time.monotonic() + (policy.check_every_s or float('inf'))
  try:
    while True:
      while len(going) < jobs and (run := next_run()) is not None:
        start(run)
      if not going:
        break  # all done, or nothing left fits
      deadline = policy.deadline  # read each time: a policy may move it
      if deadline is not None and time.monotonic() >= deadline:
        stop_all('at the deadline')
        break
      # Until a run ends (one running: block on it), the next status line,
      # the deadline, or 0.2 s.
      wait_s = min(next_status, deadline or float('inf'),
                   time.monotonic() + 0.2) - time.monotonic()
      if len(going) == 1:
        try:
          going[0].proc.wait(timeout=max(wait_s, 0.01))
        except subprocess.TimeoutExpired:
          pass
      else:
        time.sleep(max(wait_s, 0.01))
      for g in [g for g in going if g.proc.poll() is not None]:
        finish(g)
      if time.monotonic() >= next_status:
        status()
        next_status = time.monotonic() + status_every_s
      if len(going) > 1 and time.monotonic() >= next_check:
        late = policy.late([g.run for g in going])
        if late:
          starting = False
          last = max(going, key=lambda g: g.run.index)
          say(last.run, f'stopped early after {stop(last):.0f} s, so that '
              'the others get its share of the machine: projected past the '
              f'deadline: {", ".join(late)}; dropped')
        next_check = time.monotonic() + policy.check_every_s
  except KeyboardInterrupt:
    stop_all('by an interruption')
    outcome.not_started.extend(pending)
    return outcome._replace(interrupted=True)
  outcome.not_started.extend(pending)
  for run in pending:
    say(run, policy.not_started_note(run))
  return outcome
