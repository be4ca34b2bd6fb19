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
import csv
import importlib.util
import json
import math
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time
from typing import NamedTuple, Optional, Sequence

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOISE_KINDS = ('none', 'symmetric', 'asymmetric', 'instance')
# Keys the sweep sets itself, from the grid; an override may not touch them.
GRID_KEYS = ('method', 'noise.kind', 'noise.rate', 'seed')
# Per-run record of the command's settings, to catch a root reused with
# different settings (its finished runs would otherwise be silently reused).
SWEEP_ARGS_FILE = 'sweep_args.json'
RESULT_FILE = 'result.json'
LOG_FILE = 'log.txt'
# When runs share the CPU, each keeps to one thread (XLA's default is one per
# core per process, which oversubscribes the machine).
SINGLE_THREAD_XLA_FLAGS = (
    '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')

_METHOD_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')
_CONFIG_KEY = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')
_UNSAFE_PATH_CHARS = re.compile(r'[^A-Za-z0-9._=+-]')


class Method(NamedTuple):
  """A row of the sweep: a training method with its own config overrides.

  Attributes:
    entry: the entry without its label, e.g. ``phuber_ce@loss_hparams.tau=5``;
      it names the run directory.
    name: the value of ``config.method``, e.g. ``phuber_ce``.
    overrides: ``(key, value)`` pairs, values as strings for the command line.
    label: the row label of the table (the entry unless one was given).
  """
  entry: str
  name: str
  overrides: tuple[tuple[str, str], ...]
  label: str


class Noise(NamedTuple):
  """A column of the sweep: a label-noise kind and rate."""
  kind: str
  rate: float

  @property
  def spec(self) -> str:
    """The canonical ``KIND:RATE`` spelling, e.g. ``symmetric:0.4``."""
    return f'{self.kind}:{self.rate:g}'

  @property
  def dirname(self) -> str:
    return f'{self.kind}_{self.rate:g}'

  @property
  def column(self) -> str:
    """The table header, e.g. ``symmetric 40%``."""
    if self.kind == 'none':
      return 'none'
    return f'{self.kind} {self.rate * 100:g}%'


class RunResult(NamedTuple):
  """What ``result.json`` of one finished run says, with where it lies."""
  method: Method
  noise: Noise
  seed: int
  workdir: pathlib.Path
  final_test_accuracy: float
  best_test_accuracy: float
  wall_time_s: float
  num_epochs: int


def parse_override(text: str, where: str) -> tuple[str, str]:
  """Parses ``KEY=VALUE`` into ``(KEY, VALUE)``.

  Args:
    text: the override, e.g. ``ogc.epsilon=5``.
    where: what the override came from, for the error message.

  Returns:
    The dotted config key and the value as a string.

  Raises:
    ValueError: if ``text`` has no ``=``, the key is not a dotted name, the
      value is empty, or the key is one the sweep sets from its grid.
  """
  key, sep, value = text.partition('=')
  key = key.strip()
  if not sep or not value.strip():
    raise ValueError(
        f'override {text!r} in {where} is not of the form KEY=VALUE')
  if not _CONFIG_KEY.fullmatch(key):
    raise ValueError(
        f'config key {key!r} in {where} is not a dotted name like '
        '`ogc.epsilon`')
  if key in GRID_KEYS or key == 'noise':
    raise ValueError(
        f'{where} sets {key!r}, which the sweep sets from --methods, --noise '
        'and --seeds')
  return key, value.strip()


def parse_method(entry: str) -> Method:
  """Parses a method entry ``METHOD[@KEY=VALUE]...[:LABEL]``.

  Args:
    entry: e.g. ``ce``, ``phuber_ce@loss_hparams.tau=5`` or
      ``ogc_ce@ogc.epsilon=5@ogc.queue_size=1024:OGC-CE (eps 5)``.

  Returns:
    The parsed `Method`.

  Raises:
    ValueError: on an empty entry, an invalid method name or override, a key
      given twice, or an empty label.

  Example:
    >>> method = parse_method('phuber_ce@loss_hparams.tau=5:PHuber-CE')
    >>> method.name, method.overrides, method.label
    ('phuber_ce', (('loss_hparams.tau', '5'),), 'PHuber-CE')
  """
  entry = entry.strip()
  body, sep, label = entry.partition(':')
  body, label = body.strip(), label.strip()
  if sep and not label:
    raise ValueError(f'method entry {entry!r} has an empty label after ":"')
  name, *parts = body.split('@')
  name = name.strip()
  if not _METHOD_NAME.fullmatch(name):
    raise ValueError(
        f'method entry {entry!r}: {name!r} is not a method name (letters, '
        'digits and _); expected METHOD[@KEY=VALUE]...[:LABEL]')
  overrides = tuple(
      parse_override(part, f'method entry {entry!r}') for part in parts)
  keys = [key for key, _ in overrides]
  if len(set(keys)) != len(keys):
    raise ValueError(f'method entry {entry!r} sets a config key twice')
  canonical = '@'.join([name] + [f'{k}={v}' for k, v in overrides])
  return Method(canonical, name, overrides, label or canonical)


def parse_noise(spec: str) -> Noise:
  """Parses a noise setting ``KIND:RATE`` (or ``none``).

  Args:
    spec: e.g. ``symmetric:0.4``, ``instance:0.2``, ``none``.

  Returns:
    The parsed `Noise`; ``none`` has rate 0.

  Raises:
    ValueError: on an unknown kind, a rate that is not a number in [0, 1), a
      missing rate, or a non-zero rate for ``none``.

  Example:
    >>> parse_noise('asymmetric:0.40')
    Noise(kind='asymmetric', rate=0.4)
  """
  kind, sep, rate_text = spec.strip().partition(':')
  kind, rate_text = kind.strip(), rate_text.strip()
  if kind not in NOISE_KINDS:
    raise ValueError(
        f'noise setting {spec!r}: unknown kind {kind!r}; expected one of '
        f'{", ".join(NOISE_KINDS)}, as KIND:RATE')
  if not sep and kind == 'none':
    return Noise('none', 0.0)
  if not rate_text:
    raise ValueError(
        f'noise setting {spec!r} has no rate; expected KIND:RATE, e.g. '
        f'{kind}:0.4')
  try:
    rate = float(rate_text)
  except ValueError:
    raise ValueError(
        f'noise setting {spec!r}: rate {rate_text!r} is not a number') from None
  if not 0.0 <= rate < 1.0:  # also rejects nan
    raise ValueError(f'noise setting {spec!r}: rate must be in [0, 1)')
  if kind == 'none' and rate != 0.0:
    raise ValueError(f'noise setting {spec!r}: kind none has rate 0')
  return Noise(kind, rate)


def parse_seeds(text: str) -> list[int]:
  """Parses ``0,1,2`` into distinct integer seeds."""
  seeds = []
  for part in text.split(','):
    try:
      seeds.append(int(part.strip()))
    except ValueError:
      raise ValueError(f'seed {part.strip()!r} in {text!r} is not an integer'
                       ) from None
  if len(set(seeds)) != len(seeds):
    raise ValueError(f'seeds {text!r} repeat a seed')
  return seeds


def _method_dirname(method: Method) -> str:
  # `@` separates overrides in the entry; `+` reads the same in a path.
  return _UNSAFE_PATH_CHARS.sub('_', method.entry.replace('@', '+'))


def run_dir(root, method: Method, noise: Noise, seed: int) -> pathlib.Path:
  """The workdir of one run: ``ROOT/<method entry>/<kind>_<rate>/seed_<seed>``.

  Characters of the entry other than letters, digits and ``._=+-`` are
  replaced (``@`` by ``+``, the others by ``_``).

  Example:
    >>> run_dir('runs', parse_method('ogc_ce@ogc.epsilon=5'),
    ...         parse_noise('symmetric:0.4'), 2).as_posix()
    'runs/ogc_ce+ogc.epsilon=5/symmetric_0.4/seed_2'
  """
  return (pathlib.Path(root) / _method_dirname(method) / noise.dirname
          / f'seed_{seed}')


def check_grid(methods: Sequence[Method], noises: Sequence[Noise],
               seeds: Sequence[int]):
  """Raises ValueError if the grid is empty or two of its cells would share a
  workdir or a table row or column."""
  for what, items in (('--methods', methods), ('--noise', noises),
                      ('--seeds', seeds)):
    if not items:
      raise ValueError(f'{what} is empty')
  for what, keys in (
      ('method entries', [_method_dirname(m) for m in methods]),
      ('method labels', [m.label for m in methods]),
      ('noise settings', [n.dirname for n in noises])):
    repeated = [k for k, n in collections.Counter(keys).items() if n > 1]
    if repeated:
      raise ValueError(f'{what} repeat after normalisation: {repeated}')


def _read_json(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON: {e}') from None


def read_result(path: pathlib.Path) -> dict:
  """Reads a ``result.json``, checking that it has the fields the table uses."""
  result = _read_json(path)
  missing = [k for k in ('final_test_accuracy', 'best_test_accuracy',
                         'wall_time_s', 'num_epochs') if k not in result]
  if missing:
    raise ValueError(f'{path} lacks {missing}')
  return result


def collect_results(root, methods: Sequence[Method], noises: Sequence[Noise],
                    seeds: Sequence[int]) -> list[RunResult]:
  """Reads ``result.json`` of every finished run of the grid.

  Args:
    root: the sweep root.
    methods, noises, seeds: the grid.

  Returns:
    One `RunResult` per finished run, in grid order (method, noise, seed);
    unfinished and missing runs are left out.

  Raises:
    ValueError: if a ``result.json`` is not valid JSON or lacks a field.
  """
  results = []
  for method in methods:
    for noise in noises:
      for seed in seeds:
        workdir = run_dir(root, method, noise, seed)
        path = workdir / RESULT_FILE
        if not path.exists():
          continue
        result = read_result(path)
        results.append(RunResult(
            method, noise, seed, workdir,
            float(result['final_test_accuracy']),
            float(result['best_test_accuracy']),
            float(result['wall_time_s']), int(result['num_epochs'])))
  return results


def _mean_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
  """Mean and sample standard deviation (ddof=1; None for one value)."""
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, None
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _escape_cell(text: str) -> str:
  return text.replace('|', r'\|')


def render_table(results: Sequence[RunResult], methods: Sequence[Method],
                 noises: Sequence[Noise], seeds: Sequence[int], *,
                 title: Optional[str] = None,
                 command: Optional[str] = None) -> str:
  """Renders final test accuracy as a markdown table.

  Rows are methods and columns noise settings; a cell is the mean ± sample
  standard deviation (ddof=1) over seeds of ``final_test_accuracy``, in % with
  one decimal. A cell with fewer finished seeds than requested shows the count,
  e.g. ``91.2 ± 0.3 (2/3)``; with one seed there is no std, with none the cell
  is ``–``. In each column the best mean (as shown, to one decimal; ties all)
  is in bold.

  Args:
    results: finished runs, as from `collect_results`.
    methods, noises, seeds: the requested grid.
    title: a ``#`` heading, if given.
    command: the command that regenerates the table, shown above it.

  Returns:
    The markdown text, ending in a newline.
  """
  finals = collections.defaultdict(list)
  for r in results:
    finals[r.method.entry, r.noise.dirname].append(
        100.0 * r.final_test_accuracy)
  means = {key: round(_mean_std(v)[0], 1) for key, v in finals.items()}
  best = {}
  for noise in noises:
    column = [means[m.entry, noise.dirname] for m in methods
              if (m.entry, noise.dirname) in means]
    best[noise.dirname] = max(column) if column else None

  lines = []
  if title:
    lines += [f'# {title}', '']
  if command:
    lines += ['Regenerate with:', '', '```', command, '```', '']
  seed_text = ('seed ' if len(seeds) == 1 else 'seeds ') + ', '.join(
      str(s) for s in seeds)
  lines += [
      'Final test accuracy (%; `final_test_accuracy` of each run: its mean '
      'test accuracy over the last `final_epochs` epochs, 10 by default), '
      'mean ± sample standard deviation (ddof=1) over '
      f'{seed_text}. Best mean per column in **bold**; (k/n): only k of the '
      'n seeds finished; –: no finished run.', '']
  lines.append('| Method | ' + ' | '.join(n.column for n in noises) + ' |')
  lines.append('| --- |' + ' ---: |' * len(noises))
  for method in methods:
    cells = []
    for noise in noises:
      values = finals.get((method.entry, noise.dirname))
      if not values:
        cells.append('–')
        continue
      mean, std = _mean_std(values)
      text = f'{mean:.1f}' if std is None else f'{mean:.1f} ± {std:.1f}'
      if round(mean, 1) == best[noise.dirname]:
        text = f'**{text}**'
      if len(values) < len(seeds):
        text += f' ({len(values)}/{len(seeds)})'
      cells.append(text)
    lines.append(
        f'| {_escape_cell(method.label)} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


CSV_FIELDS = ('method', 'label', 'noise_kind', 'noise_rate', 'seed',
              'final_test_accuracy', 'best_test_accuracy', 'wall_time_s',
              'num_epochs', 'workdir')


def write_csv(results: Sequence[RunResult], path) -> None:
  """Writes one row per finished run; accuracies as fractions in [0, 1]."""
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(CSV_FIELDS)
    for r in results:
      writer.writerow([
          r.method.entry, r.method.label, r.noise.kind, f'{r.noise.rate:g}',
          r.seed, repr(r.final_test_accuracy), repr(r.best_test_accuracy),
          f'{r.wall_time_s:.3f}', r.num_epochs, r.workdir.as_posix()])


# ----------------------------------------------------------------------------
# Running.


class Run(NamedTuple):
  """One planned run: its grid cell, workdir and ``--config.*`` overrides."""
  index: int  # 1-based position in the grid, for the progress lines
  method: Method
  noise: Noise
  seed: int
  workdir: pathlib.Path
  overrides: dict[str, str]

  @property
  def name(self) -> str:
    return f'{self.method.entry} {self.noise.spec} seed {self.seed}'


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


def plan_runs(root, methods, noises, seeds, set_overrides: dict[str, str]
              ) -> list[Run]:
  """The runs of the grid, in order, with their merged overrides.

  ``--set`` overrides apply to every run; a method's own overrides replace
  them key by key.
  """
  runs = []
  for method in methods:
    for noise in noises:
      for seed in seeds:
        overrides = {'method': method.name, 'noise.kind': noise.kind,
                     'noise.rate': repr(noise.rate), 'seed': str(seed)}
        overrides.update(set_overrides)
        overrides.update(method.overrides)
        runs.append(Run(len(runs) + 1, method, noise, seed,
                        run_dir(root, method, noise, seed), overrides))
  return runs


def check_recorded_settings(runs: Sequence[Run], config_path: str) -> None:
  """Raises ValueError if a workdir was started by a sweep with other settings.

  A finished run is reused as is, and an unfinished one resumes from its
  checkpoint; both would silently mix settings.
  """
  config = _config_for_record(config_path)
  conflicts = []
  for run in runs:
    path = run.workdir / SWEEP_ARGS_FILE
    if path.exists():
      recorded = _read_json(path)
      if recorded != {'config': config, 'overrides': run.overrides}:
        conflicts.append(f'  {run.workdir}: recorded {recorded}')
  if conflicts:
    raise ValueError(
        'these workdirs were run with other settings; use another --root or '
        'delete them:\n' + '\n'.join(conflicts[:10])
        + (f'\n  ... and {len(conflicts) - 10} more' if len(conflicts) > 10
           else ''))


def train_command(run: Run, config_path: str) -> list[str]:
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


def execute(runs: Sequence[Run], config_path: str, *, jobs: int, env,
            out=None) -> tuple[int, int, list[Run]]:
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
    result_path = run.workdir / RESULT_FILE
    if proc.returncode == 0 and result_path.exists():
      try:
        final = read_result(result_path)['final_test_accuracy']
      except ValueError as e:
        failed.append(run)
        say(run, f'FAILED: {e}')
        return
      done += 1
      say(run, f'done in {elapsed:.1f} s, final {100 * final:.1f}%')
      return
    failed.append(run)
    why = (f'exit code {proc.returncode}' if proc.returncode
           else 'exited without writing result.json')
    last = _last_line(run.workdir / LOG_FILE)
    say(run, f'FAILED ({why}) after {elapsed:.1f} s; log: '
        f'{run.workdir / LOG_FILE}' + (f'\n    {last}' if last else ''))

  try:
    while pending or running:
      while pending and len(running) < jobs:
        run = pending.popleft()
        if (run.workdir / RESULT_FILE).exists():
          skipped += 1
          say(run, 'skipped (finished)')
          continue
        run.workdir.mkdir(parents=True, exist_ok=True)
        (run.workdir / SWEEP_ARGS_FILE).write_text(json.dumps(
            {'config': config, 'overrides': run.overrides}, indent=2) + '\n')
        command = train_command(run, config_path)
        log = open(run.workdir / LOG_FILE, 'a')
        log.write(f'$ {shlex.join(command)}\n')
        log.flush()
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        running[proc] = (run, time.monotonic(), log)
        say(run, 'started' + (' (resuming)' if (
            run.workdir / 'metrics.jsonl').exists() else ''))
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
    methods = [parse_method(m) for m in _split(args.methods)]
    noises = [parse_noise(n) for n in _split(args.noise)]
    seeds = parse_seeds(args.seeds)
    check_grid(methods, noises, seeds)
    set_overrides = dict(parse_override(o, '--set') for o in args.set_overrides)
    if len(set_overrides) != len(args.set_overrides):
      raise ValueError('--set gives a config key twice')
    runs = plan_runs(args.root, methods, noises, seeds, set_overrides)
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
      print(f'  failed: {run.name}: {run.workdir / LOG_FILE}', flush=True)

  results = collect_results(args.root, methods, noises, seeds)
  table = pathlib.Path(args.table)
  table.parent.mkdir(parents=True, exist_ok=True)
  table.write_text(render_table(
      results, methods, noises, seeds,
      title=args.title or f'Sweep of {args.config}',
      command=regenerate_command(args)))
  csv_path = table.with_suffix('.csv')
  write_csv(results, csv_path)
  print(f'{len(results)}/{len(runs)} runs finished; wrote {table} and '
        f'{csv_path}', flush=True)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
