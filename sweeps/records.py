"""The records archive: finished runs' records in one file, and their merge.

A finished run's record is the small part of its workdir that a table needs
(`sweeps.run_files.RECORD_FILES` and the tail of its log; never
checkpoints or queues). `pack_records` writes the records of some runs of a
sweep into one ``.tar.gz``, `read_records` checks and reads one, and `merge`
unpacks one into the sweep's root on another machine, refusing anything
that would mix settings or overwrite a different record.
"""

import io
import json
import pathlib
import sys
import tarfile
import time
from typing import Optional, Sequence

from experiments import files
from experiments import workdir as workdir_lib
from sweeps import grid
from sweeps import run_files
from sweeps import runner
from sweeps import sweep as sweep_lib

# The manifest inside every archive (the time-boxed runner's summary).
MANIFEST_FILE = 'lease.json'
# A run's log is packed only as its last bytes (the error, if any).
LOG_TAIL_BYTES = 4096
# The only names an archive may hold in a run's directory.
PACKED_FILES = run_files.RECORD_FILES + (run_files.LOG_FILE,)


def relative(run: grid.Run, root) -> str:
  """A run's workdir relative to the root, as the archive names it."""
  return run.workdir.relative_to(root).as_posix()


def log_tail(workdir, size: int = LOG_TAIL_BYTES) -> Optional[bytes]:
  """The last ``size`` bytes of a run's log; None where it has none."""
  path = run_files.log_path(workdir)
  if not path.is_file():
    return None
  data = path.read_bytes()
  if len(data) <= size:
    return data
  return (f'[... the first {len(data) - size} bytes of the log are not '
          'kept]\n').encode() + data[-size:]


def pack_records(path, root, runs: Sequence[grid.Run], manifest: dict
                 ) -> None:
  """Writes the records of finished runs into one ``.tar.gz``, atomically.

  The archive holds ``lease.json`` (``manifest``) and, for each run,
  ``<its workdir relative to root>/<file>`` for the files of
  `run_files.RECORD_FILES` it has and the tail of its log.
  """
  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))

  def write(file):
    with tarfile.open(fileobj=file, mode='w:gz') as tar:
      add(tar, MANIFEST_FILE, json.dumps(manifest, indent=2,
                                         sort_keys=True).encode())
      for run in runs:
        rel = relative(run, root)
        for name in run_files.RECORD_FILES:
          record = run.workdir / name
          if record.is_file():
            add(tar, f'{rel}/{name}', record.read_bytes())
        tail = log_tail(run.workdir)
        if tail is not None:
          add(tar, f'{rel}/{run_files.LOG_FILE}', tail)

  files.write_atomic(path, write)


def read_records(path) -> tuple[dict, dict[str, dict[str, bytes]]]:
  """Reads an archive of `pack_records`.

  Returns:
    ``(manifest, records)``: the archive's ``lease.json``, and for each run
    directory (relative to the root) its files by name.

  Raises:
    ValueError: the file is not such an archive, or holds a member that is
      not a regular file, lies outside a run directory
      ``METHOD/NOISE/seed_N``, or is not one of `PACKED_FILES`.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f'{path} is not a file')
  manifest, records = None, {}
  try:
    with tarfile.open(path, 'r:gz') as tar:
      for member in tar.getmembers():
        parts = pathlib.PurePosixPath(member.name).parts
        if not member.isfile() or member.name.startswith('/') or '..' in parts:
          raise ValueError(f'{path}: member {member.name!r} is not a record '
                           'file')
        data = tar.extractfile(member).read()
        if member.name == MANIFEST_FILE:
          manifest = json.loads(data)
        elif len(parts) == 4 and parts[-1] in PACKED_FILES:
          records.setdefault('/'.join(parts[:3]), {})[parts[-1]] = data
        else:
          raise ValueError(
              f'{path}: member {member.name!r} is not METHOD/NOISE/seed_N/FILE '
              f'with FILE one of {", ".join(PACKED_FILES)}')
  except (tarfile.TarError, OSError, EOFError) as e:
    raise ValueError(f'{path} is not a .tar.gz of run records: {e}') from None
  if manifest is None:
    raise ValueError(f'{path} has no {MANIFEST_FILE}: not made by '
                     '`sweeps.lease run`')
  return manifest, records


def merge(path, sweep: sweep_lib.Sweep, out=None) -> tuple[int, int]:
  """Unpacks an archive of `pack_records` into the sweep's root.

  Every record is checked before anything is written: it must be a finished
  run of the sweep (``result.json`` with `workdir.RESULT_KEYS`), recorded
  with the sweep's settings. A run already finished in the root with the
  same ``config.json``, ``metrics.jsonl`` and ``result.json`` is left alone;
  one with a different record, or an unfinished workdir of another config,
  is a conflict. ``result.json`` is written last, so a merge cut short
  leaves no run that looks finished without its record.

  Args:
    path: the archive.
    sweep: the sweep whose runs it holds.
    out: where the report lines go (default stdout).

  Returns:
    ``(merged, identical)``: counts of runs written and of runs left alone.

  Raises:
    ValueError: on any of the problems above; nothing is written then.
  """
  out = out or sys.stdout
  _, records = read_records(path)
  planned = {relative(r, sweep.root): r for r in sweep.runs()}
  problems, to_write, identical = [], [], 0
  for rel, contents in sorted(records.items()):
    run = planned.get(rel)
    if run is None:
      problems.append(f'{rel}: not a run of the spec')
      continue
    missing = [n for n in (workdir_lib.CONFIG_FILE, workdir_lib.METRICS_FILE,
                           workdir_lib.RESULT_FILE) if n not in contents]
    if missing:
      problems.append(f'{rel}: lacks {", ".join(missing)}')
      continue
    try:
      result = json.loads(contents[workdir_lib.RESULT_FILE])
      recorded = json.loads(contents.get(run_files.SWEEP_ARGS_FILE, b'null'))
      returned_config = json.loads(contents[workdir_lib.CONFIG_FILE])
    except json.JSONDecodeError as e:
      problems.append(f'{rel}: a record file is not valid JSON: {e}')
      continue
    try:
      workdir_lib.check_result(result, f'{rel}: {workdir_lib.RESULT_FILE}')
    except ValueError as e:
      problems.append(str(e))
      continue
    if runner.other_settings(recorded, run, sweep.config):
      problems.append(f'{rel}: run with other settings ({recorded}) than the '
                      f'spec ({runner.sweep_args(run, sweep.config)})')
      continue
    if workdir_lib.result_path(run.workdir).exists():
      differ = [n for n in run_files.RECORD_FILES
                if n in contents and (run.workdir / n).is_file()
                and (run.workdir / n).read_bytes() != contents[n]]
      if differ:
        problems.append(f'{rel}: finished in {sweep.root} with a different '
                        f'record ({", ".join(differ)} differ)')
      else:
        identical += 1
      continue
    local_config = workdir_lib.read_config(run.workdir)
    if local_config and workdir_lib.differing_keys(
        local_config, returned_config,
        ignore=workdir_lib.RESULT_NEUTRAL_KEYS):
      problems.append(f'{rel}: an unfinished run of another configuration is '
                      f'in {run.workdir}')
      continue
    to_write.append((run, contents))
  if problems:
    raise ValueError(f'{path}: nothing merged into {sweep.root}:\n  '
                     + '\n  '.join(problems))
  for run, contents in to_write:
    run.workdir.mkdir(parents=True, exist_ok=True)
    for name in sorted(contents, key=lambda n: n == workdir_lib.RESULT_FILE):
      files.write_atomic(run.workdir / name, contents[name])
    print(f'merged {run.name} into {run.workdir}', file=out, flush=True)
  return len(to_write), identical
