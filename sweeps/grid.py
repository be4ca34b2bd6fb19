"""The grid of a sweep: method entries x noise settings x seeds, and its runs.

Method entries are ``METHOD[@KEY=VALUE]...[:LABEL]``: the ``@`` overrides
apply to that method's runs only (on top of ``--set``), and the optional label
replaces the entry in the table. Values may not contain ``,``, ``@`` or
``:``. Noise settings are ``KIND:RATE`` with KIND one of ``none``,
``symmetric``, ``asymmetric``, ``instance`` (``none`` needs no rate), or
``labels:PATH``: the training labels of a ``path,label`` CSV (``labels_csv``,
for image folders; real annotators' labels such as CIFAR-10N) and no
synthetic noise. Each run
has its own workdir, ``ROOT/<method entry>/<kind>_<rate>/seed_<seed>``
(`run_dir`).
"""

import collections
import pathlib
import re
from typing import NamedTuple, Optional, Sequence

from experiments import noise
from experiments import workdir as workdir_lib

# Keys the sweep sets itself, from the grid; an override may not touch them.
GRID_KEYS = ('method', 'noise.kind', 'noise.rate', 'seed')
# Set by a `labels:PATH` column; elsewhere an override may set it.
LABELS_KEY = 'labels_csv'

_METHOD_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')
_CONFIG_KEY = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')


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


# The column kind of a labels CSV: not a kind of `experiments.noise`.
LABELS = 'labels'


class Noise(NamedTuple):
  """A column of the sweep: a label-noise kind and rate, or a labels CSV.

  Attributes:
    kind: one of `experiments.noise.KINDS`, or `LABELS`.
    rate: the synthetic noise rate (0 for ``none`` and `LABELS`).
    labels_csv: for `LABELS`, the CSV's path as given (relative paths are
      from the repository root, where the runs start); else None.
  """
  kind: str
  rate: float
  labels_csv: Optional[str] = None

  @property
  def spec(self) -> str:
    """The canonical spelling, e.g. ``symmetric:0.4`` or ``labels:PATH``."""
    if self.kind == LABELS:
      return f'{LABELS}:{self.labels_csv}'
    return f'{self.kind}:{self.rate:g}'

  @property
  def _labels_name(self) -> str:
    return pathlib.PurePath(self.labels_csv).stem

  @property
  def dirname(self) -> str:
    if self.kind == LABELS:
      return workdir_lib.safe_name(f'{LABELS}_{self._labels_name}')
    return f'{self.kind}_{self.rate:g}'

  @property
  def column(self) -> str:
    """The table header, e.g. ``symmetric 40%`` or ``aggre labels``."""
    if self.kind == LABELS:
      return f'{self._labels_name} labels'
    if self.kind == 'none':
      return 'none'
    return f'{self.kind} {self.rate * 100:g}%'

  @property
  def overrides(self) -> dict[str, str]:
    """The ``--config.*`` values that select this column."""
    if self.kind == LABELS:
      return {'noise.kind': 'none', 'noise.rate': '0.0',
              'labels_csv': self.labels_csv}
    return {'noise.kind': self.kind, 'noise.rate': repr(self.rate)}


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
  """Parses a noise setting ``KIND:RATE`` (or ``none``, or ``labels:PATH``).

  Args:
    spec: e.g. ``symmetric:0.4``, ``instance:0.2``, ``none``,
      ``labels:../shared/data/cifar10n/aggre.csv``.

  Returns:
    The parsed `Noise`; ``none`` and ``labels`` have rate 0.

  Raises:
    ValueError: a missing rate or one that is not a number, a setting
      `experiments.noise.check_kind_and_rate` refuses (an unknown kind, a
      rate outside [0, 1), a non-zero rate for ``none``), or ``labels``
      without a path. (Whether the file exists is the run's check, at
      `experiments.validate`.)

  Example:
    >>> parse_noise('asymmetric:0.40')
    Noise(kind='asymmetric', rate=0.4, labels_csv=None)
    >>> real = parse_noise('labels:data/cifar10n/aggre.csv')
    >>> real.dirname, real.column
    ('labels_aggre', 'aggre labels')
  """
  kind, sep, rate_text = spec.strip().partition(':')
  kind, rate_text = kind.strip(), rate_text.strip()
  if kind == LABELS:
    if not rate_text or not pathlib.PurePath(rate_text).stem:
      raise ValueError(
          f'noise setting {spec!r} has no CSV path; expected '
          f'{LABELS}:PATH, e.g. {LABELS}:data/cifar10n/aggre.csv')
    return Noise(LABELS, 0.0, rate_text)
  try:
    noise.check_kind(kind, 'kind')
  except ValueError as e:
    raise ValueError(f'noise setting {spec!r}: {e}') from None
  if not sep and kind == 'none':
    rate_text = '0'
  if not rate_text:
    raise ValueError(
        f'noise setting {spec!r} has no rate; expected KIND:RATE, e.g. '
        f'{kind}:0.4')
  try:
    rate = float(rate_text)
  except ValueError:
    raise ValueError(
        f'noise setting {spec!r}: rate {rate_text!r} is not a number') from None
  try:
    kind, rate = noise.check_kind_and_rate(kind, rate, 'kind', 'rate')
  except ValueError as e:
    raise ValueError(f'noise setting {spec!r}: {e}') from None
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
  return workdir_lib.safe_name(method.entry.replace('@', '+'))


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
        overrides = {'method': method.name, **noise.overrides,
                     'seed': str(seed)}
        if noise.kind == LABELS:
          for where, given in (('--set', set_overrides),
                               (f'method entry {method.entry!r}',
                                dict(method.overrides))):
            if LABELS_KEY in given:
              raise ValueError(
                  f'{where} sets {LABELS_KEY!r}, which the column '
                  f'{noise.spec!r} sets')
        overrides.update(set_overrides)
        overrides.update(method.overrides)
        runs.append(Run(len(runs) + 1, method, noise, seed,
                        run_dir(root, method, noise, seed), overrides))
  return runs
