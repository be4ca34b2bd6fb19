"""What a sweep adds to a run's workdir, and the record it keeps of a run.

Beside the files of `experiments.workdir`::

  WORKDIR/
    sweep_args.json      the sweep's settings of the run (`sweeps.runner`)
    log.txt              the run's output when a sweep started it
"""

import pathlib
from typing import Optional

from experiments import files
from experiments import workdir as workdir_lib

# A sweep's record of the settings it ran with, to catch a root reused with
# different settings (its finished runs would otherwise be silently reused).
SWEEP_ARGS_FILE = 'sweep_args.json'
LOG_FILE = 'log.txt'
# A finished run's record: small, the evidence behind a table, and all that
# comes back from a time-boxed sweep (`sweeps.lease`); checkpoints and
# queues stay behind.
RECORD_FILES = (workdir_lib.CONFIG_FILE, workdir_lib.METRICS_FILE,
                workdir_lib.RESULT_FILE, SWEEP_ARGS_FILE)


def sweep_args_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / SWEEP_ARGS_FILE


def log_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / LOG_FILE


def read_sweep_args(workdir) -> Optional[dict]:
  """The settings a sweep recorded for the run; None where it recorded none."""
  path = sweep_args_path(workdir)
  return files.read_json(path) if path.exists() else None


def write_sweep_args(workdir, args: dict) -> None:
  files.write_json(sweep_args_path(workdir), args)
