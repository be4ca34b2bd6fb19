"""Runs planned training runs as Ray tasks, on this machine or a cluster.

Each run (`sweeps.grid.Run`) is one Ray task (`sweeps.node.run_training`)
that executes ``python -m experiments.train`` in the run's workdir, in a
process group of its own, writing to ``WORKDIR/log.txt``. Without an address
the tasks run on a local Ray instance that this process starts, sized to the
machine; with one (``RayOptions.address``, or ``RAY_ADDRESS``) they run on
that cluster, each with the CPUs and GPUs it asks for. A task whose node is
lost is retried by Ray and resumes from the run's last checkpoint. The sweeps
(`sweeps.sweep`, `sweeps.compare_lists`) run their runs here; the time-boxed
runner (`sweeps.lease`) runs them as processes under a deadline
(`sweeps.processes`). The planning helpers and `Outcome` serve both.
"""

import hashlib
import math
import os
import pathlib
import shlex
import sys
import tempfile
import time
from typing import NamedTuple, Optional, Sequence

from experiments import files
from experiments import workdir as workdir_lib
from sweeps import grid
from sweeps import node
from sweeps import run_files

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
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


def last_line(path: pathlib.Path) -> str:
  """The last non-empty line of a log, at most 200 characters ('' if none)."""
  try:
    lines = [l for l in path.read_text(errors='replace').splitlines()
             if l.strip()]
  except OSError:
    return ''
  return lines[-1].strip()[:200] if lines else ''


def judge_ended(run: grid.Run, returncode: int, elapsed: float
                ) -> tuple[bool, str]:
  """Whether a run whose training command ended with ``returncode`` is done
  (it wrote a valid ``result.json``), and its line in the progress: its
  final accuracy, or why it failed with the last line of its log."""
  if returncode == 0:
    try:
      result = workdir_lib.read_result(run.workdir)
    except ValueError as e:
      return False, f'FAILED: {e}'
    if result is not None:
      return True, (f'done in {elapsed:.1f} s, final '
                    f'{100 * result["final_test_accuracy"]:.1f}%')
  why = (f'exit code {returncode}' if returncode
         else f'exited without writing {workdir_lib.RESULT_FILE}')
  log_path = run_files.log_path(run.workdir)
  last = last_line(log_path)
  return False, (f'FAILED ({why}) after {elapsed:.1f} s; log: {log_path}'
                 + (f'\n    {last}' if last else ''))


class Outcome(NamedTuple):
  """What a runner (`execute`, `sweeps.processes.execute`) did with each run.

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


# ----------------------------------------------------------------------------
# Ray: where the runs go and what each asks for.

WORKDIRS = ('shared', 'node')
# How long stopping runs waits for their tasks to end.
CANCEL_WAIT_S = 30.0


class RayOptions(NamedTuple):
  """Where the runs of `execute` run and what each asks Ray for.

  Attributes:
    address: a Ray cluster's address (``HOST:PORT``, or ``auto`` on one of
      its nodes); None: ``RAY_ADDRESS`` if set, else a local Ray instance
      started for this process, with ``max(CPU count, jobs x cpus_per_run)``
      CPUs, so that ``jobs`` runs go at once.
    cpus_per_run: CPUs a run takes (may be a fraction).
    gpus_per_run: GPUs a run takes; a fraction packs runs on one GPU, each
      with that share of its memory.
    workdirs: ``'shared'``: every node sees the sweep's root at the same
      path (a shared filesystem), runs write there, and a run whose node is
      lost resumes on another from its last checkpoint. ``'node'``: runs
      write to the disk of their node, under `node_root`, and the task
      returns the record files (`sweeps.node.RETURNED_FILES`), which this
      process writes under the sweep's root; a run whose node is lost starts
      again on another.
    max_retries: how often Ray runs a task again whose worker or node died.
  """
  address: Optional[str] = None
  cpus_per_run: float = 1.0
  gpus_per_run: float = 0.0
  workdirs: str = 'shared'
  max_retries: int = 3

  def check(self) -> 'RayOptions':
    """Raises ValueError naming the first option out of range."""
    if not self.cpus_per_run > 0:
      raise ValueError(f'CPUs per run must be > 0, not {self.cpus_per_run}')
    if not self.gpus_per_run >= 0:
      raise ValueError(f'GPUs per run must be >= 0, not {self.gpus_per_run}')
    if self.gpus_per_run > 1 and self.gpus_per_run != int(self.gpus_per_run):
      raise ValueError('GPUs per run above 1 must be a whole number, not '
                       f'{self.gpus_per_run}')
    if self.workdirs not in WORKDIRS:
      raise ValueError(f'workdirs must be one of {", ".join(WORKDIRS)}, not '
                       f'{self.workdirs!r}')
    return self

  def cluster_address(self) -> Optional[str]:
    return self.address or os.environ.get('RAY_ADDRESS') or None


def node_root(root) -> pathlib.Path:
  """Where runs of ``root`` write on a node's own disk (``workdirs='node'``).

  A folder of the node's temporary directory named after ``root``, so that
  two sweeps do not share it.
  """
  resolved = str(pathlib.Path(root).resolve())
  digest = hashlib.sha256(resolved.encode()).hexdigest()[:12]
  return (pathlib.Path(tempfile.gettempdir()) / 'ogc_jax_runs'
          / f'{pathlib.Path(resolved).name}-{digest}')


# The local instance this process started, and with how many CPUs, or the
# cluster it joined; the
# dashboard's address, where Ray runs one (``pip install 'ray[default]'``).
_local_cpus: Optional[float] = None
_joined_address: Optional[str] = None  # the cluster this process joined
_dashboard_url: Optional[str] = None


# Ray's socket paths add about 70 bytes to its temporary folder's.
_LONGEST_RAY_TMPDIR = 32


def connect(options: RayOptions, jobs: int):
  """Connects this process to Ray as ``options`` say; returns the module.

  A local instance started by an earlier call is reused when it has the
  CPUs ``jobs`` runs need; a cluster is joined once.

  Raises:
    ValueError: ray is not installed, the cluster cannot be reached, or it
      lacks the resources one run asks for.
  """
  try:
    import ray  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError('sweeps run on Ray: pip install -r requirements.txt, '
                     "or pip install 'ray==2.60.0'") from None
  address = options.cluster_address()
  want_cpus = max(os.cpu_count() or 1, math.ceil(jobs * options.cpus_per_run))
  reuse = ray.is_initialized() and (
      (address is None and (_local_cpus or 0) >= want_cpus)
      or (address is not None and address == _joined_address))
  if not reuse:
    _start(ray, address, want_cpus)
  total = ray.cluster_resources()
  for name, need in (('CPU', options.cpus_per_run),
                     ('GPU', options.gpus_per_run)):
    if need and total.get(name, 0) < need:
      raise ValueError(
          f'a run asks for {need:g} {name}s, and the Ray '
          f'{"cluster at " + address if address else "instance here"} has '
          f'{total.get(name, 0):g}')
  return ray


def _start(ray, address: Optional[str], num_cpus: int) -> None:
  """Starts a local Ray instance (``address`` None) or joins a cluster."""
  global _local_cpus, _joined_address, _dashboard_url
  if ray.is_initialized():
    ray.shutdown()
  _local_cpus = _joined_address = None
  job_config = ray.job_config.JobConfig(code_search_path=[str(REPO_ROOT)])
  common = dict(job_config=job_config, log_to_driver=False,
                configure_logging=False, include_dashboard=None)
  if address is None:
    # Ray keeps the instance's sockets under $RAY_TMPDIR, else $TMPDIR, and a
    # socket's path may have at most 107 bytes, which a long $TMPDIR (a batch
    # job's, a test's) leaves no room for: then /tmp.
    if ('RAY_TMPDIR' not in os.environ
        and len(os.environ.get('TMPDIR', '')) > _LONGEST_RAY_TMPDIR
        and os.path.isdir('/tmp')):
      os.environ['RAY_TMPDIR'] = '/tmp'
    context = ray.init(num_cpus=num_cpus, object_store_memory=200 * 2**20,
                       **common)
    _local_cpus = num_cpus
  else:
    try:
      context = ray.init(address=address, **common)
    except (ConnectionError, RuntimeError) as e:
      raise ValueError(f'cannot join the Ray cluster at {address}: '
                       f'{str(e).splitlines()[0]}') from None
    _joined_address = address
  _dashboard_url = getattr(context, 'dashboard_url', None) or None


def describe_cluster(ray) -> str:
  """One line: the Ray instance's nodes, CPUs and GPUs (and dashboard)."""
  nodes = [n for n in ray.nodes() if n.get('Alive')]
  total = ray.cluster_resources()
  text = (f'{len(nodes)} node{"s" * (len(nodes) != 1)}, '
          f'{total.get("CPU", 0):g} CPUs, {total.get("GPU", 0):g} GPUs')
  return text + (f'; dashboard http://{_dashboard_url}' if _dashboard_url
                 else '')


# ----------------------------------------------------------------------------
# Running.


class _Going(NamedTuple):
  run: grid.Run
  ref: object  # the Ray task's ObjectRef
  started: float


def _task(run: grid.Run, config_path: str, env: dict, options: RayOptions,
          root_on_node: Optional[pathlib.Path], root) -> node.Task:
  """The `sweeps.node.Task` of ``run``."""
  on_node = run
  if root_on_node is not None:
    on_node = run._replace(workdir=root_on_node / pathlib.Path(
        run.workdir).resolve().relative_to(pathlib.Path(root).resolve()))
  local = options.cluster_address() is None
  if not local:  # the node's own environment, with what the runner sets
    env = {k: v for k, v in env.items() if os.environ.get(k) != v}
  return node.Task(
      command=train_command(on_node, config_path), cwd=str(REPO_ROOT),
      workdir=str(pathlib.Path(on_node.workdir).resolve()),
      sweep_args=sweep_args(run, config_path),
      header=f'$ {shown_command(run, config_path)}', env=env,
      env_is_whole=local, accelerators=options.gpus_per_run > 0,
      return_files=root_on_node is not None)


def execute(runs: Sequence[grid.Run], config_path: str, *,
            jobs: Optional[int], env, out=None,
            status_every_s: Optional[float] = None,
            options: Optional[RayOptions] = None, root=None) -> Outcome:
  """Runs the unfinished runs as Ray tasks, printing one line per event.

  Each run is a Ray task (`sweeps.node.run_training`): the training command
  in a process group of its own, writing to ``WORKDIR/log.txt`` (appended
  to, so a resumed run keeps its earlier log). Finished runs (a
  ``result.json``) are skipped. A failed run is reported and the others go
  on; after each run that ends, a line counts the runs done, running, failed
  and waiting. At most ``jobs`` tasks are submitted at a time (None: 1 on a
  local instance, no limit on a cluster, where Ray queues them by their
  resources), in the given order. On a KeyboardInterrupt (Ctrl-C) the tasks
  going are cancelled, which kills their process groups; a stopped run's
  workdir stays as it is, and the same command resumes it from its last
  checkpoint.

  Args:
    runs: the planned runs (`grid.plan_runs`).
    config_path: the config file of the sweep.
    jobs: runs at a time (see above).
    env: the environment of the processes
      (`experiments.environment.child_env`); on a cluster only
      the variables in which it differs from this process's environment are
      set, on top of each node's own.
    out: where the progress lines go (default stdout).
    status_every_s: if given, every so many seconds one line per running run
      with its last finished epoch and test accuracy (shared workdirs only).
    options: the `RayOptions` (default: a local instance, 1 CPU a run).
    root: the sweep's root (needed with ``options.workdirs == 'node'``).

  Returns:
    The `Outcome`. On a KeyboardInterrupt the runs going are stopped and the
    `Outcome` so far is returned, marked ``interrupted``.

  Raises:
    ValueError: `connect`'s.
  """
  out = out or sys.stdout
  options = (options or RayOptions()).check()
  on_cluster = options.cluster_address() is not None
  cap = jobs or (math.inf if on_cluster else 1)
  pending = list(runs)
  if all(workdir_lib.result_path(r.workdir).exists() for r in pending):
    for run in pending:  # nothing to run: no Ray to start
      print(f'[{run.index}/{len(runs)}] {run.name}: skipped (finished)',
            file=out, flush=True)
    return Outcome([], list(pending), [], [], [], {})
  ray = connect(options, jobs or 1)
  root_on_node = None
  if options.workdirs == 'node':
    if root is None:
      raise ValueError("workdirs='node' needs the sweep's root")
    root_on_node = node_root(root)
  remote = ray.remote(node.run_training).options(
      num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run,
      max_retries=options.max_retries, retry_exceptions=False)
  going: list[_Going] = []
  outcome = Outcome([], [], [], [], [], {})
  lost = []  # why Ray itself is gone (this process's raylet died)
  print(f'Ray: {describe_cluster(ray)}', file=out, flush=True)

  def say(run, text):
    print(f'[{run.index}/{len(runs)}] {run.name}: {text}', file=out,
          flush=True)

  def tally():
    print(f'  {len(outcome.done)} done, {len(going)} running, '
          f'{len(outcome.failed)} failed, {len(pending)} waiting', file=out,
          flush=True)

  def finish(g, value=None, error=None):
    going.remove(g)
    run, elapsed = g.run, time.monotonic() - g.started
    outcome.seconds[run.index] = elapsed
    if error is not None:
      outcome.failed.append(run)
      say(run, f'FAILED after {elapsed:.1f} s: {error}')
      return
    if value['files'] is not None:  # from the node's own disk
      run.workdir.mkdir(parents=True, exist_ok=True)
      for name, content in value['files'].items():
        files.write_atomic(run.workdir / name, content)
    done, line = judge_ended(run, value['returncode'], elapsed)
    (outcome.done if done else outcome.failed).append(run)
    say(run, line)

  def collect(g):
    """Reads a finished task: its value, or why it failed."""
    try:
      return ray.get(g.ref), None
    except ray.exceptions.TaskCancelledError:
      return None, 'cancelled'
    except ray.exceptions.RayTaskError as e:
      cause = e.cause if isinstance(e.cause, BaseException) else e
      if isinstance(cause, ModuleNotFoundError):
        return None, (f'{cause} on its node: every node needs this '
                      f'repository at {REPO_ROOT}, with its packages')
      return None, f'{type(cause).__name__}: {cause}'
    except ray.exceptions.LocalRayletDiedError as e:
      lost.append(str(e).splitlines()[0])
      return None, f'Ray is gone on this machine: {lost[-1]}'
    except ray.exceptions.RayError as e:  # the worker or node died, retried
      return None, (f'{type(e).__name__} after {options.max_retries} '
                    f'retries: {str(e).splitlines()[0]}')

  def stop(gs) -> None:
    """Cancels the tasks ``gs`` and waits until they have ended (their
    process groups killed), at most `CANCEL_WAIT_S`."""
    for g in gs:
      going.remove(g)
      ray.cancel(g.ref)
    # ray.wait does not report a cancelled task; ray.get raises once it ends.
    end = time.monotonic() + CANCEL_WAIT_S
    for g in gs:
      while True:
        try:
          ray.get(g.ref, timeout=max(0.0, min(0.5, end - time.monotonic())))
        except ray.exceptions.GetTimeoutError:
          if time.monotonic() < end:
            continue
        except Exception:  # pylint: disable=broad-except
          pass  # TaskCancelledError, or the run ended otherwise meanwhile
        break
    for g in gs:
      outcome.stopped.append(g.run)
      outcome.seconds[g.run.index] = time.monotonic() - g.started

  def next_run():
    """The first pending run that is unfinished; finished ones met on the
    way are skipped."""
    while pending and not lost:
      run = pending.pop(0)
      if not workdir_lib.result_path(run.workdir).exists():
        return run
      outcome.skipped.append(run)
      say(run, 'skipped (finished)')
    return None

  def start(run):
    resuming = (root_on_node is None
                and workdir_lib.metrics_path(run.workdir).exists())
    if root_on_node is None:
      run.workdir.mkdir(parents=True, exist_ok=True)
      run_files.write_sweep_args(run.workdir, sweep_args(run, config_path))
    ref = remote.remote(_task(run, config_path, env, options, root_on_node,
                              root))
    going.append(_Going(run, ref, time.monotonic()))
    say(run, 'started' + (' (resuming)' if resuming else ''))

  def status():
    for g in going:
      if root_on_node is not None:
        say(g.run, f'running, {time.monotonic() - g.started:.0f} s')
        continue
      rows = workdir_lib.read_metrics(g.run.workdir)
      num_epochs = workdir_lib.read_config(g.run.workdir).get('num_epochs',
                                                               '?')
      epoch = (f'epoch {rows[-1]["epoch"]}/{num_epochs}, test '
               f'{100 * rows[-1]["test_accuracy"]:.1f}%' if rows
               else 'no epoch finished yet')
      say(g.run, f'{epoch}, {time.monotonic() - g.started:.0f} s')

  def finish_ready(timeout):
    if not going:
      return
    ready, _ = ray.wait([g.ref for g in going], num_returns=1,
                        timeout=max(timeout, 0.0))
    ready = set(ready)
    for g in [g for g in going if g.ref in ready]:
      value, error = collect(g)
      finish(g, value, error)
      tally()

  def stop_all(why):
    finish_ready(0.0)
    gs = list(going)
    stop(gs)
    for g in gs:
      say(g.run, f'stopped unfinished {why} after '
          f'{outcome.seconds[g.run.index]:.0f} s; dropped')

  next_status = time.monotonic() + (status_every_s or float('inf'))
  try:
    while True:
      while len(going) < cap and (run := next_run()) is not None:
        start(run)
      if not going:
        break  # all done
      # Until a run ends, the next status line, or 1 s.
      finish_ready(min(next_status, time.monotonic() + 1.0)
                   - time.monotonic())
      if time.monotonic() >= next_status:
        status()
        next_status = time.monotonic() + status_every_s
  except KeyboardInterrupt:
    stop_all('by an interruption')
    outcome.not_started.extend(pending)
    return outcome._replace(interrupted=True)
  outcome.not_started.extend(pending)
  for run in pending:
    say(run, 'not started: Ray is gone on this machine; the same command '
        'continues the sweep')
  return outcome
