r"""Runs a grid of training runs and tabulates their final test accuracy.

A sweep is the product of method entries, noise settings and seeds::

  python -m sweeps --config experiments/configs/digits.py \
    --methods ce,gce,phuber_ce@loss_hparams.tau=5,ogc_ce \
    --noise symmetric:0.2,symmetric:0.4,asymmetric:0.4,instance:0.4 \
    --seeds 0,1,2 --root runs/digits --jobs 2 \
    --table results/digits.md --set num_epochs=50

Each run is ``python -m experiments.train`` in its own workdir,
``ROOT/<method entry>/<kind>_<rate>/seed_<seed>``, started as a Ray task
(`sweeps.runner`): ``--jobs`` at a time on a local Ray instance, or over a
cluster with ``--address HOST:PORT`` (or ``RAY_ADDRESS``), each run asking for
``--cpus-per-run`` and ``--gpus-per-run``. A run is finished when its
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
``symmetric``, ``asymmetric``, ``instance`` (``none`` needs no rate), or
``labels:PATH``, a column of real labels: a ``path,label`` CSV over an image
folder (``labels_csv``, e.g. CIFAR-10N's), with no synthetic noise.

A sweep can also be named by a specification file, so that one file holds a
table's whole sweep (``sweeps/specs/*.json``)::

  python -m sweeps --spec sweeps/specs/cifar10_cpu.json --jobs 2

It is a JSON object with the keys of the flags: ``config``, ``methods`` (a
list of method entries, in the table's order), ``noise`` (a list of
``KIND:RATE`` or ``labels:PATH``), ``seeds`` (a list of integers; default ``[0]``), ``set`` (a
list of ``KEY=VALUE``), ``root`` and ``table``, the committed records and
table under ``results/``, ``title`` (optional) and ``resources`` (optional,
what each run asks Ray for: ``{"num_cpus": 8, "num_gpus": 0.5}``); relative
paths in it are relative to the repository root. With ``--spec`` only
``--aggregate-only``, ``--out``, ``--results`` and the flags of where the runs
go (``--jobs``, ``--address``, ...) may be given: a flag that names the sweep
(``--config``, ``--methods``, ...) is an error, so that the file alone says
what its table holds.

A spec's sweep runs in a fresh folder, ``--out`` (default
``runs/sweeps/<spec name>``), writes its table there, and then prints how
that table compares with the committed one, cell by cell: identical, within
the seed spread, or not. It writes into the committed records and table
only when told to, ``--results`` (to add runs to them, or ``--results
--aggregate-only`` to rebuild the table from them).
"""

import argparse
import json
import os
import pathlib
import shlex
import sys
from typing import NamedTuple, Optional, Sequence

from experiments import config_lib
from experiments import environment
from experiments import files
from experiments import validate
import sweeps
from sweeps import grid
from sweeps import run_files
from sweeps import runner
from sweeps import tables

REPO_ROOT = runner.REPO_ROOT
# Where a spec's sweep runs unless told otherwise: ROOT/<spec name>.
DEFAULT_OUT = REPO_ROOT / 'runs' / 'sweeps'


# ----------------------------------------------------------------------------
# Checks before the runs start.


def check_recorded_settings(runs: Sequence[grid.Run], config_path: str
                            ) -> None:
  """Raises ValueError if a workdir was started by a sweep with other settings.

  A finished run is reused as is, and an unfinished one resumes from its
  checkpoint; both would silently mix settings.
  """
  conflicts = []
  for run in runs:
    recorded = run_files.read_sweep_args(run.workdir)
    if runner.other_settings(recorded, run, config_path):
      conflicts.append(f'  {run.workdir}: recorded {recorded}')
  if conflicts:
    raise ValueError(
        'these workdirs were run with other settings; use another --root or '
        'delete them:\n' + '\n'.join(conflicts[:10])
        + (f'\n  ... and {len(conflicts) - 10} more' if len(conflicts) > 10
           else ''))


# ----------------------------------------------------------------------------
# The sweep: from flags or a specification file.

SPEC_KEYS = ('config', 'methods', 'noise', 'seeds', 'set', 'root', 'table',
             'title', 'resources')
# What a run may ask Ray for, in a spec's ``resources`` (Ray's names).
RESOURCE_KEYS = {'num_cpus': 'cpus_per_run', 'num_gpus': 'gpus_per_run'}
_REQUIRED_SPEC_KEYS = ('config', 'methods', 'noise', 'root')


class Sweep(NamedTuple):
  """A sweep's grid and where its runs and table go.

  Attributes:
    config: the config file, as `experiments.config_lib.load` takes it.
    methods, noises, seeds: the grid (rows, columns, seeds).
    set_overrides: ``--set`` overrides of every run.
    root: the directory of the runs.
    table: the markdown table's path; the CSV goes beside it.
    title: the table's heading.
    command: the command that regenerates the table.
    committed_table: a spec's committed table (its ``table``), with which a
      sweep elsewhere compares its own; None for a sweep of flags.
    resources: what each run asks Ray for, as `runner.RayOptions` fields
      (``cpus_per_run``, ``gpus_per_run``); a spec's ``resources``.
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
  committed_table: Optional[pathlib.Path] = None
  resources: dict = {}

  def runs(self) -> list[grid.Run]:
    """The planned runs, in the order of the grid (`grid.plan_runs`)."""
    return grid.plan_runs(self.root, self.methods, self.noises, self.seeds,
                          self.set_overrides)

  def elsewhere(self, root) -> 'Sweep':
    """The same sweep with its runs and table in ``root``."""
    root = pathlib.Path(root)
    return self._replace(root=root, table=root / self.table.name)


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


def default_out(spec_path) -> pathlib.Path:
  """Where a spec's sweep runs unless told otherwise: `DEFAULT_OUT`/NAME."""
  return DEFAULT_OUT / pathlib.Path(spec_path).stem


def load_spec(path) -> Sweep:
  """Reads a sweep specification file.

  Args:
    path: a JSON file with the keys `SPEC_KEYS` (see the module docstring).

  Returns:
    The `Sweep` of the spec's committed records and table (its ``root`` and
    ``table``; `Sweep.elsewhere` moves it); its relative paths are taken from
    the repository root.

  Raises:
    ValueError: the file is missing or not valid JSON, has an unknown key or
      lacks a required one, a value has the wrong type, or the grid is
      invalid; the message names the file and the key.

  Example:
    >>> sweep = load_spec(REPO_ROOT / 'sweeps/specs/cifar10_resnet18.json')
    >>> [m.label for m in sweep.methods][:3]
    ['CE', 'GCE', 'PHuber-CE tau=2']
    >>> len(sweep.runs())
    50
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f'--spec: {path} is not a file')
  spec = files.read_json(path)
  if not isinstance(spec, dict):
    raise ValueError(f'spec {path}: expected a JSON object with the keys '
                     f'{", ".join(SPEC_KEYS)}')
  for key in spec:
    if key not in SPEC_KEYS:
      raise ValueError(
          f'spec {path}: unknown key {key!r}'
          f'{config_lib.did_you_mean(key, SPEC_KEYS)}; valid keys: '
          f'{", ".join(SPEC_KEYS)}')
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
  resources = spec.get('resources', {})
  if not isinstance(resources, dict) or any(
      k not in RESOURCE_KEYS or isinstance(v, bool)
      or not isinstance(v, (int, float)) for k, v in resources.items()):
    raise ValueError(
        f'spec {path}: \'resources\' must be an object of numbers with the '
        f'keys {", ".join(RESOURCE_KEYS)} (what one run asks Ray for), not '
        f'{json.dumps(resources)}')
  if len(set(seeds)) != len(seeds):
    raise ValueError(f'spec {path}: seeds {seeds} repeat a seed')
  try:
    sweep = _make_sweep(
        str(_repo_path(config)), methods, noises, seeds, set_overrides,
        _repo_path(root), _repo_path(table) if table else None,
        title or f'Sweep of {config}',
        shlex.join(['python', '-m', 'sweeps', '--spec',
                    runner.repo_relative(path)]))
  except ValueError as e:
    raise ValueError(f'spec {path}: {e}') from None
  sweep = sweep._replace(
      committed_table=sweep.table,
      resources={RESOURCE_KEYS[k]: float(v) for k, v in resources.items()})
  try:
    ray_options(sweep, None)
  except ValueError as e:
    raise ValueError(f'spec {path}: resources: {e}') from None
  return sweep


def check_sweep_config(sweep: Sweep) -> None:
  """Builds each run's config as the training command will, with its overrides.

  Raises:
    ValueError: `experiments.config_lib.load`'s, for the ``--set`` overrides
      or a method entry's.
  """
  config_lib.load(sweep.config, sweep.set_overrides, '--set')
  for method in sweep.methods:
    config_lib.load(sweep.config, {**sweep.set_overrides,
                                   **dict(method.overrides)},
                    f'method entry {method.entry!r}')


def validate_runs(sweep: Sweep) -> None:
  """Checks every planned run's config as training checks it, before any
  run starts (`experiments.validate.validate_config`: the method, the noise,
  the dataset, the model, numbers out of range); runs that differ only in
  their seed are checked once.

  Raises:
    ValueError: the first invalid run's, naming the run.
  """
  checked = set()
  for run in sweep.runs():
    key = tuple(sorted((k, v) for k, v in run.overrides.items()
                       if k != 'seed'))
    if key in checked:
      continue
    checked.add(key)
    config = config_lib.load(sweep.config, run.overrides, f'run {run.name}')
    try:
      validate.validate_config(config)
    except ValueError as e:
      raise ValueError(f'run {run.name}: {e}') from None


def write_tables(sweep: Sweep) -> list[tables.RunResult]:
  """Writes the sweep's markdown table and CSV from its finished runs.

  Raises:
    ValueError: no run is finished and the table exists (the committed
      one, with ``--results``): it is left as it is, not replaced by an
      empty one.
  """
  results = tables.collect_results(sweep.root, sweep.methods, sweep.noises,
                                   sweep.seeds)
  if not results and sweep.table.exists():
    raise ValueError(
        f'no run of the sweep is finished under '
        f'{runner.repo_relative(sweep.root)}, so there is no table to write; '
        f'{runner.repo_relative(sweep.table)} is left as it is.')
  sweep.table.parent.mkdir(parents=True, exist_ok=True)
  files.write_atomic(sweep.table, tables.render_table(
      results, sweep.methods, sweep.noises, sweep.seeds, title=sweep.title,
      command=sweep.command))
  tables.write_csv(results, sweep.table.with_suffix('.csv'))
  return results


# ----------------------------------------------------------------------------
# Command line.

# Flags that name the sweep; with --spec the file names it instead.
_SWEEP_FLAGS = ('config', 'methods', 'noise', 'seeds', 'root', 'table',
                'title', 'set_overrides')
# Flags that only go with --spec.
_SPEC_FLAGS = ('out', 'results')


def _split(text: str) -> list[str]:
  return [part for part in (p.strip() for p in text.split(',')) if part]


def build_parser() -> argparse.ArgumentParser:
  parser = sweeps.parser_of_module('sweeps', __doc__)
  parser.add_argument('--spec', default=None,
                      help='sweep specification file (JSON); replaces the '
                      'flags from --config to --set')
  parser.add_argument('--out', default=None,
                      help='with --spec: the folder of the runs and the table '
                      '(default runs/sweeps/<spec name>)')
  parser.add_argument('--results', action='store_true',
                      help="with --spec: run into the spec's committed records "
                      'and write its committed table (results/)')
  parser.add_argument('--config', default=None,
                      help='config file, e.g. experiments/configs/digits.py')
  parser.add_argument('--methods', default=None,
                      help='comma-separated METHOD[@KEY=VALUE]...[:LABEL]')
  parser.add_argument('--noise', default=None,
                      help='comma-separated KIND:RATE or labels:PATH, e.g. '
                      'symmetric:0.4')
  parser.add_argument('--seeds', default=None,
                      help='comma-separated, e.g. 0,1,2 (default 0)')
  parser.add_argument('--root', default=None, help='directory of the runs')
  parser.add_argument('--table', default=None,
                      help='markdown table path (default ROOT/results.md); '
                      'the CSV goes beside it with .csv')
  add_run_flags(parser)
  return parser


def add_run_flags(parser) -> None:
  """``--title``, ``--set``, ``--aggregate-only`` and the flags of where the
  runs go (``--jobs``, ``--address``, ...), which every command that runs a
  grid and tabulates it takes."""
  parser.add_argument('--title', default=None, help='heading of the table')
  parser.add_argument('--set', dest='set_overrides', action='append',
                      default=None, metavar='KEY=VALUE',
                      help='config override for every run (repeatable)')
  parser.add_argument('--aggregate-only', action='store_true',
                      help='only rebuild the table and CSV from the workdirs')
  ray = parser.add_argument_group(
      'where the runs go (each run is a Ray task)')
  ray.add_argument('--jobs', type=int, default=None,
                   help='runs at a time (default: 1 on this machine; on a '
                   'cluster as many as its resources hold)')
  ray.add_argument('--address', default=None,
                   help='a Ray cluster to run on, HOST:PORT (default '
                   '$RAY_ADDRESS; neither: a local Ray instance)')
  ray.add_argument('--cpus-per-run', type=float, default=None,
                   help="CPUs a run asks for (default the spec's "
                   'resources.num_cpus, else 1)')
  ray.add_argument('--gpus-per-run', type=float, default=None,
                   help="GPUs a run asks for, a fraction packs runs on a GPU "
                   "(default the spec's resources.num_gpus, else 0)")
  ray.add_argument('--workdirs', choices=runner.WORKDIRS, default='shared',
                   help='shared: every node sees the root (a shared '
                   "filesystem); node: runs write to their node's disk and "
                   'their records come back through Ray (default shared)')


def ray_options(sweep: Sweep, args) -> runner.RayOptions:
  """The `runner.RayOptions` of a sweep: its spec's resources, then the
  flags (`add_run_flags`; ``args`` None: none given).

  Raises:
    ValueError: `runner.RayOptions.check`'s, or ``--jobs`` below 1.
  """
  fields = dict(sweep.resources)
  if args is not None:
    if args.jobs is not None and args.jobs < 1:
      raise ValueError('--jobs must be at least 1')
    for name in ('cpus_per_run', 'gpus_per_run'):
      if getattr(args, name) is not None:
        fields[name] = getattr(args, name)
    fields.update(address=args.address, workdirs=args.workdirs)
  return runner.RayOptions(**fields).check()


def command_line(module: str, named: Sequence[str], args) -> str:
  """``python -m MODULE`` with the flags ``named`` (e.g. ``'config'``) of
  ``args``, then its ``--title`` and ``--set`` (`add_run_flags`)."""
  parts = ['python', '-m', module]
  for name in named:
    parts += [f'--{name}', getattr(args, name)]
  if args.title:
    parts += ['--title', args.title]
  for override in args.set_overrides or ():
    parts += ['--set', override]
  return shlex.join(parts)


def regenerate_command(args) -> str:
  """The command line that regenerates the table (``--jobs`` left out)."""
  return command_line('sweeps', ('config', 'methods', 'noise', 'seeds', 'root',
                                 'table'), args)


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
    if args.out is not None and args.results:
      raise ValueError('--out and --results name two places; give one')
    sweep = load_spec(args.spec)
    if args.results:
      return sweep
    return sweep.elsewhere(args.out or default_out(args.spec))
  spec_only = [f'--{name}' for name in _SPEC_FLAGS if getattr(args, name)]
  if spec_only:
    raise ValueError(f'{", ".join(spec_only)} goes with --spec')
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


def run_unfinished(sweep: Sweep, runs: Sequence[grid.Run],
                   jobs: Optional[int],
                   options: Optional[runner.RayOptions] = None
                   ) -> Optional[list[grid.Run]]:
  """Runs the unfinished ``runs`` of ``sweep`` as Ray tasks, ``jobs`` at a
  time (`runner.execute`), and says how they went; returns the failed runs,
  or None if interrupted."""
  options = options or runner.RayOptions()
  outcome = runner.execute(
      runs, sweep.config, jobs=jobs,
      env=environment.child_env(sweep.root, jobs or 1, options.gpus_per_run),
      options=options, root=sweep.root)
  if outcome.interrupted:
    print('interrupted; run the same command again to continue', flush=True)
    return None
  print(f'{len(runs)} runs: {len(outcome.done)} done, '
        f'{len(outcome.skipped)} skipped (finished), '
        f'{len(outcome.failed)} failed', flush=True)
  for run in outcome.failed:
    print(f'  failed: {run.name}: {run_files.log_path(run.workdir)}',
          flush=True)
  return outcome.failed


def checked_runs(sweep: Sweep, args) -> tuple[list[grid.Run], dict]:
  """The planned runs and their Ray options, once every check passed.

  Before any run starts: where the runs go (`ray_options`), workdirs that
  another sweep's settings started (`check_recorded_settings`) and, unless
  ``--aggregate-only``, every run's config as training validates it
  (`check_sweep_config`, `validate_runs`). A failed check is one line,
  ``error: ...`` (status 1).
  """
  with config_lib.one_line_errors():
    options = ray_options(sweep, args)
    runs = sweep.runs()
    check_recorded_settings(runs, sweep.config)
    if not args.aggregate_only:
      check_sweep_config(sweep)
      validate_runs(sweep)
  return runs, options


def run_missing(sweep: Sweep, runs, args, options
                ) -> Optional[list[grid.Run]]:
  """Runs the unfinished runs (none with ``--aggregate-only``); returns the
  failed ones, or None if Ctrl-C stopped the sweep."""
  if args.aggregate_only:
    return []
  with config_lib.one_line_errors():
    return run_unfinished(sweep, runs, args.jobs, options)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the sweep; returns the exit status (1 if a run failed).

  A bad flag, spec or config is one line, ``error: ...`` (status 1).
  """
  args = build_parser().parse_args(argv)
  with config_lib.one_line_errors():
    sweep = sweep_from_args(args)
  runs, options = checked_runs(sweep, args)

  elsewhere = (sweep.committed_table is not None
               and sweep.table != sweep.committed_table)
  if elsewhere and not args.aggregate_only:
    print(f'{len(runs)} runs of {sweep.command} into '
          f'{runner.repo_relative(sweep.root)}; the committed results '
          f'({runner.repo_relative(sweep.committed_table)} and its records) '
          'are not touched (--results runs there)', flush=True)
  failed = run_missing(sweep, runs, args, options)
  if failed is None:
    return 130
  with config_lib.one_line_errors():
    results = write_tables(sweep)
  print(f'{len(results)}/{len(runs)} runs finished; wrote {sweep.table} and '
        f'{sweep.table.with_suffix(".csv")}', flush=True)
  if elsewhere:
    committed_csv = sweep.committed_table.with_suffix('.csv')
    if committed_csv.is_file():
      print(f'Against the committed table '
            f'{runner.repo_relative(sweep.committed_table)}:', flush=True)
      for line in tables.compare(results, tables.read_csv(committed_csv),
                                 sweep.methods, sweep.noises):
        print(line, flush=True)
    else:
      print(f'No committed table {runner.repo_relative(committed_csv)} to '
            'compare with.', flush=True)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
