"""What runs on the node a sweep's Ray task lands on: one training run.

`run_training` is the body of the task (`sweeps.runner` submits it): it starts
the run's command, ``python -m experiments.train``, from the repository's root
in a process group of its own, appending its output to ``WORKDIR/log.txt``,
and waits for it. The training process dies with the task's worker (a node
that is lost takes its runs with it, and Ray retries them elsewhere, where
they resume from their last checkpoint); a cancelled task (a deadline, a
Ctrl-C) kills the process group first.

Where there is no filesystem that every node sees, the run's workdir is on
the node's own disk and the task returns its record files
(`RETURNED_FILES`, never checkpoints) for the driver to write.

Only the standard library and `experiments.workdir` are imported here: a
worker imports this module from the repository's checkout on its node.
"""

import ctypes
import os
import pathlib
import signal
import subprocess
from typing import NamedTuple, Optional

from experiments import workdir as workdir_lib
from sweeps import run_files

# The environment variables through which Ray hands a task its accelerators;
# a run that asks for GPUs (or TPUs) keeps the node's values of them.
ACCELERATOR_VARIABLES = ('CUDA_VISIBLE_DEVICES', 'ROCR_VISIBLE_DEVICES',
                         'HIP_VISIBLE_DEVICES', 'TPU_VISIBLE_CHIPS')
# What a run on a node's own disk sends back: its records, its log and its
# list of wrong labels (`sweeps.compare_lists` reads it); never checkpoints.
RETURNED_FILES = run_files.RECORD_FILES + (
    run_files.LOG_FILE, workdir_lib.LABEL_ISSUES_FILE,
    workdir_lib.LABEL_ISSUES_SHEET, workdir_lib.HELDOUT_FILE)
_PR_SET_PDEATHSIG = 1


class Task(NamedTuple):
  """One run as the driver hands it to a node.

  Attributes:
    command: the training command line.
    cwd: the repository's root, where the command runs.
    workdir: the run's workdir on the node.
    sweep_args: what the sweep records of the run (``sweep_args.json``).
    header: the first line of the log for this start (``$ python -m ...``).
    env: the whole environment of the command (``env_is_whole``), or the
      variables to set on top of the node's own environment.
    env_is_whole: whether ``env`` replaces the node's environment.
    accelerators: whether the run asked Ray for accelerators.
    return_files: whether to return `RETURNED_FILES` (a workdir on the
      node's own disk).
  """
  command: list
  cwd: str
  workdir: str
  sweep_args: dict
  header: str
  env: dict
  env_is_whole: bool
  accelerators: bool
  return_files: bool


def _die_with_parent() -> None:
  """In the child before exec: SIGKILL when the task's worker dies (Linux)."""
  try:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG,
                                            int(signal.SIGKILL))
  except (AttributeError, OSError):  # not Linux: the run outlives its worker
    pass


def kill_process_group(proc: subprocess.Popen) -> None:
  """Ends a run and every process it started, at once (SIGKILL).

  At once, because Ray ends a cancelled task's worker soon after: a run
  writes its checkpoints and records atomically, so that nothing it leaves
  is half written, and the same command resumes it from its last checkpoint.
  """
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:  # the whole group has exited
    pass
  proc.wait()


def _wait(proc: subprocess.Popen) -> int:
  """``proc.wait()`` in short slices: Ray cancels a task by raising
  KeyboardInterrupt in the thread that runs it, which a thread blocked in one
  long wait would not see."""
  while True:
    try:
      return proc.wait(timeout=0.25)
    except subprocess.TimeoutExpired:
      pass


def _node_id() -> str:
  try:
    import ray  # pylint: disable=import-outside-toplevel
    return ray.get_runtime_context().get_node_id()[:12]
  except Exception:  # pylint: disable=broad-except
    return '?'


def _environment(task: Task) -> dict:
  env = dict(task.env) if task.env_is_whole else {**os.environ, **task.env}
  if task.accelerators:  # the devices Ray gave this task
    env.update({name: os.environ[name] for name in ACCELERATOR_VARIABLES
                if name in os.environ})
  return env


def run_training(task: Task) -> dict:
  """Runs one training to its end on this node.

  Returns:
    ``returncode`` (the command's exit status), ``node`` (the Ray node's id),
    ``resumed`` (whether the workdir held metrics at the start) and, with
    ``task.return_files``, ``files``: `RETURNED_FILES` that exist, by name,
    as bytes.

  Raises:
    KeyboardInterrupt: the task was cancelled; the run's process group is
      killed first.
  """
  workdir = pathlib.Path(task.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  run_files.write_sweep_args(workdir, task.sweep_args)
  resumed = workdir_lib.metrics_path(workdir).exists()
  node = _node_id()
  with open(run_files.log_path(workdir), 'a') as log:
    log.write(f'{task.header}\n# on Ray node {node}'
              f'{" (resuming)" if resumed else ""}\n')
    log.flush()
    proc = subprocess.Popen(  # pylint: disable=subprocess-popen-preexec-fn
        task.command, cwd=task.cwd, env=_environment(task), stdout=log,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=_die_with_parent)
    try:
      returncode = _wait(proc)
    except BaseException:  # cancelled (a KeyboardInterrupt), or the worker ends
      kill_process_group(proc)
      raise
  files: Optional[dict] = None
  if task.return_files:
    files = {name: (workdir / name).read_bytes() for name in RETURNED_FILES
             if (workdir / name).is_file()}
  return {'returncode': returncode, 'node': node, 'resumed': resumed,
          'files': files}
