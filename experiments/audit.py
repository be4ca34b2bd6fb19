r"""Audits a dataset's labels: which training examples look wrongly labelled.

Command line, with the flags of ``python -m experiments.train``::

  python -m experiments.audit --config experiments/configs/digits.py \
      --workdir runs/audit [--config.KEY=VALUE ...] [--top 64]

Trains the run, or reuses the finished run in the workdir, and writes there:

* ``label_issues.csv``: every training example, the most likely wrongly
  labelled first: its index (and path in an image folder), given and
  predicted label, score (the log-odds that the given label is wrong, under
  a two-component mixture of the losses of all training examples), margin,
  loss and whether it is flagged (score > 0, a posterior above 0.5). A run with ``config.label_issues``
  (by default OGC's) writes it as it ends; for another finished run the
  audit restores its last checkpoint and writes it
  (`experiments.suspects`).
* ``label_issues.png``: the ``--top`` suspects' images, to check them by
  eye, each with its rank, path (or index), given and predicted label,
  score and margin, as in the list.
* ``label_issues_clean.png``, where the true labels are known: the top
  suspects whose given label is right, the list's false alarms, to see
  whether they are ambiguous images or errors of the list;
* ``noise_transition.png``, where the true labels are known: the realised
  noise-transition matrix, the share of each true class (row) given each
  label (column), to see what kind of noise it is; its title sets the
  realised noise rate beside the list's estimate (the fraction it flags).

The true labels are known under synthetic noise, and for an image folder
trained on a labels CSV (``--config.labels_csv``, e.g. CIFAR-10N's human
labels over the CIFAR-10 image folder): then the folders are the truth.

It prints where they are and, where the true labels are known, how well the
list finds the wrong ones. A bad flag, key or value is
one line, ``error: ...``, as for the training.
"""

import functools
import math
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from experiments import checkpoints
from experiments import cli
from experiments import distributed
from experiments import files
from experiments import input_pipeline
from experiments import suspects
from experiments import methods
from experiments import train
from experiments import workdir as workdir_lib
from experiments.errors import ConfigError
from experiments.input_pipeline import load_data


def _define_top(flag_values):
  flags.DEFINE_integer('top', 64, 'Suspects shown in label_issues.png.',
                       lower_bound=1, flag_values=flag_values)


def audit(config, workdir: str, top: int = 64) -> dict:
  """Trains or reuses the run, writes its list and contact sheet.

  Args:
    config: the run's config.
    workdir: the run's workdir (a finished run there is reused).
    top: suspects in the contact sheet.

  Returns:
    ``csv`` and ``png``, the paths written, and ``measures``, the list's
    (`experiments.suspects.evaluate`, with the mixture).

  Raises:
    ConfigError: as `experiments.train.train_and_evaluate`.
  """
  result = train.train_and_evaluate(config, workdir)
  measures = result['label_issues']
  if workdir_lib.label_issues_path(workdir).is_file():
    data = load_data(config)
  else:  # a run without the list: score its trained network
    method, run = restore_run_end(config, workdir)
    measures = suspects.end_of_run(run, method.queue_mixture(run.state))
    data = run.data
  table = workdir_lib.read_label_issues(workdir)
  figure = contact_sheet(table, data.images, data.indices,
                         data.dataset.class_names, top)
  png = workdir_lib.label_issues_sheet_path(workdir)
  files.write_atomic(png, lambda f: figure.savefig(f, format='png',
                                                         dpi=150))
  plt.close(figure)
  report = {'csv': workdir_lib.label_issues_path(workdir), 'png': png,
            'measures': measures, 'flagged': int(np.sum(table['flagged'])),
            'examples': len(table['index']),
            'shown': min(top, len(table['index'])), 'transition_png': None,
            'true_noise_rate': None, 'clean_png': None, 'clean_in_top': None}
  if data.true_labels_known:
    report['true_noise_rate'] = data.noise.noise_rate
    position = {int(index): i for i, index in enumerate(data.indices)}
    right = data.true_labels[[position[int(i)] for i in table['index']]] == (
        table['given_label'])
    report['clean_in_top'] = int(np.sum(right[:top]))
    report['clean_png'] = workdir_lib.label_issues_clean_sheet_path(workdir)
    figure = contact_sheet({name: column[right] for name, column
                            in table.items()}, data.images, data.indices,
                           data.dataset.class_names, top)
    files.write_atomic(report['clean_png'],
                       lambda f: figure.savefig(f, format='png', dpi=150))
    plt.close(figure)
    report['transition_png'] = workdir_lib.noise_transition_path(workdir)
    figure = plot_transition(
        data.noise.transition_matrix, data.dataset.class_names,
        data.noise.noise_rate, report['flagged'] / report['examples'])
    files.write_atomic(
        report['transition_png'],
        lambda f: figure.savefig(f, format='png', dpi=120))
    plt.close(figure)
  return report


def restore_run_end(config, workdir
                    ) -> tuple[methods.Method, suspects.RunEnd]:
  """The method and `label_issues.RunEnd` of a finished run, from its last
  checkpoint (one process).

  Raises:
    ConfigError: the workdir holds no finished run of ``config``.
  """
  workdir = workdir_lib.absolute(workdir)
  workdir_lib.check_can_hold(workdir, train.config_dict(config))
  if workdir_lib.read_result(workdir) is None:
    raise ConfigError(f'{workdir} holds no finished run.')
  data = load_data(config)
  devices = distributed.devices(config)
  epoch_steps = input_pipeline.steps_per_epoch(
      config, len(data.labels), 'the training images')
  parts = train.build(config, data, devices, epoch_steps)
  manager = checkpoints.manager(workdir)
  if manager.latest_step() != config.num_epochs:
    raise ConfigError(f'{workdir} holds no checkpoint of its last epoch, '
                      f'{config.num_epochs}.')
  state = checkpoints.restore(manager, config.num_epochs, parts.state)
  return parts.method, train.run_end(parts, workdir, True, state, data)


def contact_sheet(table: dict, images, indices, class_names, top: int):
  """The figure of the ``top`` first rows of ``label_issues.csv``.

  Args:
    table: the list, `experiments.workdir.read_label_issues`.
    images: the training images, ``[n, H, W, C]``.
    indices: each image's index in the training split (the list's
      ``index``).
    class_names: the name of each label.
    top: rows shown.
  """
  position = {int(index): i for i, index in enumerate(indices)}
  shown = {name: column[:top] for name, column in table.items()}
  names = [path or str(index)
           for path, index in zip(shown['path'], shown['index'])]
  return plot_label_issues(
      images[[position[int(i)] for i in shown['index']]], shown['rank'],
      names, shown['given_label'], shown['predicted_label'], shown['score'],
      class_names, margins=shown['margin'])


def distinct_numbers(values, digits: int = 4) -> list[str]:
  """Each value in ``%g`` form with the fewest significant digits (at least
  ``digits``, at most 9, a float32's) that keep distinct values distinct.

  Example:
    >>> distinct_numbers([0.99991, 0.99992, 16.5])
    ['0.99991', '0.99992', '16.5']
  """
  values = [float(v) for v in values]
  distinct = len(set(values))
  for d in range(digits, 10):
    text = [f'{v:.{d}g}' for v in values]
    if len(set(text)) == distinct:
      break
  return text


def plot_label_issues(images, ranks, names, given, predicted, scores,
                      class_names: Sequence[str], margins=None,
                      columns: int = 8) -> plt.Figure:
  """A contact sheet of suspect examples, the most suspect first.

  Each image is titled with what matches it to ``label_issues.csv``: its
  rank, its name (path or index), its given and predicted labels' names,
  its score and its margin (the list's order: examples of equal score go
  by margin), each written with as many digits as distinct values need to
  differ (`distinct_numbers`; the score need not lie in [0, 1]).

  Args:
    images: uint8 ``[n, H, W, C]``, C 1 (grey) or 3.
    ranks: ``[n]``, each example's row of the list, from 1.
    names: ``[n]`` strings, each example's path, or its index where it has
      none.
    given, predicted: ``[n]`` label indices.
    scores: ``[n]``, the list's score column.
    class_names: the name of each label.
    margins: ``[n]``, the list's margin column; None or NaN (a list
      written without it) leaves it out.
    columns: images a row.
  """
  count = max(len(images), 1)
  columns = min(columns, count)
  rows = math.ceil(count / columns)
  fig, axes = plt.subplots(rows, columns, squeeze=False,
                           figsize=(1.9 * columns, 2.4 * rows))
  for ax in axes.flat:
    ax.axis('off')
  has_margins = margins is not None and not np.isnan(
      np.asarray(margins, float)).all()
  margin_text = ([f', margin {m}' for m in distinct_numbers(margins)]
                 if has_margins else [''] * len(images))
  for ax, image, rank, name, g, p, score, margin in zip(
      axes.flat, images, ranks, names, given, predicted,
      distinct_numbers(scores), margin_text):
    grey = image.shape[-1] == 1
    ax.imshow(image[..., 0] if grey else image, cmap='gray' if grey else None,
              vmin=0, vmax=255, interpolation='nearest')
    ax.set_title(f'#{rank} {name}\ngiven {class_names[g]}\n'
                 f'predicted {class_names[p]}\nscore {score}{margin}',
                 fontsize=6)
  fig.tight_layout()
  return fig


def plot_transition(matrix, class_names: Sequence[str], noise_rate: float,
                    flagged_rate: float) -> plt.Figure:
  """The realised noise-transition matrix as a grid of percentages.

  Args:
    matrix: ``[C, C]``, row ``i`` the share of true class ``i`` given each
      label (`experiments.noise.NoisyLabels.transition_matrix`).
    class_names: the name of each class.
    noise_rate: the realised fraction of wrong labels.
    flagged_rate: the fraction of examples the list flags, its estimate of
      the noise rate.
  """
  matrix = 100 * np.asarray(matrix, float)
  size = len(class_names)
  fig, ax = plt.subplots(figsize=(1.0 + 0.62 * size, 0.8 + 0.55 * size))
  off = matrix * (1 - np.eye(size))  # colour the flows, not the diagonal
  top = max(off.max(), 1e-9)
  ax.imshow(off, cmap='Reds', vmin=0, vmax=top)
  for i in range(size):
    for j in range(size):
      if matrix[i, j] >= 0.05:
        color = ('grey' if i == j else
                 'white' if off[i, j] > 0.6 * top else 'black')
        ax.text(j, i, f'{matrix[i, j]:.1f}', ha='center', va='center',
                fontsize=7, color=color)
  ax.set_xticks(range(size), class_names, rotation=60, ha='right',
                fontsize=7)
  ax.set_yticks(range(size), class_names, fontsize=7)
  ax.set_xlabel('given label')
  ax.set_ylabel('true class')
  ax.set_title(f'% of each true class given each label\nwrong labels '
               f'{100 * noise_rate:.2f}%, flagged by the list '
               f'{100 * flagged_rate:.2f}%', fontsize=8)
  fig.tight_layout()
  return fig


def describe(report: dict) -> list[str]:
  """The lines the command prints about an `audit`."""
  lines = [f"{report['csv']}: {report['examples']} training examples, "
           f"{report['flagged']} flagged (score > {suspects.FLAG_ABOVE})",
           f"{report['png']}: the top {report['shown']}"]
  m = report['measures']
  if m and m.get('auroc') is not None:
    lines.append(
        f"against the true labels ({m['noisy']} wrong): AUROC "
        f"{m['auroc']:.3f}, average precision {m['average_precision']:.3f}, "
        f"F1 {m['f1']:.3f} (precision {m['precision']:.3f}, recall "
        f"{m['recall']:.3f})")
  if report.get('clean_png') is not None:
    lines.append(
        f"{report['clean_png']}: the top suspects whose given label is "
        f"right; {report['clean_in_top']} of the top {report['shown']} are")
  if report.get('transition_png') is not None:
    lines.append(
        f"{report['transition_png']}: true class against given label; "
        f"{100 * report['true_noise_rate']:.2f}% of the labels are wrong, "
        f"the list flags {100 * report['flagged'] / report['examples']:.2f}%")
  return lines


def main(argv):
  cli.check_no_arguments(argv)
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
  with cli.interrupted(flags.FLAGS.config, flags.FLAGS.workdir), \
      cli.one_line_errors():
    report = audit(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.top)
  print('\n'.join(describe(report)))


if __name__ == '__main__':
  app.run(main, flags_parser=functools.partial(
      cli.parse_flags, doc=__doc__, define_flags=_define_top))
