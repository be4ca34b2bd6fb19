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
"""

import argparse
import collections
import importlib.util
import os
import pathlib
import shlex
import subprocess
import sys
import time
from typing import Optional, Sequence

from experiments import grid
from experiments import tables
from experiments import workdir as workdir_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# When runs share the CPU, each keeps to one thread (XLA's default is one per
# core per process, which oversubscribes the machine).
SINGLE_THREAD_XLA_FLAGS = (
    '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')


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


def _config_for_record(config_path: str) -> str:
  path, sep, arg = config_path.partition(':')
  resolved = pathlib.Path(path).resolve()
  if resolved.is_relative_to(REPO_ROOT):
    resolved = resolved.relative_to(REPO_ROOT)
  return resolved.as_posix() + sep + arg


def check_recorded_settings(runs: Sequence[grid.Run], config_path: str
                            ) -> None:
  """Raises ValueError if a workdir was started by a sweep with other settings.

  A finished run is reused as is, and an unfinished one resumes from its
  checkpoint; both would silently mix settings.
  """
  config = _config_for_record(config_path)
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
  one compiled; with ``jobs > 1`` XLA keeps to one thread per process.
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
  return env


def _last_line(path: pathlib.Path) -> str:
  try:
    lines = [l for l in path.read_text(errors='replace').splitlines()
             if l.strip()]
  except OSError:
    return ''
  return lines[-1].strip()[:200] if lines else ''


def execute(runs: Sequence[grid.Run], config_path: str, *, jobs: int, env,
            out=None) -> tuple[int, int, list[grid.Run]]:
  """Runs the unfinished runs, ``jobs`` at a time, printing one line per event.

  Each process writes to ``WORKDIR/log.txt`` (appended to, so a resumed run
  keeps its earlier log). A failed run is reported and the others go on.

  Returns:
    ``(done, skipped, failed)``: counts of runs that finished now and that had
    finished before, and the runs that failed.
  """
  out = out or sys.stdout
  total = len(runs)
  config = _config_for_record(config_path)
  pending = collections.deque(runs)
  running = {}  # Popen -> (run, start time, log file)
  done, skipped, failed = 0, 0, []

  def say(run, text):
    print(f'[{run.index}/{total}] {run.name}: {text}', file=out, flush=True)

  def finish(proc, run, start, log):
    nonlocal done
    log.close()
    elapsed = time.monotonic() - start
    result = None
    if proc.returncode == 0:
      try:
        result = workdir_lib.read_result(run.workdir)
      except ValueError as e:
        failed.append(run)
        say(run, f'FAILED: {e}')
        return
    if result is not None:
      final = result['final_test_accuracy']
      done += 1
      say(run, f'done in {elapsed:.1f} s, final {100 * final:.1f}%')
      return
    failed.append(run)
    why = (f'exit code {proc.returncode}' if proc.returncode
           else f'exited without writing {workdir_lib.RESULT_FILE}')
    log_path = workdir_lib.log_path(run.workdir)
    last = _last_line(log_path)
    say(run, f'FAILED ({why}) after {elapsed:.1f} s; log: {log_path}'
        + (f'\n    {last}' if last else ''))

  try:
    while pending or running:
      while pending and len(running) < jobs:
        run = pending.popleft()
        if workdir_lib.result_path(run.workdir).exists():
          skipped += 1
          say(run, 'skipped (finished)')
          continue
        run.workdir.mkdir(parents=True, exist_ok=True)
        workdir_lib.write_sweep_args(
            run.workdir, {'config': config, 'overrides': run.overrides})
        command = train_command(run, config_path)
        log = open(workdir_lib.log_path(run.workdir), 'a')
        log.write(f'$ {shlex.join(command)}\n')
        log.flush()
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        running[proc] = (run, time.monotonic(), log)
        say(run, 'started' + (' (resuming)' if workdir_lib.metrics_path(
            run.workdir).exists() else ''))
      if not running:
        continue
      if len(running) == 1:  # nothing else to watch: block until it ends
        next(iter(running)).wait()
      else:
        time.sleep(0.2)
      for proc in [p for p in running if p.poll() is not None]:
        finish(proc, *running.pop(proc))
  except KeyboardInterrupt:
    for proc, (run, _, log) in running.items():
      proc.terminate()
    for proc, (run, _, log) in running.items():
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
      log.close()
    print('interrupted; run the same command again to continue', file=out,
          flush=True)
    raise
  return done, skipped, failed


# ----------------------------------------------------------------------------
# Command line.


def _split(text: str) -> list[str]:
  return [part for part in (p.strip() for p in text.split(',')) if part]


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m experiments.sweep',
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split('\n\n', 1)[1])
  parser.add_argument('--config', required=True,
                      help='config file, e.g. experiments/configs/digits.py')
  parser.add_argument('--methods', required=True,
                      help='comma-separated METHOD[@KEY=VALUE]...[:LABEL]')
  parser.add_argument('--noise', required=True,
                      help='comma-separated KIND:RATE, e.g. symmetric:0.4')
  parser.add_argument('--seeds', default='0',
                      help='comma-separated, e.g. 0,1,2 (default 0)')
  parser.add_argument('--root', required=True, help='directory of the runs')
  parser.add_argument('--jobs', type=int, default=1,
                      help='runs at a time (default 1)')
  parser.add_argument('--table', default=None,
                      help='markdown table path (default ROOT/results.md); '
                      'the CSV goes beside it with .csv')
  parser.add_argument('--title', default=None, help='heading of the table')
  parser.add_argument('--set', dest='set_overrides', action='append',
                      default=[], metavar='KEY=VALUE',
                      help='config override for every run (repeatable)')
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


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the sweep; returns the exit status (1 if a run failed)."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.table is None:
    args.table = os.path.join(args.root, 'results.md')
  try:
    if args.jobs < 1:
      raise ValueError('--jobs must be at least 1')
    methods = [grid.parse_method(m) for m in _split(args.methods)]
    noises = [grid.parse_noise(n) for n in _split(args.noise)]
    seeds = grid.parse_seeds(args.seeds)
    grid.check_grid(methods, noises, seeds)
    set_overrides = dict(grid.parse_override(o, '--set')
                         for o in args.set_overrides)
    if len(set_overrides) != len(args.set_overrides):
      raise ValueError('--set gives a config key twice')
    runs = grid.plan_runs(args.root, methods, noises, seeds, set_overrides)
    check_recorded_settings(runs, args.config)
    if not args.aggregate_only:
      config = load_config(args.config)
      check_override_keys(config, list(set_overrides), '--set')
      for method in methods:
        check_override_keys(config, [k for k, _ in method.overrides],
                            f'method entry {method.entry!r}')
  except ValueError as e:
    parser.error(str(e))

  failed = []
  if not args.aggregate_only:
    env = child_env(args.root, args.jobs)
    done, skipped, failed = execute(runs, args.config, jobs=args.jobs, env=env)
    print(f'{len(runs)} runs: {done} done, {skipped} skipped (finished), '
          f'{len(failed)} failed', flush=True)
    for run in failed:
      print(f'  failed: {run.name}: {workdir_lib.log_path(run.workdir)}',
            flush=True)

  results = tables.collect_results(args.root, methods, noises, seeds)
  table = pathlib.Path(args.table)
  table.parent.mkdir(parents=True, exist_ok=True)
  table.write_text(tables.render_table(
      results, methods, noises, seeds,
      title=args.title or f'Sweep of {args.config}',
      command=regenerate_command(args)))
  csv_path = table.with_suffix('.csv')
  tables.write_csv(results, csv_path)
  print(f'{len(results)}/{len(runs)} runs finished; wrote {table} and '
        f'{csv_path}', flush=True)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
