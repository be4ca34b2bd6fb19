"""Runs planned training runs as processes: start, watch and stop them.

Each run (`sweeps.grid.Run`) is ``python -m experiments.train`` in its
own workdir and its own process group, writing to ``WORKDIR/log.txt``. The
sweep (`sweeps.sweep`) runs them to their end; the time-boxed runner
(`sweeps.lease`) gives `execute` a `Policy` with a deadline.
"""

import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time
from typing import NamedTuple, Optional, Sequence

from experiments import workdir as workdir_lib
from sweeps import grid

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# When runs share the CPU, each keeps to one thread (XLA's default is one per
# core per process, which oversubscribes the machine).
SINGLE_THREAD_XLA_FLAGS = (
    '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
# When runs share a GPU, together they take this fraction of its memory (JAX
# preallocates 75% of it per process by default, so a second one fails).
GPU_MEMORY_FRACTION = 0.9


def repo_relative(path) -> str:
  """``path`` relative to the repository root where it lies inside it.

  Example:
    >>> repo_relative(REPO_ROOT / 'experiments' / 'configs' / 'digits.py')
    'experiments/configs/digits.py'
  """
  resolved = pathlib.Path(path).resolve()
  if resolved.is_relative_to(REPO_ROOT):
    return resolved.relative_to(REPO_ROOT).as_posix()
  return resolved.as_posix()


def config_for_record(config_path: str) -> str:
  """The config file as a sweep records it: relative to the repository."""
  path, sep, arg = config_path.partition(':')
  return repo_relative(path) + sep + arg


def sweep_args(run: grid.Run, config_path: str) -> dict:
  """What a sweep records of a run (``sweep_args.json``): config, overrides."""
  return {'config': config_for_record(config_path), 'overrides': run.overrides}


def other_settings(recorded: Optional[dict], run: grid.Run,
                   config_path: str) -> bool:
  """Whether ``recorded`` `sweep_args` (None: none) are not the run's own.

  A workdir a sweep started with other settings must not be reused: a
  finished run would stand in the table for another, and an unfinished one
  would resume with other settings.
  """
  return recorded is not None and bool(workdir_lib.differing_keys(
      recorded, sweep_args(run, config_path)))


def train_command(run: grid.Run, config_path: str) -> list[str]:
  """The ``experiments.train`` command line of a run."""
  path, sep, arg = config_path.partition(':')
  config = str(pathlib.Path(path).resolve()) + sep + arg
  return ([sys.executable, '-m', 'experiments.train', '--config', config,
           '--workdir', str(run.workdir.resolve())]
          + [f'--config.{k}={v}' for k, v in run.overrides.items()])


def shown_command(run: grid.Run, config_path: str) -> str:
  """The command of a run as its log shows it: paths from the repository.

  Example:
    >>> run = grid.plan_runs(REPO_ROOT / 'runs', [grid.parse_method('ce')],
    ...                      [grid.parse_noise('none')], [0], {})[0]
    >>> shown_command(run, 'experiments/configs/digits.py')
    'python -m experiments.train --config experiments/configs/digits.py --workdir runs/ce/none_0/seed_0 --config.method=ce --config.noise.kind=none --config.noise.rate=0.0 --config.seed=0'
  """
  return shlex.join(
      ['python', '-m', 'experiments.train', '--config',
       config_for_record(config_path), '--workdir',
       repo_relative(run.workdir)]
      + [f'--config.{k}={v}' for k, v in run.overrides.items()])


def child_env(root, jobs: int) -> dict[str, str]:
  """The environment of the training processes.

  All runs share a persistent compilation cache under ROOT (unless
  ``JAX_COMPILATION_CACHE_DIR`` is set), so a process reuses what an earlier
  one compiled. With ``jobs > 1`` the processes share the machine: on a CPU
  each keeps to one thread, and on a GPU each takes ``0.9 / jobs`` of its
  memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``, unless it or
  ``XLA_PYTHON_CLIENT_PREALLOCATE`` is set already). Each setting is read by
  its own backend only, so both are set whatever the machine.
  """
  env = dict(os.environ)
  env.setdefault('JAX_COMPILATION_CACHE_DIR',
                 str((pathlib.Path(root) / '.jax_cache').resolve()))
  # Cache every compilation, not only those over JAX's 1 s default: a digits
  # run compiles a dozen sub-second programs.
  env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  env['PYTHONUNBUFFERED'] = '1'  # the log shows progress as it happens
  if jobs > 1:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' '
                        + SINGLE_THREAD_XLA_FLAGS).strip()
    if not {'XLA_PYTHON_CLIENT_MEM_FRACTION',
            'XLA_PYTHON_CLIENT_PREALLOCATE'} & set(env):
      env['XLA_PYTHON_CLIENT_MEM_FRACTION'] = (
          f'{GPU_MEMORY_FRACTION / jobs:.3f}')
  return env


def last_line(path: pathlib.Path) -> str:
  """The last non-empty line of a log, at most 200 characters ('' if none)."""
  try:
    lines = [l for l in path.read_text(errors='replace').splitlines()
             if l.strip()]
  except OSError:
    return ''
  return lines[-1].strip()[:200] if lines else ''


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


class Outcome(NamedTuple):
  """What `execute` did with each run it was given.

  Attributes:
    done: runs that finished in this call.
    skipped: runs that had finished before.
    failed: runs that exited without a valid ``result.json``.
    stopped: runs stopped at the deadline, unfinished.
    not_started: runs that would not have finished before the deadline, or
      were not reached before an interruption.
    seconds: wall-clock seconds of each run started, by ``Run.index``.
    interrupted: a KeyboardInterrupt (Ctrl-C, or a SIGTERM its caller turns
      into one) stopped the runs going, which are in ``stopped``.
  """
  done: list
  skipped: list
  failed: list
  stopped: list
  not_started: list
  seconds: dict
  interrupted: bool = False


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
            policy: Optional[Policy] = None) -> Outcome:
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
    env: the environment of the processes (`child_env`).
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
  outcome = Outcome([], [], [], [], [], {})
  starting = True  # False once a run was stopped to let the others finish

  def say(run, text):
    print(f'[{run.index}/{len(runs)}] {run.name}: {text}', file=out,
          flush=True)

  def finish(g):
    g.log.close()
    going.remove(g)
    run, elapsed = g.run, time.monotonic() - g.started
    outcome.seconds[run.index] = elapsed
    result = None
    if g.proc.returncode == 0:
      try:
        result = workdir_lib.read_result(run.workdir)
      except ValueError as e:
        outcome.failed.append(run)
        say(run, f'FAILED: {e}')
        return
    if result is not None:
      outcome.done.append(run)
      say(run, f'done in {elapsed:.1f} s, final '
          f'{100 * result["final_test_accuracy"]:.1f}%')
      policy.on_done(run, elapsed)
      return
    outcome.failed.append(run)
    why = (f'exit code {g.proc.returncode}' if g.proc.returncode
           else f'exited without writing {workdir_lib.RESULT_FILE}')
    log_path = workdir_lib.log_path(run.workdir)
    last = last_line(log_path)
    say(run, f'FAILED ({why}) after {elapsed:.1f} s; log: {log_path}'
        + (f'\n    {last}' if last else ''))

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
    workdir_lib.write_sweep_args(run.workdir, sweep_args(run, config_path))
    command = train_command(run, config_path)
    log = open(workdir_lib.log_path(run.workdir), 'a')
    log.write(f'$ {shown_command(run, config_path)}\n')
    log.flush()
    resuming = workdir_lib.metrics_path(run.workdir).exists()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT,
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
