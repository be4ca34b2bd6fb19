r"""Runs a grid of training runs and tabulates their final test accuracy.

A sweep is the product of method entries, noise settings and seeds::

  python -m experiments.sweep --config experiments/configs/digits.py \
    --methods ce,gce,phuber_ce@loss_hparams.tau=5,ogc_ce \
    --noise symmetric:0.2,symmetric:0.4,asymmetric:0.4,instance:0.4 \
    --seeds 0,1,2 --root runs/digits --jobs 2 \
    --table experiments/results/digits.md --set num_epochs=50

Each run is ``python -m experiments.train`` in its own workdir,
``ROOT/<method entry>/<kind>_<rate>/seed_<seed>``. A run is finished when its
``result.json`` exists; finished runs are not redone, and an unfinished one is
started again with the same command, which resumes from its last checkpoint,
so an interrupted sweep continues where it stopped. The sweep then writes a
markdown table of ``final_test_accuracy`` (mean ± std over seeds, best mean
per column in bold) and a CSV with one row per run; ``--aggregate-only``
rebuilds them from the workdirs without running anything.

Method entries are ``METHOD[@KEY=VALUE]...[:LABEL]``: the ``@`` overrides
apply to that method's runs only (on top of ``--set``), and the optional label
replaces the entry in the table. Values may not contain ``,``, ``@`` or
``:``. Noise settings are ``KIND:RATE`` with KIND one of ``none``,
``symmetric``, ``asymmetric``, ``instance`` (``none`` needs no rate).

A sweep can also be named by a specification file, so that one file holds a
table's whole sweep (``experiments/sweeps/*.json``)::

  python -m experiments.sweep --spec experiments/sweeps/cifar10_resnet18.json

It is a JSON object with the keys of the flags: ``config``, ``methods`` (a
list of method entries, in the table's order), ``noise`` (a list of
``KIND:RATE``), ``seeds`` (a list of integers; default ``[0]``), ``set`` (a
list of ``KEY=VALUE``), ``root``, ``table`` and ``title`` (both optional);
relative paths in it are relative to the repository root. With ``--spec``
only ``--jobs`` and ``--aggregate-only`` may be given: a flag that names the
sweep (``--config``, ``--methods``, ...) is an error, so that the file alone
says what its table holds.
"""

import argparse
import difflib
import importlib.util
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time
from typing import Callable, NamedTuple, Optional, Sequence

from experiments import grid
from experiments import tables
from experiments import workdir as workdir_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# When runs share the CPU, each keeps to one thread (XLA's default is one per
# core per process, which oversubscribes the machine).
SINGLE_THREAD_XLA_FLAGS = (
    '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
# When runs share a GPU, together they take this fraction of its memory (JAX
# preallocates 75% of it per process by default, so a second one fails).
GPU_MEMORY_FRACTION = 0.9


# ----------------------------------------------------------------------------
# Running.


def load_config(config_path: str):
  """Loads ``get_config()`` of a config file, as ``--config`` does.

  A ``path.py:ARG`` suffix calls ``get_config(ARG)``, as in ml_collections.
  """
  path, _, arg = config_path.partition(':')
  if not os.path.isfile(path):
    raise ValueError(f'config file {path!r} does not exist')
  spec = importlib.util.spec_from_file_location('_sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ValueError(f'config file {path!r} has no get_config()')
  return module.get_config(arg) if arg else module.get_config()


def check_override_keys(config, keys: Sequence[str], where: str) -> None:
  """Raises ValueError for a dotted key that the config does not have."""
  for key in keys:
    node = config
    for i, part in enumerate(key.split('.')):
      try:
        node = node[part]
      except (KeyError, TypeError, AttributeError):
        known = sorted(node.keys()) if hasattr(node, 'keys') else []
        prefix = '.'.join(key.split('.')[:i]) or 'the config'
        raise ValueError(
            f'{where}: unknown config key {key!r} ({prefix} has: '
            f'{", ".join(known)})') from None


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


def check_recorded_settings(runs: Sequence[grid.Run], config_path: str
                            ) -> None:
  """Raises ValueError if a workdir was started by a sweep with other settings.

  A finished run is reused as is, and an unfinished one resumes from its
  checkpoint; both would silently mix settings.
  """
  config = config_for_record(config_path)
  conflicts = []
  for run in runs:
    recorded = workdir_lib.read_sweep_args(run.workdir)
    current = {'config': config, 'overrides': run.overrides}
    if recorded is not None and workdir_lib.differing_keys(recorded, current):
      conflicts.append(f'  {run.workdir}: recorded {recorded}')
  if conflicts:
    raise ValueError(
        'these workdirs were run with other settings; use another --root or '
        'delete them:\n' + '\n'.join(conflicts[:10])
        + (f'\n  ... and {len(conflicts) - 10} more' if len(conflicts) > 10
           else ''))


def train_command(run: grid.Run, config_path: str) -> list[str]:
  """The ``experiments.train`` command line of a run."""
  path, sep, arg = config_path.partition(':')
  config = str(pathlib.Path(path).resolve()) + sep + arg
  return ([sys.executable, '-m', 'experiments.train', '--config', config,
           '--workdir', str(run.workdir.resolve())]
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


def _last_line(path: pathlib.Path) -> str:
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


def projected_seconds_left(workdir, min_epochs: int = 3) -> Optional[float]:
  """Seconds a running run still needs, from the times of its recent epochs.

  The median ``epoch_time_s`` of its last five epochs (leaving out the first,
  which compiles) times the epochs left.

  Args:
    workdir: the run's directory.
    min_epochs: the fewest finished epochs to project from.

  Returns:
    The projection; None before ``min_epochs`` epochs or without a config.

  Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as workdir:
    ...   workdir_lib.write_json(workdir_lib.config_path(workdir),
    ...                          {'num_epochs': 10})
    ...   workdir_lib.write_metrics(workdir, [
    ...       {'epoch': e, 'epoch_time_s': t}
    ...       for e, t in [(1, 30.0), (2, 2.0), (3, 3.0), (4, 2.5)]])
    ...   projected_seconds_left(workdir)
    15.0
  """
  rows = workdir_lib.read_metrics(workdir)
  num_epochs = workdir_lib.read_config(workdir).get('num_epochs')
  times = sorted(r['epoch_time_s'] for r in rows[1:][-5:]
                 if r.get('epoch_time_s') is not None)
  if len(rows) < min_epochs or not num_epochs or not times:
    return None
  return (num_epochs - rows[-1]['epoch']) * times[len(times) // 2]


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


def execute(runs: Sequence[grid.Run], config_path: str, *, jobs: int, env,
            out=None, deadline: Optional[float] = None,
            estimate: Optional[Callable[[grid.Run], float]] = None,
            on_done: Optional[Callable[[grid.Run, float], None]] = None,
            status_every_s: Optional[float] = None,
            stop_late_every_s: Optional[float] = None) -> Outcome:
  """Runs the unfinished runs, ``jobs`` at a time, printing one line per event.

  Each run is a process in its own process group, writing to
  ``WORKDIR/log.txt`` (appended to, so a resumed run keeps its earlier log).
  A failed run is reported and the others go on. Runs start in the given
  order; with a ``deadline``, a run starts only if ``estimate(run)`` seconds
  from now fall before it (a run that does not fit waits, and a later one
  that fits may start first), and the runs still going at the deadline are
  stopped (`stop_process_group`). Their workdirs stay as they are: the same
  command on the same machine resumes them from their last checkpoint.

  Runs that share a machine share its speed, and an estimate can be wrong:
  with ``stop_late_every_s``, every so many seconds the runs going are
  projected to their end (`projected_seconds_left`); if one would end after
  the deadline, the run last in order is stopped, so that the others get its
  share of the machine, and no other run starts.

  Args:
    runs: the planned runs (`grid.plan_runs`).
    config_path: the config file of the sweep.
    jobs: runs at a time.
    env: the environment of the processes (`child_env`).
    out: where the progress lines go (default stdout).
    deadline: a ``time.monotonic()`` value, or None for no deadline.
    estimate: seconds a run is expected to take; needed with ``deadline``.
    on_done: called as ``on_done(run, seconds)`` after each run finishes.
    status_every_s: if given, every so many seconds one line per running run
      with its last finished epoch and test accuracy.
    stop_late_every_s: with a deadline, how often to check for runs
      projected to end after it (see above); None: never.

  Returns:
    The `Outcome`. On a KeyboardInterrupt the runs going are stopped and the
    `Outcome` so far is returned, marked ``interrupted``.
  """
  if deadline is not None and estimate is None:
    raise ValueError('execute: a deadline needs an estimate of run times')
  out = out or sys.stdout
  total = len(runs)
  config = config_for_record(config_path)
  pending = list(runs)
  running = {}  # Popen -> (run, start time, log file)
  outcome = Outcome([], [], [], [], [], {})
  starting = True  # False once a run was stopped to let the others finish

  def say(run, text):
    print(f'[{run.index}/{total}] {run.name}: {text}', file=out, flush=True)

  def finish(proc, run, start, log):
    log.close()
    elapsed = time.monotonic() - start
    outcome.seconds[run.index] = elapsed
    result = None
    if proc.returncode == 0:
      try:
        result = workdir_lib.read_result(run.workdir)
      except ValueError as e:
        outcome.failed.append(run)
        say(run, f'FAILED: {e}')
        return
    if result is not None:
      final = result['final_test_accuracy']
      outcome.done.append(run)
      say(run, f'done in {elapsed:.1f} s, final {100 * final:.1f}%')
      if on_done is not None:
        on_done(run, elapsed)
      return
    outcome.failed.append(run)
    why = (f'exit code {proc.returncode}' if proc.returncode
           else f'exited without writing {workdir_lib.RESULT_FILE}')
    log_path = workdir_lib.log_path(run.workdir)
    last = _last_line(log_path)
    say(run, f'FAILED ({why}) after {elapsed:.1f} s; log: {log_path}'
        + (f'\n    {last}' if last else ''))

  def next_run():
    """The first pending run that is unfinished and fits before the deadline;
    finished ones met on the way are skipped."""
    if not starting:
      return None
    for run in list(pending):
      if workdir_lib.result_path(run.workdir).exists():
        pending.remove(run)
        outcome.skipped.append(run)
        say(run, 'skipped (finished)')
        continue
      if deadline is None or time.monotonic() + estimate(run) <= deadline:
        pending.remove(run)
        return run
    return None

  def start(run):
    run.workdir.mkdir(parents=True, exist_ok=True)
    workdir_lib.write_sweep_args(
        run.workdir, {'config': config, 'overrides': run.overrides})
    command = train_command(run, config_path)
    log = open(workdir_lib.log_path(run.workdir), 'a')
    log.write(f'$ {shlex.join(command)}\n')
    log.flush()
    resuming = workdir_lib.metrics_path(run.workdir).exists()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    running[proc] = (run, time.monotonic(), log)
    say(run, 'started' + (' (resuming)' if resuming else '')
        + (f', expected to take {estimate(run):.0f} s'
           if deadline is not None else ''))

  def status():
    for proc, (run, started, _) in running.items():
      rows = workdir_lib.read_metrics(run.workdir)
      num_epochs = workdir_lib.read_config(run.workdir).get('num_epochs', '?')
      epoch = (f'epoch {rows[-1]["epoch"]}/{num_epochs}, test '
               f'{100 * rows[-1]["test_accuracy"]:.1f}%' if rows
               else 'no epoch finished yet')
      say(run, f'{epoch}, {time.monotonic() - started:.0f} s')

  def stop_all(why):
    for proc in [p for p in running if p.poll() is not None]:
      finish(proc, *running.pop(proc))
    for proc, (run, started, log) in running.items():
      stop_process_group(proc)
      log.close()
      outcome.stopped.append(run)
      outcome.seconds[run.index] = time.monotonic() - started
      say(run, f'stopped unfinished {why} after '
          f'{outcome.seconds[run.index]:.0f} s; dropped')
    running.clear()

  def stop_last_if_late():
    nonlocal starting
    now = time.monotonic()
    late = []
    for run, _, _ in running.values():
      left = projected_seconds_left(run.workdir)
      if left is not None and now + left > deadline:
        late.append(f'{run.name} by {now + left - deadline:.0f} s')
    if not late:
      return
    proc = max(running, key=lambda p: running[p][0].index)
    run, started, log = running.pop(proc)
    stop_process_group(proc)
    log.close()
    outcome.stopped.append(run)
    outcome.seconds[run.index] = time.monotonic() - started
    starting = False
    say(run, f'stopped early after {outcome.seconds[run.index]:.0f} s, so '
        'that the others get its share of the machine: projected past the '
        f'deadline: {", ".join(late)}; dropped')

  next_status = (time.monotonic() + status_every_s if status_every_s
                 else float('inf'))
  check_late = stop_late_every_s and deadline is not None
  next_late_check = time.monotonic() + (stop_late_every_s or 0)
  try:
    while True:
      while len(running) < jobs:
        run = next_run()
        if run is None:
          break
        start(run)
      if not running:
        break  # all done, or nothing left fits before the deadline
      now = time.monotonic()
      if deadline is not None and now >= deadline:
        stop_all('at the deadline')
        break
      # Until a run ends (one running: block on it), the next status line
      # or the deadline.
      wait_s = min(next_status, deadline or float('inf')) - now
      if len(running) == 1:
        try:
          next(iter(running)).wait(
              timeout=None if wait_s == float('inf') else max(wait_s, 0.01))
        except subprocess.TimeoutExpired:
          pass
      else:
        time.sleep(max(min(0.2, wait_s), 0.01))
      for proc in [p for p in running if p.poll() is not None]:
        finish(proc, *running.pop(proc))
      if time.monotonic() >= next_status:
        status()
        next_status = time.monotonic() + status_every_s
      if (check_late and len(running) > 1
          and time.monotonic() >= next_late_check):
        stop_last_if_late()
        next_late_check = time.monotonic() + stop_late_every_s
  except KeyboardInterrupt:
    stop_all('by an interruption')
    outcome.not_started.extend(pending)
    return outcome._replace(interrupted=True)
  outcome.not_started.extend(pending)
  for run in pending:
    say(run, f'not started: it needs about {estimate(run):.0f} s')
  return outcome


# ----------------------------------------------------------------------------
# The sweep: from flags or a specification file.

SPEC_KEYS = ('config', 'methods', 'noise', 'seeds', 'set', 'root', 'table',
             'title')
_REQUIRED_SPEC_KEYS = ('config', 'methods', 'noise', 'root')


class Sweep(NamedTuple):
  """A sweep's grid and where its runs and table go.

  Attributes:
    config: the config file, as `load_config` takes it.
    methods, noises, seeds: the grid (rows, columns, seeds).
    set_overrides: ``--set`` overrides of every run.
    root: the directory of the runs.
    table: the markdown table's path; the CSV goes beside it.
    title: the table's heading.
    command: the command that regenerates the table.
  """
  config: str
  methods: tuple
  noises: tuple
  seeds: tuple
  set_overrides: dict
  root: pathlib.Path
  table: pathlib.Path
  title: str
  command: str

  def runs(self) -> list[grid.Run]:
    """The planned runs, in the order of the grid (`grid.plan_runs`)."""
    return grid.plan_runs(self.root, self.methods, self.noises, self.seeds,
                          self.set_overrides)


def _make_sweep(config, methods, noises, seeds, set_overrides, root, table,
                title, command) -> Sweep:
  methods = tuple(grid.parse_method(m) for m in methods)
  noises = tuple(grid.parse_noise(n) for n in noises)
  grid.check_grid(methods, noises, seeds)
  overrides = dict(grid.parse_override(o, '--set') for o in set_overrides)
  if len(overrides) != len(set_overrides):
    raise ValueError('--set gives a config key twice')
  root = pathlib.Path(root)
  table = pathlib.Path(table) if table else root / 'results.md'
  return Sweep(config, methods, noises, tuple(seeds), overrides, root, table,
               title or f'Sweep of {config}', command)


def _repo_path(path) -> pathlib.Path:
  """A spec's path: relative ones are relative to the repository root."""
  path = pathlib.Path(path)
  return path if path.is_absolute() else REPO_ROOT / path


def load_spec(path) -> Sweep:
  """Reads a sweep specification file.

  Args:
    path: a JSON file with the keys `SPEC_KEYS` (see the module docstring).

  Returns:
    The `Sweep`; its relative paths are taken from the repository root.

  Raises:
    ValueError: the file is missing or not valid JSON, has an unknown key or
      lacks a required one, a value has the wrong type, or the grid is
      invalid; the message names the file and the key.

  Example:
    >>> sweep = load_spec(
    ...     REPO_ROOT / 'experiments/sweeps/cifar10_resnet18.json')
    >>> [m.label for m in sweep.methods][:3]
    ['CE', 'GCE', 'PHuber-CE tau=2']
    >>> len(sweep.runs())
    50
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f'--spec: {path} is not a file')
  spec = workdir_lib.read_json(path)
  if not isinstance(spec, dict):
    raise ValueError(f'spec {path}: expected a JSON object with the keys '
                     f'{", ".join(SPEC_KEYS)}')
  for key in spec:
    if key not in SPEC_KEYS:
      near = difflib.get_close_matches(key, SPEC_KEYS, n=1)
      raise ValueError(
          f'spec {path}: unknown key {key!r}'
          + (f' (did you mean {near[0]!r}?)' if near else '')
          + f'; valid keys: {", ".join(SPEC_KEYS)}')
  missing = [k for k in _REQUIRED_SPEC_KEYS if k not in spec]
  if missing:
    raise ValueError(f'spec {path}: lacks {", ".join(missing)}')

  kinds = {
      'text': ('a non-empty string',
               lambda v: isinstance(v, str) and v.strip()),
      'texts': ('a list of strings', lambda v: isinstance(v, list) and all(
          isinstance(x, str) for x in v)),
      'ints': ('a list of integers', lambda v: isinstance(v, list) and all(
          isinstance(x, int) and not isinstance(x, bool) for x in v)),
  }

  def expect(key, kind, default=None):
    if key not in spec:
      return default
    what, ok = kinds[kind]
    if not ok(spec[key]):
      raise ValueError(f'spec {path}: {key!r} must be {what}, not '
                       f'{json.dumps(spec[key])}')
    return spec[key]

  config, methods = expect('config', 'text'), expect('methods', 'texts')
  noises, root = expect('noise', 'texts'), expect('root', 'text')
  seeds = expect('seeds', 'ints', [0])
  set_overrides = expect('set', 'texts', [])
  table, title = expect('table', 'text'), expect('title', 'text')
  if len(set(seeds)) != len(seeds):
    raise ValueError(f'spec {path}: seeds {seeds} repeat a seed')
  try:
    return _make_sweep(
        str(_repo_path(config)), methods, noises, seeds, set_overrides,
        _repo_path(root), _repo_path(table) if table else None,
        title or f'Sweep of {config}',
        shlex.join(['python', '-m', 'experiments.sweep', '--spec',
                    repo_relative(path)]))
  except ValueError as e:
    raise ValueError(f'spec {path}: {e}') from None


def check_sweep_config(sweep: Sweep) -> None:
  """Loads the sweep's config and checks every override key against it."""
  config = load_config(sweep.config)
  check_override_keys(config, list(sweep.set_overrides), '--set')
  for method in sweep.methods:
    check_override_keys(config, [k for k, _ in method.overrides],
                        f'method entry {method.entry!r}')


def write_tables(sweep: Sweep) -> list[tables.RunResult]:
  """Writes the sweep's markdown table and CSV from its finished runs."""
  results = tables.collect_results(sweep.root, sweep.methods, sweep.noises,
                                   sweep.seeds)
  sweep.table.parent.mkdir(parents=True, exist_ok=True)
  sweep.table.write_text(tables.render_table(
      results, sweep.methods, sweep.noises, sweep.seeds, title=sweep.title,
      command=sweep.command))
  tables.write_csv(results, sweep.table.with_suffix('.csv'))
  return results


# ----------------------------------------------------------------------------
# Command line.

# Flags that name the sweep; with --spec the file names it instead.
_SWEEP_FLAGS = ('config', 'methods', 'noise', 'seeds', 'root', 'table',
                'title', 'set_overrides')


def _split(text: str) -> list[str]:
  return [part for part in (p.strip() for p in text.split(',')) if part]


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m experiments.sweep',
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split('\n\n', 1)[1])
  parser.add_argument('--spec', default=None,
                      help='sweep specification file (JSON); replaces the '
                      'flags from --config to --set')
  parser.add_argument('--config', default=None,
                      help='config file, e.g. experiments/configs/digits.py')
  parser.add_argument('--methods', default=None,
                      help='comma-separated METHOD[@KEY=VALUE]...[:LABEL]')
  parser.add_argument('--noise', default=None,
                      help='comma-separated KIND:RATE, e.g. symmetric:0.4')
  parser.add_argument('--seeds', default=None,
                      help='comma-separated, e.g. 0,1,2 (default 0)')
  parser.add_argument('--root', default=None, help='directory of the runs')
  parser.add_argument('--table', default=None,
                      help='markdown table path (default ROOT/results.md); '
                      'the CSV goes beside it with .csv')
  parser.add_argument('--title', default=None, help='heading of the table')
  parser.add_argument('--set', dest='set_overrides', action='append',
                      default=None, metavar='KEY=VALUE',
                      help='config override for every run (repeatable)')
  parser.add_argument('--jobs', type=int, default=1,
                      help='runs at a time (default 1)')
  parser.add_argument('--aggregate-only', action='store_true',
                      help='only rebuild the table and CSV from the workdirs')
  return parser


def regenerate_command(args) -> str:
  """The command line that regenerates the table (``--jobs`` left out)."""
  parts = ['python', '-m', 'experiments.sweep', '--config', args.config,
           '--methods', args.methods, '--noise', args.noise, '--seeds',
           args.seeds, '--root', args.root, '--table', args.table]
  if args.title:
    parts += ['--title', args.title]
  for override in args.set_overrides:
    parts += ['--set', override]
  return shlex.join(parts)


def sweep_from_args(args) -> Sweep:
  """The `Sweep` named by ``--spec`` or by the flags.

  Raises:
    ValueError: ``--spec`` comes with a flag that names the sweep, a required
      flag is missing, or the spec or a flag is invalid.
  """
  given = [f'--{name.replace("_overrides", "").replace("_", "-")}'
           for name in _SWEEP_FLAGS if getattr(args, name) is not None]
  if args.spec is not None:
    if given:
      raise ValueError(
          f'--spec names the whole sweep; {", ".join(given)} cannot be given '
          'with it (edit the spec, or give the flags without --spec)')
    return load_spec(args.spec)
  missing = [f'--{name}' for name in ('config', 'methods', 'noise', 'root')
             if getattr(args, name) is None]
  if missing:
    raise ValueError(f'{", ".join(missing)} required (or --spec FILE)')
  args.seeds = args.seeds or '0'
  args.set_overrides = args.set_overrides or []
  if args.table is None:
    args.table = os.path.join(args.root, 'results.md')
  return _make_sweep(
      args.config, _split(args.methods), _split(args.noise),
      grid.parse_seeds(args.seeds), args.set_overrides, args.root, args.table,
      args.title, regenerate_command(args))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the sweep; returns the exit status (1 if a run failed)."""
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    if args.jobs < 1:
      raise ValueError('--jobs must be at least 1')
    sweep = sweep_from_args(args)
    runs = sweep.runs()
    check_recorded_settings(runs, sweep.config)
    if not args.aggregate_only:
      check_sweep_config(sweep)
  except ValueError as e:
    parser.error(str(e))

  failed = []
  if not args.aggregate_only:
    env = child_env(sweep.root, args.jobs)
    outcome = execute(runs, sweep.config, jobs=args.jobs, env=env)
    if outcome.interrupted:
      print('interrupted; run the same command again to continue',
            flush=True)
      return 130
    failed = outcome.failed
    print(f'{len(runs)} runs: {len(outcome.done)} done, '
          f'{len(outcome.skipped)} skipped (finished), {len(failed)} failed',
          flush=True)
    for run in failed:
      print(f'  failed: {run.name}: {workdir_lib.log_path(run.workdir)}',
            flush=True)

  results = write_tables(sweep)
  print(f'{len(results)}/{len(runs)} runs finished; wrote {sweep.table} and '
        f'{sweep.table.with_suffix(".csv")}', flush=True)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
