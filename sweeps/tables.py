"""Tables of a sweep: final test accuracy per method and noise setting.

`collect_results` reads the ``result.json`` of every finished run of a grid
(`sweeps.grid`), `render_table` makes the markdown table (mean ± std
over seeds, best mean per column in bold) and `write_csv` one CSV row per run
(paths from the repository root); `compare` says how a table's cells compare
with another's (`read_csv`), within the seed spread or not.
"""

import collections
import csv
import io
import math
import pathlib
from typing import NamedTuple, Optional, Sequence

from experiments import files
from experiments import workdir as workdir_lib
from sweeps import grid
from sweeps import runner


class RunResult(NamedTuple):
  """What ``result.json`` of one finished run says, with where it lies."""
  method: grid.Method
  noise: grid.Noise
  seed: int
  workdir: pathlib.Path
  final_test_accuracy: float
  best_test_accuracy: float
  wall_time_s: float
  num_epochs: int
  true_noise_rate: float  # realised: the fraction of given labels that are wrong


def collect_results(root, methods: Sequence[grid.Method],
                    noises: Sequence[grid.Noise],
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
        workdir = grid.run_dir(root, method, noise, seed)
        result = workdir_lib.read_result(workdir)
        if result is None:
          continue
        results.append(RunResult(
            method, noise, seed, workdir,
            float(result['final_test_accuracy']),
            float(result['best_test_accuracy']),
            float(result['wall_time_s']), int(result['num_epochs']),
            float(result['true_noise_rate'])))
  return results


def mean_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
  """Mean and sample standard deviation (ddof=1; None for one value)."""
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, None
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _escape_cell(text: str) -> str:
  return text.replace('|', r'\|')


def render_table(results: Sequence[RunResult],
                 methods: Sequence[grid.Method],
                 noises: Sequence[grid.Noise], seeds: Sequence[int], *,
                 title: Optional[str] = None,
                 command: Optional[str] = None) -> str:
  """Renders final test accuracy as a markdown table.

  Rows are methods and columns noise settings; a cell is the mean ± sample
  standard deviation (ddof=1) over seeds of ``final_test_accuracy``, in % with
  one decimal. A cell with fewer finished seeds than requested shows the count,
  e.g. ``91.2 ± 0.3 (2/3)``; with one seed there is no std, with none the cell
  is ``–``. In each column the best mean (as shown, to one decimal; ties all)
  is in bold. Above the table a line gives each column's realised noise
  rate (the fraction of training labels that differ from the true ones, as
  the runs record it; a range where runs differ), which can be below the
  nominal rate (asymmetric noise of classes without a mapping, the authors'
  integer counts).

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
  means = {key: round(mean_std(v)[0], 1) for key, v in finals.items()}
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
  realised = collections.defaultdict(list)
  for r in results:
    realised[r.noise.dirname].append(100.0 * r.true_noise_rate)
  rates = []
  for noise in noises:
    values = realised.get(noise.dirname)
    if not values:
      continue
    low, high = min(values), max(values)
    rates.append(f'{noise.column} {low:.2f}%' if high - low < 0.005
                 else f'{noise.column} {low:.2f}–{high:.2f}%')
  if rates:
    lines += ['Realised noise rates (the fraction of training labels that '
              'differ from the true ones, as the runs record it): '
              + '; '.join(rates) + '.', '']
  lines.append('| Method | ' + ' | '.join(n.column for n in noises) + ' |')
  lines.append('| --- |' + ' ---: |' * len(noises))
  for method in methods:
    cells = []
    for noise in noises:
      values = finals.get((method.entry, noise.dirname))
      if not values:
        cells.append('–')
        continue
      mean, std = mean_std(values)
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
              'num_epochs', 'true_noise_rate', 'labels_csv', 'workdir')


def write_csv(results: Sequence[RunResult], path) -> None:
  """Writes one row per finished run; accuracies as fractions in [0, 1].

  The ``workdir`` column is relative to the repository root where the run
  lies inside it (`runner.repo_relative`), so a committed CSV names no
  machine's folders.
  """
  text = io.StringIO(newline='')
  writer = csv.writer(text)
  writer.writerow(CSV_FIELDS)
  for r in results:
    writer.writerow([
        r.method.entry, r.method.label, r.noise.kind, f'{r.noise.rate:g}',
        r.seed, repr(r.final_test_accuracy), repr(r.best_test_accuracy),
        f'{r.wall_time_s:.3f}', r.num_epochs, repr(r.true_noise_rate),
        r.noise.labels_csv or '', runner.repo_relative(r.workdir)])
  files.write_atomic(path, text.getvalue())


def read_csv(path) -> dict[tuple[str, str], dict[int, float]]:
  """A CSV of `write_csv`: (method entry, noise dirname) -> seed -> final."""
  finals = collections.defaultdict(dict)
  with open(path, newline='') as f:
    for row in csv.DictReader(f):
      noise = grid.Noise(row['noise_kind'], float(row['noise_rate']),
                         row.get('labels_csv') or None)
      finals[row['method'], noise.dirname][int(row['seed'])] = float(
          row['final_test_accuracy'])
  return dict(finals)


def _cell_text(values: Sequence[float]) -> str:
  mean, std = mean_std([100 * v for v in values])
  seeds = f'{len(values)} seed' + ('s' if len(values) > 1 else '')
  return (f'{mean:.1f}' if std is None else f'{mean:.1f} ± {std:.1f}'
          ) + f' ({seeds})'


def compare(results: Sequence[RunResult],
            committed: dict[tuple[str, str], dict[int, float]],
            methods: Sequence[grid.Method],
            noises: Sequence[grid.Noise]) -> list[str]:
  """How the cells of ``results`` compare with a committed table's, in lines.

  Each cell of the grid is ``identical`` (the same seeds, the same final
  accuracies to the bit, as a rerun on the machine that made them gives),
  ``within the seed spread`` (the means differ by at most the sum of the two
  sample standard deviations over seeds, a side of one seed adding 0),
  ``outside the seed spread``, or of one seed on both sides, ``one seed
  each: no spread`` with the difference; cells on one side only say so.

  Args:
    results: this sweep's finished runs.
    committed: `read_csv` of the committed table's CSV.
    methods, noises: the grid.

  Returns:
    One line per cell with a run on either side, then a count of each
    verdict.

  Example:
    >>> m, n = grid.parse_method('ce:CE'), grid.parse_noise('symmetric:0.2')
    >>> here = [RunResult(m, n, s, None, f, f, 1.0, 1, 0.2)
    ...         for s, f in [(0, 0.80), (1, 0.84)]]
    >>> compare(here, {('ce', 'symmetric_0.2'): {0: 0.81, 1: 0.83}}, [m], [n])
    ['  CE, symmetric 20%: 82.0 ± 2.8 (2 seeds) here, 82.0 ± 1.4 (2 seeds) committed: within the seed spread (|difference| 0.0 <= 4.2 points)', '1 cells: 1 within the seed spread']
  """
  here = collections.defaultdict(dict)
  for r in results:
    here[r.method.entry, r.noise.dirname][r.seed] = r.final_test_accuracy
  lines, counts = [], collections.Counter()
  for method in methods:
    for noise in noises:
      key = (method.entry, noise.dirname)
      ours, theirs = here.get(key), committed.get(key)
      if not ours and not theirs:
        continue
      where = f'  {method.label}, {noise.column}: '
      if not theirs:
        verdict = 'not in the committed table'
        lines.append(f'{where}{_cell_text(list(ours.values()))} here; '
                     f'{verdict}')
      elif not ours:
        verdict = 'not run here'
        lines.append(f'{where}{_cell_text(list(theirs.values()))} committed; '
                     f'{verdict}')
      else:
        a, b = list(ours.values()), list(theirs.values())
        difference = 100 * abs(mean_std(a)[0] - mean_std(b)[0])
        spread = 100 * sum(mean_std(v)[1] or 0.0 for v in (a, b))
        if ours == theirs:
          verdict, why = 'identical', ''
        elif len(a) == len(b) == 1:
          verdict = 'one seed each: no spread'
          why = f' (difference {difference:.1f} points)'
        elif difference <= spread:
          verdict = 'within the seed spread'
          why = f' (|difference| {difference:.1f} <= {spread:.1f} points)'
        else:
          verdict = 'outside the seed spread'
          why = f' (|difference| {difference:.1f} > {spread:.1f} points)'
        lines.append(f'{where}{_cell_text(a)} here, {_cell_text(b)} '
                     f'committed: {verdict}{why}')
      counts[verdict] += 1
  lines.append(f'{sum(counts.values())} cells: ' + ', '.join(
      f'{n} {verdict}' for verdict, n in counts.items()))
  return lines
