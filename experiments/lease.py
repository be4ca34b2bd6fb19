r"""Runs a sweep in slices on a lent machine and brings back the runs' records.

A GPU comes as a lent machine for a few minutes at a time, without network,
and only a few small files come back from it (``../shared/GPU.md``). A sweep
specification (`experiments.sweep`, ``experiments/sweeps/*.json``) is
therefore run in slices, one per lease::

  # there, on the lent machine (experiments/gpu_lease.sh does this):
  python -m experiments.lease run \
    --spec experiments/sweeps/cifar10_resnet18.json \
    --budget-s 500 --out $OUT --jobs 4 --run-seconds 450
  # here, with the files that came back:
  python -m experiments.lease merge OUT/records.tar.gz
  python -m experiments.sweep --spec experiments/sweeps/cifar10_resnet18.json \
    --aggregate-only

``run`` plans the spec's runs, skips those whose records are finished under
the spec's root, loads the data once (``prepare``, so that runs started
together do not each unpack and decode it), and starts the others in the
spec's order, ``--jobs`` at a time, each only if it is expected to end
before the budget runs out (`RunTimeEstimate`). Every 30 s the runs going
are projected to their end from their epoch times; if one would end after
the deadline, the last of them is stopped so that the others get its share
of the machine. A run still going at the deadline is stopped, with every
process it started, and dropped: nothing of a stopped run is packed, and a
later lease redoes it. Each finished run's record
(``workdir.RECORD_FILES`` and the tail of its log; never checkpoints or
queues) goes into ``OUT/records.tar.gz`` as soon as the run ends, with a
summary in ``OUT/lease.json`` and ``OUT/lease.md``, so what finished is in
OUT even if the lease is cut short.

``merge`` unpacks the records into the spec's root. A run already finished
there with the same record is left as it is (merging twice is harmless); a
finished run whose record differs is refused, as is a record that is not a
run of the spec or was run with other settings; nothing is written unless
every record can be merged.
"""

import argparse
import datetime
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from typing import Optional, Sequence

from experiments import grid
from experiments import sweep as sweep_lib
from experiments import tables
from experiments import workdir as workdir_lib

ARCHIVE_FILE = 'records.tar.gz'
SUMMARY_FILE = 'lease.json'  # also the manifest inside the archive
SUMMARY_MARKDOWN_FILE = 'lease.md'
# A run's log is packed only as its last bytes (the error, if any); the
# summary keeps less of a failed or stopped run's log.
LOG_TAIL_BYTES = 4096
FAILED_LOG_TAIL_BYTES = 1500
# The only names an archive may hold in a run's directory.
PACKED_FILES = workdir_lib.RECORD_FILES + (workdir_lib.LOG_FILE,)


# ----------------------------------------------------------------------------
# Planning.


class RunTimeEstimate:
  """How long the next run of a sweep is expected to take, in seconds.

  From the sweep's finished runs: the longest ``wall_time_s`` of them (the
  runs of one spec share their config file and overrides; OGC's own cost
  is a few per cent of a step), plus ``startup_s`` for what ``wall_time_s``
  leaves out (starting Python, loading the data). Without a finished run,
  ``run_seconds``. Runs that finish later are added with `add`.

  Args:
    wall_times: ``wall_time_s`` of the sweep's finished runs.
    run_seconds: the estimate while no run has finished, or None.
    startup_s: seconds a run takes beyond its recorded ``wall_time_s``.

  Raises:
    ValueError: no run has finished and ``run_seconds`` is None.

  Example:
    >>> estimate = RunTimeEstimate([], run_seconds=300.0, startup_s=30.0)
    >>> estimate()
    300.0
    >>> estimate.add(200.0)
    >>> estimate()
    230.0
  """

  def __init__(self, wall_times: Sequence[float], *,
               run_seconds: Optional[float], startup_s: float):
    if not wall_times and run_seconds is None:
      raise ValueError(
          'no run of the spec has finished, so nothing tells how long a run '
          'takes: give --run-seconds')
    self.wall_times = list(wall_times)
    self.run_seconds = run_seconds
    self.startup_s = startup_s

  def __call__(self) -> float:
    if self.wall_times:
      return max(self.wall_times) + self.startup_s
    return float(self.run_seconds)

  def add(self, wall_time_s: float) -> None:
    self.wall_times.append(float(wall_time_s))

  @property
  def source(self) -> str:
    return ('the longest finished run + start-up' if self.wall_times
            else '--run-seconds')


def run_config(config_path: str, overrides: dict):
  """A run's config as ``experiments.train`` builds it from its flags."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = (['lease', f'--config={config_path}']
          + [f'--config.{k}={v}' for k, v in overrides.items()])
  flag_values = flags.FlagValues()
  # config_flags defines a flag per override it finds in `sys_argv`.
  holder = config_flags.DEFINE_config_file('config', flag_values=flag_values,
                                           sys_argv=argv)
  flag_values(argv)
  return holder.value


def prepare(sweep: sweep_lib.Sweep, out=None) -> None:
  """Loads the data of the sweep's first unfinished run, filling the caches.

  The runs of a spec share their data; loading it once before they start
  unpacks and decodes it once (CIFAR-10's JPEG copy: about 20 s) instead of
  in every run at the same time. It also finds a bad config before any run
  starts.
  """
  out = out or sys.stdout
  pending = [r for r in sweep.runs()
             if not workdir_lib.result_path(r.workdir).exists()]
  if not pending:
    print('prepare: every run has finished', file=out, flush=True)
    return
  from experiments import train  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  config = run_config(sweep.config, pending[0].overrides)
  data = train.load_data(config)
  print(f'prepare: {config.dataset}, {len(data.images)} training images '
        f'{data.images.shape[1:]}, realised noise {data.noise.noise_rate:.4f} '
        f'({pending[0].name}), in {time.monotonic() - start:.1f} s',
        file=out, flush=True)


# ----------------------------------------------------------------------------
# Packing and merging.


def _relative(run: grid.Run, root) -> str:
  return run.workdir.relative_to(root).as_posix()


def _log_tail(workdir, size: int = LOG_TAIL_BYTES) -> Optional[bytes]:
  """The last ``size`` bytes of a run's log; None where it has none."""
  path = workdir_lib.log_path(workdir)
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
  `workdir.RECORD_FILES` it has and the tail of its log.
  """
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + '.tmp')

  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))

  with tarfile.open(tmp, 'w:gz') as tar:
    add(tar, SUMMARY_FILE, json.dumps(manifest, indent=2,
                                      sort_keys=True).encode())
    for run in runs:
      rel = _relative(run, root)
      for name in workdir_lib.RECORD_FILES:
        file = run.workdir / name
        if file.is_file():
          add(tar, f'{rel}/{name}', file.read_bytes())
      tail = _log_tail(run.workdir)
      if tail is not None:
        add(tar, f'{rel}/{workdir_lib.LOG_FILE}', tail)
  os.replace(tmp, path)


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
        if member.name == SUMMARY_FILE:
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
    raise ValueError(f'{path} has no {SUMMARY_FILE}: not made by '
                     '`experiments.lease run`')
  return manifest, records


def _write_bytes(path: pathlib.Path, data: bytes) -> None:
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_bytes(data)
  os.replace(tmp, path)


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
  planned = {_relative(r, sweep.root): r for r in sweep.runs()}
  config = sweep_lib.config_for_record(sweep.config)
  problems, to_write, identical = [], [], 0
  for rel, files in sorted(records.items()):
    run = planned.get(rel)
    if run is None:
      problems.append(f'{rel}: not a run of the spec')
      continue
    missing = [n for n in (workdir_lib.CONFIG_FILE, workdir_lib.METRICS_FILE,
                           workdir_lib.RESULT_FILE) if n not in files]
    if missing:
      problems.append(f'{rel}: lacks {", ".join(missing)}')
      continue
    try:
      result = json.loads(files[workdir_lib.RESULT_FILE])
      recorded = json.loads(files.get(workdir_lib.SWEEP_ARGS_FILE, b'null'))
      returned_config = json.loads(files[workdir_lib.CONFIG_FILE])
    except json.JSONDecodeError as e:
      problems.append(f'{rel}: a record file is not valid JSON: {e}')
      continue
    lacking = [k for k in workdir_lib.RESULT_KEYS if k not in result]
    if lacking:
      problems.append(f'{rel}: {workdir_lib.RESULT_FILE} lacks {lacking}')
      continue
    current = {'config': config, 'overrides': run.overrides}
    if recorded is not None and workdir_lib.differing_keys(recorded, current):
      problems.append(f'{rel}: run with other settings ({recorded}) than the '
                      f'spec ({current})')
      continue
    if workdir_lib.result_path(run.workdir).exists():
      differ = [n for n in workdir_lib.RECORD_FILES
                if n in files and (run.workdir / n).is_file()
                and (run.workdir / n).read_bytes() != files[n]]
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
    to_write.append((run, files))
  if problems:
    raise ValueError(f'{path}: nothing merged into {sweep.root}:\n  '
                     + '\n  '.join(problems))
  for run, files in to_write:
    run.workdir.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == workdir_lib.RESULT_FILE):
      _write_bytes(run.workdir / name, files[name])
    print(f'merged {run.name} into {run.workdir}', file=out, flush=True)
  return len(to_write), identical


# ----------------------------------------------------------------------------
# A lease.


def _device() -> str:
  """The accelerator in words (``nvidia-smi -L``), or the CPU."""
  if shutil.which('nvidia-smi'):
    try:
      return subprocess.run(['nvidia-smi', '-L'], capture_output=True,
                            text=True, timeout=20, check=False
                            ).stdout.strip() or 'nvidia-smi printed nothing'
    except subprocess.TimeoutExpired:
      return 'nvidia-smi did not answer in 20 s'
  return f'no GPU found; CPU, {os.cpu_count()} cores'


def _summary_markdown(summary: dict) -> str:
  lines = [f'# Lease of {summary["spec"]}', '',
           f'{summary["started"]}, {summary["device"]}; budget '
           f'{summary["budget_s"]:.0f} s, {summary["jobs"]} at a time, '
           f'{summary["elapsed_s"]:.0f} s used. {summary["note"]}', '',
           '| run | status | seconds | final test accuracy |',
           '| --- | --- | ---: | ---: |']
  for r in summary['runs']:
    if r['status'] == 'skipped':
      continue
    final = r.get('final_test_accuracy')
    lines.append(
        f'| {r["name"]} | {r["status"]} | '
        + (f'{r["seconds"]:.0f}' if r.get('seconds') is not None else '')
        + ' | ' + (f'{100 * final:.1f}%' if final is not None else '') + ' |')
  lines.append('')
  lines.append(f'{summary["counts"]["skipped"]} runs had finished before.')
  return '\n'.join(lines) + '\n'


def run_lease(sweep: sweep_lib.Sweep, spec_path, *, budget_s: float,
              out_dir, jobs: int, run_seconds: Optional[float],
              startup_s: float, reserve_s: float, do_prepare: bool,
              status_every_s: Optional[float],
              stop_late_every_s: Optional[float], out=None) -> int:
  """Runs what fits of a sweep in ``budget_s`` seconds; see the module doc.

  Returns:
    The exit status: 0, or 1 if a run or the preparation failed.
  """
  out = out or sys.stdout
  began = time.monotonic()
  deadline = began + budget_s - reserve_s
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  runs = sweep.runs()
  finished = tables.collect_results(sweep.root, sweep.methods, sweep.noises,
                                    sweep.seeds)
  estimate = RunTimeEstimate([r.wall_time_s for r in finished],
                             run_seconds=run_seconds, startup_s=startup_s)
  summary = {
      'spec': sweep_lib.repo_relative(spec_path),
      'root': sweep_lib.repo_relative(sweep.root),
      'started': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'device': _device(), 'budget_s': budget_s, 'jobs': jobs,
      'elapsed_s': 0.0, 'note': '', 'runs': [], 'counts': {},
  }
  print(f'lease of {summary["spec"]} on {summary["device"]}: {len(runs)} runs, '
        f'{len(finished)} finished before; budget {budget_s:.0f} s (runs end '
        f'by {budget_s - reserve_s:.0f} s), {jobs} at a time, a run expected '
        f'to take {estimate():.0f} s ({estimate.source})', file=out,
        flush=True)
  finished_before = {r.workdir for r in finished}
  done, seconds = [], {}
  outcome = None

  def write_outputs(note, final=False):
    """Packs the runs done so far and writes the summary, both atomically."""
    status = {run.index: 'done' for run in done}
    if outcome is not None:
      for name, group in (('failed', outcome.failed),
                          ('stopped', outcome.stopped),
                          ('not started', outcome.not_started)):
        status.update((run.index, name) for run in group)
    rows = []
    for run in runs:
      row = {'name': run.name, 'workdir': _relative(run, sweep.root),
             'status': status.get(run.index, (
                 'skipped' if run.workdir in finished_before
                 else 'not started' if final else 'pending')),
             'seconds': seconds.get(run.index)}
      if row['status'] == 'done':
        result = workdir_lib.read_result(run.workdir)
        row.update(final_test_accuracy=result['final_test_accuracy'],
                   wall_time_s=result['wall_time_s'])
      elif row['status'] in ('failed', 'stopped'):  # why, from over there
        tail = _log_tail(run.workdir, FAILED_LOG_TAIL_BYTES)
        row['log_tail'] = tail.decode(errors='replace') if tail else None
      rows.append(row)
    summary.update(runs=rows, note=note, elapsed_s=time.monotonic() - began,
                   counts={s: sum(r['status'] == s for r in rows) for s in (
                       'done', 'failed', 'stopped', 'not started', 'pending',
                       'skipped')})
    pack_records(out_dir / ARCHIVE_FILE, sweep.root, done, summary)
    workdir_lib.write_json(out_dir / SUMMARY_FILE, summary)
    (out_dir / SUMMARY_MARKDOWN_FILE).write_text(_summary_markdown(summary))

  def on_done(run, elapsed):
    done.append(run)
    seconds[run.index] = elapsed
    estimate.add(workdir_lib.read_result(run.workdir)['wall_time_s'])
    write_outputs('In progress.')

  write_outputs('In progress.')
  env = sweep_lib.child_env(sweep.root, jobs)
  try:
    if do_prepare and len(finished) < len(runs):
      left = deadline - time.monotonic()
      print(f'preparing the data (at most {left:.0f} s)', file=out, flush=True)
      # In its own process, on the CPU: the runs' parent holds no GPU memory.
      try:
        prepared = subprocess.run(
            [sys.executable, '-m', 'experiments.lease', 'prepare', '--spec',
             str(pathlib.Path(spec_path).resolve())],
            cwd=sweep_lib.REPO_ROOT, check=False,
            env=dict(env, JAX_PLATFORMS='cpu'), timeout=max(left, 1))
        prepare_failed = prepared.returncode != 0
      except subprocess.TimeoutExpired:
        prepare_failed = True
      if prepare_failed:
        write_outputs('The data could not be prepared; no run started.',
                      final=True)
        print('lease: preparing the data failed; no run started', file=out,
              flush=True)
        return 1
    outcome = sweep_lib.execute(
        runs, sweep.config, jobs=jobs, env=env, out=out, deadline=deadline,
        estimate=lambda run: estimate(), on_done=on_done,
        status_every_s=status_every_s, stop_late_every_s=stop_late_every_s)
  except KeyboardInterrupt:  # while preparing: no run started
    outcome = None
  seconds.update(outcome.seconds if outcome else {})
  if outcome is None or outcome.interrupted:
    write_outputs('Interrupted: the runs going were stopped and dropped.',
                  final=True)
    print(f'lease interrupted; {len(done)} finished runs are in '
          f'{out_dir / ARCHIVE_FILE}', file=out, flush=True)
    return 130
  write_outputs('Finished.', final=True)
  counts = summary['counts']
  print(f'lease: {counts["done"]} done, {counts["stopped"]} stopped at the '
        f'deadline, {counts["not started"]} not started (would not fit), '
        f'{counts["failed"]} failed, {counts["skipped"]} finished before; '
        f'{time.monotonic() - began:.0f} s. Records: {out_dir / ARCHIVE_FILE}',
        file=out, flush=True)
  return 1 if outcome.failed else 0


# ----------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m experiments.lease',
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split('\n\n', 1)[1])
  commands = parser.add_subparsers(dest='command', required=True)
  run = commands.add_parser(
      'run', help='run the unfinished runs of a spec that fit in a budget')
  run.add_argument('--spec', required=True, help='sweep specification file')
  run.add_argument('--budget-s', type=float, required=True,
                   help='wall-clock seconds this command may take')
  run.add_argument('--out', required=True,
                   help='folder for records.tar.gz, lease.json and lease.md')
  run.add_argument('--jobs', type=int, default=1,
                   help='runs at a time (default 1)')
  run.add_argument('--run-seconds', type=float, default=None,
                   help='seconds a run takes, while no run of the spec has '
                   'finished')
  run.add_argument('--startup-s', type=float, default=30.0,
                   help='seconds a run takes beyond its recorded wall_time_s '
                   '(default 30)')
  run.add_argument('--reserve-s', type=float, default=15.0,
                   help='seconds of the budget kept for stopping runs and '
                   'packing (default 15)')
  run.add_argument('--status-every-s', type=float, default=60.0,
                   help='seconds between progress lines of running runs '
                   '(default 60; 0: none)')
  run.add_argument('--stop-late-every-s', type=float, default=30.0,
                   help='how often to check whether the runs going would end '
                   'after the deadline; if so the last of them is stopped so '
                   'that the others finish (default 30; 0: never)')
  run.add_argument('--no-prepare', dest='prepare', action='store_false',
                   help='do not load the data once before the runs start')
  merge_parser = commands.add_parser(
      'merge', help='unpack returned records into the spec\'s root')
  merge_parser.add_argument('archive', help='records.tar.gz of a lease')
  merge_parser.add_argument('--spec', default=None,
                            help='sweep specification file (default: the '
                            'one the archive names)')
  prepare_parser = commands.add_parser(
      'prepare', help='load the data of a spec\'s runs once, filling caches')
  prepare_parser.add_argument('--spec', required=True)
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; returns the exit status."""
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    spec_path = args.spec
    if args.command == 'merge' and spec_path is None:
      manifest, _ = read_records(args.archive)
      spec_path = sweep_lib.REPO_ROOT / manifest['spec']
    sweep = sweep_lib.load_spec(spec_path)
    if args.command == 'run':
      for name in ('budget_s', 'run_seconds', 'startup_s', 'reserve_s',
                   'status_every_s', 'stop_late_every_s'):
        value = getattr(args, name)
        if value is not None and not value >= 0:
          raise ValueError(f'--{name.replace("_", "-")} must be >= 0, not '
                           f'{value}')
      if args.jobs < 1:
        raise ValueError(f'--jobs must be at least 1, not {args.jobs}')
      if args.budget_s <= args.reserve_s:
        raise ValueError(f'--budget-s {args.budget_s:g} leaves nothing after '
                         f'--reserve-s {args.reserve_s:g}')
      sweep_lib.check_recorded_settings(sweep.runs(), sweep.config)
      sweep_lib.check_sweep_config(sweep)
      RunTimeEstimate([r.wall_time_s for r in tables.collect_results(
          sweep.root, sweep.methods, sweep.noises, sweep.seeds)],
                      run_seconds=args.run_seconds, startup_s=args.startup_s)
  except ValueError as e:
    parser.error(str(e))

  if args.command == 'prepare':
    prepare(sweep)
    return 0
  if args.command == 'merge':
    try:
      merged, identical = merge(args.archive, sweep)
    except ValueError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    print(f'{merged} runs merged into {sweep_lib.repo_relative(sweep.root)}, '
          f'{identical} already there with the same record. The tables: '
          f'{sweep.command} --aggregate-only', flush=True)
    return 0

  # A SIGTERM (the `timeout` of a lease script) stops the runs as Ctrl-C does.
  def terminate(signum, frame):
    del signum, frame
    raise KeyboardInterrupt
  previous = signal.signal(signal.SIGTERM, terminate)
  try:
    return run_lease(
        sweep, spec_path, budget_s=args.budget_s, out_dir=args.out,
        jobs=args.jobs, run_seconds=args.run_seconds,
        startup_s=args.startup_s, reserve_s=args.reserve_s,
        do_prepare=args.prepare,
        status_every_s=args.status_every_s or None,
        stop_late_every_s=args.stop_late_every_s or None)
  finally:
    signal.signal(signal.SIGTERM, previous)


if __name__ == '__main__':
  sys.stdout.reconfigure(line_buffering=True)
  sys.exit(main())
