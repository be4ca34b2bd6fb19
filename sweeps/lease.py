r"""Runs a sweep within a wall-clock budget and brings back the runs' records.

For a machine held for a fixed time without network (a batch-queue slot, a
preemptible instance), from which only a few small files come back, a sweep
specification (`sweeps.sweep`, ``sweeps/specs/*.json``) is run in
slices, one per slot::

  # there (sweeps/timeboxed_sweep.sh does this, with its limits):
  python -m sweeps.lease run \
    --spec sweeps/specs/cifar10_resnet18.json \
    --budget-s 500 --out $OUT --jobs 4 --run-seconds 450
  # here, with the files that came back:
  python -m sweeps.lease merge OUT/records.tar.gz
  python -m sweeps --spec sweeps/specs/cifar10_resnet18.json \
    --aggregate-only

``run`` plans the spec's runs in a working folder of its own, ``--work``
(default ``runs/lease/<spec name>``; never the committed records), skips
those finished there or under the spec's root (the committed records), loads
the data once (``prepare``, so that runs started
together do not each unpack and decode it), and starts the others in the
spec's order, ``--jobs`` at a time, each only if it is expected to end
before the budget runs out (`RunTimeEstimate`). Every 30 s the runs going
are projected to their end from their epoch times; if one would end after
the deadline, the last of them is stopped so that the others get its share
of the machine. A run still going at the deadline is stopped, with every
process it started, and dropped: nothing of a stopped run is packed, and a
later slot redoes it. Each finished run's record
(``run_files.RECORD_FILES`` and the tail of its log; never checkpoints or
queues) goes into ``OUT/records.tar.gz`` as soon as the run ends, with a
summary in ``OUT/lease.json`` and ``OUT/lease.md``, so what finished is in
OUT even if the slot is cut short.

The runs are started, watched and stopped as processes of this machine by
`sweeps.processes` under a deadline policy (`Deadline`), not on Ray: a
machine held for a time without network may lack Ray and cannot fetch it,
and one machine with a deadline needs no cluster. The archive and its merge
are `sweeps.records`'.

``merge`` unpacks the records into the spec's root, the committed records
(``results/records/...``): that is what it is for. A run already finished
there with the same record is left as it is (merging twice is harmless); a
finished run whose record differs is refused, as is a record that is not a
run of the spec or was run with other settings; nothing is written unless
every record can be merged.
"""

import argparse
import datetime
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence

from experiments import config_lib
from experiments import environment
from experiments import files
from experiments import input_pipeline
from experiments import workdir as workdir_lib
import sweeps
from sweeps import grid
from sweeps import processes
from sweeps import records
from sweeps import runner
from sweeps import sweep as sweep_lib
from sweeps import tables

# Where a lease runs unless told otherwise: ROOT/<spec name>.
DEFAULT_WORK = runner.REPO_ROOT / 'runs' / 'lease'
ARCHIVE_FILE = 'records.tar.gz'
SUMMARY_FILE = records.MANIFEST_FILE  # also the manifest inside the archive
SUMMARY_MARKDOWN_FILE = 'lease.md'
# The summary keeps the last bytes of a failed or stopped run's log.
FAILED_LOG_TAIL_BYTES = 1500


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


def default_work(spec_path) -> pathlib.Path:
  """Where a spec's lease runs unless told otherwise: `DEFAULT_WORK`/NAME."""
  return DEFAULT_WORK / pathlib.Path(spec_path).stem


def finished_in(sweep: sweep_lib.Sweep, run: grid.Run) -> bool:
  """Whether ``run`` (of a sweep elsewhere) has finished in ``sweep.root``."""
  return (workdir_lib.result_path(run.workdir).exists()
          or workdir_lib.result_path(grid.run_dir(
              sweep.root, run.method, run.noise, run.seed)).exists())


def prepare(sweep: sweep_lib.Sweep, work: sweep_lib.Sweep, out=None) -> None:
  """Loads the data of the first run to do, filling the caches.

  The runs of a spec share their data; loading it once before they start
  unpacks and decodes it once (CIFAR-10's JPEG copy: about 20 s) instead of
  in every run at the same time. It also finds a bad config before any run
  starts.

  Args:
    sweep: the spec's sweep, its committed records in its root.
    work: the same sweep in the lease's working folder.
    out: where the line goes (default stdout).
  """
  out = out or sys.stdout
  pending = [r for r in work.runs() if not finished_in(sweep, r)]
  if not pending:
    print('prepare: every run has finished', file=out, flush=True)
    return
  start = time.monotonic()
  config = config_lib.load(sweep.config, pending[0].overrides)
  data = input_pipeline.load_data(config)
  print(f'prepare: {config.dataset}, {len(data.images)} training images '
        f'{data.images.shape[1:]}, realised noise {data.noise.noise_rate:.4f} '
        f'({pending[0].name}), in {time.monotonic() - start:.1f} s',
        file=out, flush=True)


# ----------------------------------------------------------------------------
# Packing and merging.


# ----------------------------------------------------------------------------
# The deadline policy.


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
    ...   files.write_json(workdir_lib.config_path(workdir),
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


class Deadline(processes.Policy):
  """The lease's `processes.Policy`: runs start only if they fit before it.

  A run starts only if `estimate` seconds from now fall before the
  deadline; every ``check_every_s`` the runs going are projected to their
  end (`projected_seconds_left`), and those that would end after it are
  named, so that the runner stops one and the others finish. A run
  finished in ``committed`` (the spec's records) is finished.
  """

  def __init__(self, deadline: float, estimate: RunTimeEstimate,
               check_every_s: Optional[float], on_done,
               committed: Optional[sweep_lib.Sweep] = None):
    self.deadline = deadline
    self.estimate = estimate
    self.check_every_s = check_every_s
    self._on_done = on_done
    self._committed = committed

  def finished(self, run):
    if self._committed is None:
      return super().finished(run)
    return finished_in(self._committed, run)

  def fits(self, run):
    return time.monotonic() + self.estimate() <= self.deadline

  def start_note(self, run):
    return f', expected to take {self.estimate():.0f} s'

  def not_started_note(self, run):
    return f'not started: it needs about {self.estimate():.0f} s'

  def late(self, runs):
    now, late = time.monotonic(), []
    for run in runs:
      left = projected_seconds_left(run.workdir)
      if left is not None and now + left > self.deadline:
        late.append(f'{run.name} by {now + left - self.deadline:.0f} s')
    return late

  def on_done(self, run, seconds):
    self._on_done(run, seconds)


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


def _finished_results(sweep, work) -> list[tables.RunResult]:
  """The finished runs of the spec, in its records or the working folder."""
  finished = {r.workdir.relative_to(work.root): r for r in
              tables.collect_results(work.root, work.methods, work.noises,
                                     work.seeds)}
  for r in tables.collect_results(sweep.root, sweep.methods, sweep.noises,
                                  sweep.seeds):
    finished.setdefault(r.workdir.relative_to(sweep.root), r)
  return list(finished.values())


def run_lease(sweep: sweep_lib.Sweep, spec_path, *, work_root,
              budget_s: float, out_dir, jobs: int,
              run_seconds: Optional[float], startup_s: float,
              reserve_s: float, do_prepare: bool,
              status_every_s: Optional[float],
              stop_late_every_s: Optional[float], out=None) -> int:
  """Runs what fits of a sweep in ``budget_s`` seconds; see the module doc.

  Args:
    sweep: the spec's sweep; runs finished in its root are not run again.
    work_root: the folder of the runs.

  Returns:
    The exit status: 0, or 1 if a run or the preparation failed.
  """
  out = out or sys.stdout
  began = time.monotonic()
  deadline = began + budget_s - reserve_s
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  work = sweep.elsewhere(work_root)
  runs = work.runs()
  finished = _finished_results(sweep, work)
  estimate = RunTimeEstimate([r.wall_time_s for r in finished],
                             run_seconds=run_seconds, startup_s=startup_s)
  summary = {
      'spec': runner.repo_relative(spec_path),
      'root': runner.repo_relative(sweep.root),
      'work': runner.repo_relative(work.root),
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
  finished_before = {run.index for run in runs if finished_in(sweep, run)}
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
      row = {'name': run.name, 'workdir': records.relative(run, work.root),
             'status': status.get(run.index, (
                 'skipped' if run.index in finished_before
                 else 'not started' if final else 'pending')),
             'seconds': seconds.get(run.index)}
      if row['status'] == 'done':
        result = workdir_lib.read_result(run.workdir)
        row.update(final_test_accuracy=result['final_test_accuracy'],
                   wall_time_s=result['wall_time_s'])
      elif row['status'] in ('failed', 'stopped'):  # why, from over there
        tail = records.log_tail(run.workdir, FAILED_LOG_TAIL_BYTES)
        row['log_tail'] = tail.decode(errors='replace') if tail else None
      rows.append(row)
    summary.update(runs=rows, note=note, elapsed_s=time.monotonic() - began,
                   counts={s: sum(r['status'] == s for r in rows) for s in (
                       'done', 'failed', 'stopped', 'not started', 'pending',
                       'skipped')})
    records.pack_records(out_dir / ARCHIVE_FILE, work.root, done, summary)
    files.write_json(out_dir / SUMMARY_FILE, summary)
    files.write_atomic(out_dir / SUMMARY_MARKDOWN_FILE,
                             _summary_markdown(summary))

  def on_done(run, elapsed):
    done.append(run)
    seconds[run.index] = elapsed
    estimate.add(workdir_lib.read_result(run.workdir)['wall_time_s'])
    write_outputs('In progress.')

  write_outputs('In progress.')
  env = environment.child_env(work.root, jobs)
  try:
    if do_prepare and len(finished) < len(runs):
      left = deadline - time.monotonic()
      print(f'preparing the data (at most {left:.0f} s)', file=out, flush=True)
      # In its own process, on the CPU: the runs' parent holds no GPU memory.
      try:
        prepared = subprocess.run(
            [sys.executable, '-m', 'sweeps.lease', 'prepare', '--spec',
             str(pathlib.Path(spec_path).resolve()), '--work',
             str(pathlib.Path(work.root).resolve())],
            cwd=runner.REPO_ROOT, check=False,
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
    outcome = processes.execute(
        runs, sweep.config, jobs=jobs, env=env, out=out,
        status_every_s=status_every_s,
        policy=Deadline(deadline, estimate, stop_late_every_s, on_done,
                        committed=sweep))
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
  parser = sweeps.parser_of_module('sweeps.lease', __doc__)
  commands = parser.add_subparsers(dest='command', required=True)
  run = commands.add_parser(
      'run', help='run the unfinished runs of a spec that fit in a budget')
  run.add_argument('--spec', required=True, help='sweep specification file')
  run.add_argument('--work', default=None,
                   help='folder of the runs (default runs/lease/<spec name>)')
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
  prepare_parser.add_argument('--work', default=None,
                              help='folder of the runs (default '
                              'runs/lease/<spec name>)')
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; returns the exit status."""
  args = build_parser().parse_args(argv)
  with config_lib.one_line_errors():
    spec_path = args.spec
    if args.command == 'merge' and spec_path is None:
      manifest, _ = records.read_records(args.archive)
      spec_path = runner.REPO_ROOT / manifest['spec']
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
    if args.command != 'merge':
      work = sweep.elsewhere(args.work or default_work(spec_path))
    if args.command == 'run':
      sweep_lib.check_recorded_settings(work.runs(), sweep.config)
      sweep_lib.check_sweep_config(sweep)
      sweep_lib.validate_runs(sweep)
      RunTimeEstimate([r.wall_time_s for r in _finished_results(sweep, work)],
                      run_seconds=args.run_seconds, startup_s=args.startup_s)

  if args.command == 'prepare':
    prepare(sweep, work)
    return 0
  if args.command == 'merge':
    try:
      merged, identical = records.merge(args.archive, sweep)
    except ValueError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    print(f'{merged} runs merged into {runner.repo_relative(sweep.root)}, '
          f'{identical} already there with the same record. The tables: '
          f'{sweep.command} --results --aggregate-only', flush=True)
    return 0

  # A SIGTERM (the `timeout` of a lease script) stops the runs as Ctrl-C does.
  def terminate(signum, frame):
    del signum, frame
    raise KeyboardInterrupt
  previous = signal.signal(signal.SIGTERM, terminate)
  try:
    return run_lease(
        sweep, spec_path, work_root=work.root, budget_s=args.budget_s,
        out_dir=args.out,
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
