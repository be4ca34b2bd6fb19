r"""Which labels are wrong: OGC's list against cleanlab's and the small-loss rule's.

On the same data, noise and model, for each noise setting and seed::

  python -m sweeps.compare_lists --config experiments/configs/digits.py \
    --noise symmetric:0.2,symmetric:0.5,asymmetric:0.4,instance:0.4 \
    --seeds 0,1,2 --root results/records/label_issues_digits \
    --table results/label_issues_digits.md --jobs 2 \
    --set progress=False --set save_queues=False --set checkpoint_every=10

compares four lists of suspect labels:

* ``ogc``: the list one OGC-CE training writes (``method=ogc_ce``,
  `experiments.suspects`: the log-odds under a mixture of the final
  losses of all training examples);
* ``ogc_queue``: the same run's final losses under OGC's own last mixture,
  the one fitted to its queue (no extra training);
* ``cleanlab``: cleanlab's ``find_label_issues(labels, pred_probs)``, its
  defaults, on 5-fold cross-validated predicted probabilities from CE
  training with the same recipe (5 trainings, ``holdout.folds=5``,
  ``holdout.fold=0..4``); its ranking is cleanlab's label quality score
  (``get_label_quality_scores``, self-confidence);
* ``small_loss``: the list a CE training writes (``label_issues=True``): the
  same scoring as ``ogc`` on the final CE model.

For each it reports the AUROC and average precision of the ranking against
the true noise mask, the precision, recall and F1 of the flagged set, and
the cost: trainings and their summed ``wall_time_s``.

Each training is ``python -m experiments.train`` in a workdir of its own,
``ROOT/<entry>/<kind>_<rate>/seed_<seed>`` as a sweep's (`sweeps.grid`,
`sweeps.runner`; entries ``ogc_ce``, ``ce+label_issues=True`` and
``ce+holdout.folds=5+holdout.fold=K``); finished runs are reused. cleanlab's
measures go to ``ROOT/cleanlab/<kind>_<rate>/seed_<seed>/cleanlab.json``,
so that the table can be rebuilt from the records, which keep neither the
held-out probabilities nor the lists (``.gitignore``). ``--parts`` runs some
of the trainings only (``ogc``, ``cleanlab``, ``small_loss``); the table
shows what has finished. ``--aggregate-only`` only rebuilds the table and
its CSV.
"""

import argparse
import collections
import csv
import io
import pathlib
import sys
import time
from typing import NamedTuple, Optional, Sequence

import numpy as np

from experiments import config_lib
from experiments import files
from experiments import suspects
from experiments import workdir as workdir_lib
import sweeps
from sweeps import grid
from sweeps import runner
from sweeps import sweep as sweep_lib
from sweeps import tables

FOLDS = 5
CLEANLAB_FILE = 'cleanlab.json'
OGC = grid.parse_method('ogc_ce')
SMALL_LOSS = grid.parse_method('ce@label_issues=True')
FOLD_RUNS = tuple(grid.parse_method(f'ce@holdout.folds={FOLDS}@holdout.fold={k}')
                  for k in range(FOLDS))
# The trainings of each part of the comparison (--parts).
PARTS = {'ogc': (OGC,), 'cleanlab': FOLD_RUNS, 'small_loss': (SMALL_LOSS,)}
# The table's rows, in order.
ROWS = {
    'ogc': "OGC-CE's list (one training)",
    'ogc_queue': "OGC-CE, its last queue's mixture",
    'cleanlab': f'cleanlab, {FOLDS}-fold CE',
    'small_loss': 'small-loss mixture, CE',
}
MEASURES = ('auroc', 'average_precision', 'f1', 'precision', 'recall',
            'flagged', 'noisy')


class Row(NamedTuple):
  """One list's measures on one noise setting and seed."""
  row: str
  noise: grid.Noise
  seed: int
  measures: dict
  trainings: int
  wall_time_s: float
  workdirs: tuple


def cleanlab_path(root, noise: grid.Noise, seed: int) -> pathlib.Path:
  return pathlib.Path(root) / 'cleanlab' / noise.dirname / f'seed_{seed}' / (
      CLEANLAB_FILE)


def heldout_predictions(workdirs: Sequence) -> dict:
  """The folds' held-out probabilities, put together in example order.

  Raises:
    ValueError: a fold has no ``heldout_probs.npz``, or the folds overlap.
  """
  parts = []
  for workdir in workdirs:
    arrays = workdir_lib.read_heldout_probs(workdir)
    if arrays is None:
      raise ValueError(f'{workdir} has no {workdir_lib.HELDOUT_FILE}')
    parts.append(arrays)
  joined = {name: np.concatenate([p[name] for p in parts])
            for name in workdir_lib.HELDOUT_ARRAYS}
  if len(np.unique(joined['indices'])) != len(joined['indices']):
    raise ValueError(f'the held-out folds of {list(workdirs)} overlap')
  order = np.argsort(joined['indices'])
  return {name: array[order] for name, array in joined.items()}


def cleanlab_measures(workdirs: Sequence) -> dict:
  """cleanlab's list from the folds' held-out probabilities, measured.

  ``find_label_issues(labels, pred_probs)`` with cleanlab's defaults
  (``n_jobs=1``: the same result without forking this process) flags; the
  ranking is ``1 - get_label_quality_scores(labels, pred_probs)``.

  Returns:
    `experiments.suspects.evaluate`'s measures, with cleanlab's version
    and the seconds it took.
  """
  import cleanlab  # pylint: disable=g-import-not-at-top
  from cleanlab.filter import find_label_issues  # pylint: disable=g-import-not-at-top
  from cleanlab.rank import get_label_quality_scores  # pylint: disable=g-import-not-at-top
  held = heldout_predictions(workdirs)
  start = time.time()
  labels, probs = held['labels'].astype(np.int64), held['probs']
  issues = find_label_issues(labels, probs, n_jobs=1)
  quality = get_label_quality_scores(labels, probs)
  seconds = time.time() - start
  measures = suspects.evaluate(1.0 - quality, issues,
                                   held['labels'] != held['true_labels'])
  return dict(measures, cleanlab_version=cleanlab.__version__,
              cleanlab_seconds=seconds)


def update_cleanlab(root, noise, seed) -> Optional[dict]:
  """Writes ``cleanlab.json`` from the finished folds, if it is missing or
  older than one of them; returns its contents (None: folds unfinished)."""
  workdirs = [grid.run_dir(root, m, noise, seed) for m in FOLD_RUNS]
  results = [workdir_lib.read_result(w) for w in workdirs]
  path = cleanlab_path(root, noise, seed)
  if any(r is None for r in results):
    return files.read_json(path) if path.is_file() else None
  newest = max(workdir_lib.result_path(w).stat().st_mtime for w in workdirs)
  if path.is_file() and path.stat().st_mtime >= newest:
    return files.read_json(path)
  record = {'measures': cleanlab_measures(workdirs), 'trainings': FOLDS,
            'wall_time_s': sum(r['wall_time_s'] for r in results),
            'workdirs': [runner.repo_relative(w) for w in workdirs]}
  path.parent.mkdir(parents=True, exist_ok=True)
  files.write_json(path, record)
  return record


def collect(root, noises, seeds) -> list[Row]:
  """The measures of every finished list, in the order of `ROWS`."""
  rows = []
  for noise in noises:
    for seed in seeds:
      runs = {}
      for key, method in (('ogc', OGC), ('small_loss', SMALL_LOSS)):
        workdir = grid.run_dir(root, method, noise, seed)
        result = workdir_lib.read_result(workdir)
        if result is not None and result['label_issues'] is not None:
          runs[key] = (result, runner.repo_relative(workdir))
      found = {}
      if 'ogc' in runs:
        (result, workdir) = runs['ogc']
        found['ogc'] = (result['label_issues'], 1, result['wall_time_s'],
                        (workdir,))
        if result['label_issues'].get('queue_mixture'):
          found['ogc_queue'] = (result['label_issues']['queue_mixture'], 1,
                                result['wall_time_s'], (workdir,))
      if 'small_loss' in runs:
        (result, workdir) = runs['small_loss']
        found['small_loss'] = (result['label_issues'], 1,
                               result['wall_time_s'], (workdir,))
      record = update_cleanlab(root, noise, seed)
      if record is not None:
        found['cleanlab'] = (record['measures'], record['trainings'],
                             record['wall_time_s'], tuple(record['workdirs']))
      rows += [Row(key, noise, seed, *found[key]) for key in ROWS
               if key in found]
  return rows


def _cell(values, digits) -> str:
  mean, std = tables.mean_std(values)
  return (f'{mean:.{digits}f}' if std is None
          else f'{mean:.{digits}f} ± {std:.{digits}f}')


def render_table(rows: Sequence[Row], noises, seeds, *, title, command
                 ) -> str:
  """The markdown table: one line per noise setting and list, mean ± std
  (ddof=1) over seeds; the best mean AUROC, AP and F1 of a setting in bold."""
  cells = collections.defaultdict(list)
  for r in rows:
    cells[r.noise.dirname, r.row].append(r)
  seed_text = ('seed ' if len(seeds) == 1 else 'seeds ') + ', '.join(
      str(s) for s in seeds)
  lines = [f'# {title}', '', 'Regenerate with:', '', '```', command, '```', '',
           'Each list against the true noise mask: AUROC and average '
           'precision (AP) of its ranking, F1, precision and recall of the '
           'examples it flags, the flagged and the truly wrong count; its '
           'cost: the trainings it needs and their summed wall time '
           f'(`wall_time_s`). Mean ± sample std (ddof=1) over {seed_text}; '
           '(k/n): only k of the n seeds finished; the best AUROC, AP and F1 '
           'of a setting in **bold**.', '',
           '| Noise | List | AUROC | AP | F1 | Precision | Recall | Flagged '
           '| Wrong | Trainings | Wall time (s) |',
           '| --- | --- |' + ' ---: |' * 9]
  for noise in noises:
    present = [key for key in ROWS if cells.get((noise.dirname, key))]
    best = {m: max(round(np.mean([r.measures[m] for r in
                                  cells[noise.dirname, key]]), 3)
                   for key in present) for m in ('auroc', 'average_precision',
                                                 'f1')} if present else {}
    for key in present:
      found = cells[noise.dirname, key]
      texts = []
      for m in MEASURES:
        values = [r.measures[m] for r in found]
        text = _cell(values, 0 if m in ('flagged', 'noisy') else 3)
        if m in best and round(np.mean(values), 3) == best[m]:
          text = f'**{text}**'
        texts.append(text)
      texts += [str(found[0].trainings),
                _cell([r.wall_time_s for r in found], 0)]
      count = (f' ({len(found)}/{len(seeds)})' if len(found) < len(seeds)
               else '')
      lines.append(f'| {noise.column} | {ROWS[key]}{count} | '
                   + ' | '.join(texts) + ' |')
  return '\n'.join(lines) + '\n'


CSV_FIELDS = ('list', 'noise_kind', 'noise_rate', 'seed') + MEASURES + (
    'trainings', 'wall_time_s', 'workdirs')


def write_csv(rows: Sequence[Row], path) -> None:
  """One row per list, noise setting and seed."""
  text = io.StringIO(newline='')
  writer = csv.writer(text)
  writer.writerow(CSV_FIELDS)
  for r in rows:
    writer.writerow([r.row, r.noise.kind, f'{r.noise.rate:g}', r.seed]
                    + [repr(r.measures[m]) for m in MEASURES]
                    + [r.trainings, f'{r.wall_time_s:.3f}',
                       ' '.join(r.workdirs)])
  files.write_atomic(path, text.getvalue())


def build_parser() -> argparse.ArgumentParser:
  parser = sweeps.parser_of_module('sweeps.compare_lists', __doc__)
  parser.add_argument('--config', required=True, help='config file')
  parser.add_argument('--noise', required=True,
                      help='comma-separated KIND:RATE or labels:PATH, e.g. '
                      'symmetric:0.2')
  parser.add_argument('--seeds', default='0',
                      help='comma-separated, e.g. 0,1,2 (default 0)')
  parser.add_argument('--root', required=True,
                      help='directory of the runs (the records)')
  parser.add_argument('--table', required=True,
                      help='markdown table path; the CSV goes beside it')
  parser.add_argument('--parts', default=','.join(PARTS),
                      help='comma-separated trainings to run, of '
                      f'{", ".join(PARTS)} (default all)')
  sweep_lib.add_run_flags(parser)
  return parser


def regenerate_command(args) -> str:
  """The command line that regenerates the table (``--jobs`` and
  ``--parts`` left out)."""
  return sweep_lib.command_line(
      'sweeps.compare_lists', ('config', 'noise', 'seeds', 'root', 'table'),
      args)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the comparison's trainings and writes its table; returns the exit
  status (1 if a run failed). A bad flag or config is one line."""
  args = build_parser().parse_args(argv)
  with config_lib.one_line_errors():
    parts = [p.strip() for p in args.parts.split(',') if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
      raise ValueError(f'--parts {args.parts!r}: expected some of '
                       f'{", ".join(PARTS)}')
    methods = tuple(m for p in PARTS if p in parts for m in PARTS[p])
    sweep = sweep_lib.Sweep(
        args.config, methods,
        tuple(grid.parse_noise(n) for n in args.noise.split(',')),
        tuple(grid.parse_seeds(args.seeds)),
        dict(grid.parse_override(o, '--set')
             for o in args.set_overrides or ()),
        pathlib.Path(args.root), pathlib.Path(args.table),
        args.title or f'Label issues: {args.config}',
        regenerate_command(args))
    grid.check_grid(sweep.methods, sweep.noises, sweep.seeds)
  runs, options = sweep_lib.checked_runs(sweep, args)
  failed = sweep_lib.run_missing(sweep, runs, args, options)
  if failed is None:
    return 130
  rows = collect(sweep.root, sweep.noises, sweep.seeds)
  sweep.table.parent.mkdir(parents=True, exist_ok=True)
  files.write_atomic(sweep.table, render_table(
      rows, sweep.noises, sweep.seeds, title=sweep.title,
      command=sweep.command))
  write_csv(rows, sweep.table.with_suffix('.csv'))
  print(f'{len(rows)} lists measured; wrote {sweep.table} and '
        f'{sweep.table.with_suffix(".csv")}', flush=True)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
