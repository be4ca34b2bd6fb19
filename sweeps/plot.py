r"""Plots of training runs: accuracy, OGC threshold and the fitted loss mixture.

::

  python -m sweeps.plot RUN1 RUN2 ... --out DIR [--epochs 10,50,150] \
    [--labels a,b]

writes, from each run's ``metrics.jsonl`` and ``queues/epoch_NNNN.npy``:

* ``DIR/test_accuracy.png``: test accuracy per epoch, one line per run;
* ``DIR/memorised.png``: the fraction of noisy training samples that the
  network predicts as their given, wrong label (``train_accuracy_noisy``),
  per epoch, one line per run with label noise;
* ``DIR/threshold.png``: for OGC runs, the clipping threshold tau per epoch
  (log scale) and the estimated noise rate (the noisy component's weight)
  against the true one;
* ``DIR/h_histogram_<run>.png``: for each OGC run, the density histogram of
  the queue's H = -log p at the chosen epochs (default: first, middle and last
  with a saved queue), the two fitted Gaussian components, each scaled by its
  weight, and the threshold H = -log p_threshold.

Runs without OGC data (no tau, no queues) are left out of the OGC plots with
a note.

The contact sheet of a run's suspect labels (``label_issues.png``) is
``python -m experiments.audit``'s.
"""

import argparse
import dataclasses
import math
import pathlib
import sys
from typing import Optional, Sequence

import matplotlib

matplotlib.use('Agg')
from matplotlib import ticker  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from experiments import workdir as workdir_lib  # pylint: disable=g-import-not-at-top


@dataclasses.dataclass(frozen=True)
class RunData:
  """What the plots read from one workdir.

  Attributes:
    workdir: the run's directory.
    label: its legend label.
    config: the contents of ``config.json`` ({} if absent).
    metrics: one dict per epoch, sorted by epoch; if an epoch was logged twice
      (a resumed run), the last record is kept.
    queues: epoch (1-based) -> path of the saved queue of H values.
  """
  workdir: pathlib.Path
  label: str
  config: dict
  metrics: list
  queues: dict

  @property
  def epochs(self) -> np.ndarray:
    return np.array([m['epoch'] for m in self.metrics])

  def series(self, key: str) -> np.ndarray:
    """A metric per epoch as floats, NaN where it is null or absent."""
    return np.array([np.nan if m.get(key) is None else float(m[key])
                     for m in self.metrics])

  def metrics_at(self, epoch: int) -> dict:
    for m in self.metrics:
      if m['epoch'] == epoch:
        return m
    return {}

  @property
  def has_threshold(self) -> bool:
    """Whether the run logged an OGC threshold tau."""
    return bool(np.any(np.isfinite(self.series('tau'))))


def default_label(config: dict, workdir: pathlib.Path) -> str:
  """``method noise-kind rate seed N`` from the config, else the workdir."""
  method = config.get('method')
  if method is None:
    return workdir.name
  noise = config.get('noise') or {}
  parts = [str(method)]
  if noise.get('kind') not in (None, 'none'):
    parts.append(f'{noise["kind"]} {noise.get("rate", "?")}')
  if 'seed' in config:
    parts.append(f'seed {config["seed"]}')
  return ' '.join(parts)


def load_run(workdir, label: Optional[str] = None) -> RunData:
  """Reads a workdir's config, metrics and queue files.

  Args:
    workdir: a directory written by ``experiments.train``.
    label: the legend label; by default method, noise and seed from
      ``config.json`` (or the directory name).

  Returns:
    The run's `RunData`.

  Raises:
    FileNotFoundError: if the workdir or its ``metrics.jsonl`` is missing.
    ValueError: if ``metrics.jsonl`` holds no epoch or a malformed line.
  """
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise FileNotFoundError(f'workdir {workdir} does not exist')
  metrics_path = workdir_lib.metrics_path(workdir)
  if not metrics_path.is_file():
    raise FileNotFoundError(
        f'{workdir} has no {workdir_lib.METRICS_FILE}: not a training '
        'workdir, or the run has not finished an epoch yet')
  metrics = workdir_lib.read_metrics(workdir)
  if not metrics:
    raise ValueError(f'{metrics_path} holds no epoch yet')
  config = workdir_lib.read_config(workdir)
  return RunData(workdir, label or default_label(config, workdir), config,
                 metrics, workdir_lib.saved_queues(workdir))


def default_epochs(available: Sequence[int]) -> list[int]:
  """First, middle and last of the available epochs (fewer if they repeat).

  Example:
    >>> default_epochs([1, 2, 3, 4, 5, 6])
    [1, 4, 6]
  """
  available = sorted(available)
  if not available:
    return []
  picks = [available[0], available[len(available) // 2], available[-1]]
  return sorted(set(picks))


def gaussian_pdf(x, mean, var):
  """The normal density N(x; mean, var)."""
  x = np.asarray(x, dtype=np.float64)
  return np.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def mixture_components(x, gmm: dict) -> tuple[np.ndarray, np.ndarray]:
  """The clean and noisy components of the mixture at ``x``, each times its
  weight, so that their sum is the mixture density.

  Args:
    x: points on the H axis.
    gmm: the epoch's ``gmm`` record (mean_clean, var_clean, mean_noisy,
      var_noisy, weight_noisy).

  Returns:
    ``((1 - w) N(x; mean_clean, var_clean), w N(x; mean_noisy, var_noisy))``
    with ``w = weight_noisy``.
  """
  w = float(gmm['weight_noisy'])
  clean = (1 - w) * gaussian_pdf(x, gmm['mean_clean'], gmm['var_clean'])
  noisy = w * gaussian_pdf(x, gmm['mean_noisy'], gmm['var_noisy'])
  return clean, noisy


def threshold_h(p_threshold) -> Optional[float]:
  """The threshold on the H axis, H = -log p_threshold (None if unknown)."""
  if p_threshold is None or not p_threshold > 0:
    return None
  return -math.log(p_threshold)


def _plot_percent_per_epoch(runs, key: str, ylabel: str) -> plt.Figure:
  """A metric in [0, 1] as % per epoch, one line per run."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for run in runs:
    ax.plot(run.epochs, 100 * run.series(key), label=run.label)
  ax.set_xlabel('epoch')
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize='small')
  fig.tight_layout()
  return fig


def plot_test_accuracy(runs: Sequence[RunData]) -> plt.Figure:
  """Test accuracy (%) per epoch, one line per run."""
  return _plot_percent_per_epoch(runs, 'test_accuracy', 'test accuracy (%)')


def plot_memorised(runs: Sequence[RunData]) -> plt.Figure:
  """Memorised noisy labels (%) per epoch, one line per run.

  A noisy sample is memorised when the network predicts its given, wrong
  label: ``train_accuracy_noisy`` of the metrics (chance is about
  ``100 / num_classes``).
  """
  return _plot_percent_per_epoch(
      runs, 'train_accuracy_noisy',
      'noisy samples predicted as their wrong label (%)')


def plot_threshold(runs: Sequence[RunData]) -> plt.Figure:
  """Tau per epoch (log scale) above, estimated and true noise rate below.

  Args:
    runs: OGC runs (`RunData.has_threshold`).

  Returns:
    The figure; in the lower panel a run's estimated noise rate is solid and
    its true noise rate dashed, in the same colour.
  """
  fig, (ax_tau, ax_rate) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
  highest_rate = 0.0
  for run in runs:
    line, = ax_tau.plot(run.epochs, run.series('tau'), label=run.label)
    color = line.get_color()
    ax_rate.plot(run.epochs, run.series('estimated_noise_rate'), color=color,
                 label=f'{run.label}: estimated')
    true_rate = run.series('true_noise_rate')
    rates = np.concatenate([run.series('estimated_noise_rate'), true_rate])
    if np.any(np.isfinite(rates)):
      highest_rate = max(highest_rate, float(np.nanmax(rates)))
    if np.any(np.isfinite(true_rate)):
      ax_rate.plot(run.epochs, true_rate, color=color, linestyle='--',
                   label=f'{run.label}: true')
  ax_tau.set_yscale('log')
  ax_tau.set_ylabel('clipping threshold tau')
  ax_tau.legend(fontsize='small')
  ax_tau.grid(alpha=0.3, which='both')
  ax_rate.set_xlabel('epoch')
  ax_rate.set_ylabel('noise rate')
  ax_rate.set_ylim(0, 1.15 * highest_rate or 1.0)
  ax_rate.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax_rate.legend(fontsize='small')
  ax_rate.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def plot_h_histogram(run: RunData, epochs: Sequence[int],
                     bins: int = 60) -> plt.Figure:
  """The queue's H histogram with the fitted mixture, one panel per epoch.

  Args:
    run: a run with saved queues.
    epochs: epochs with a saved queue.
    bins: histogram bins.

  Returns:
    The figure. Per panel: the density histogram of the finite H values, the
    weighted clean and noisy components and their sum (if the epoch logged a
    ``gmm``), and a vertical line at H = -log p_threshold (if logged).

  Raises:
    ValueError: if an epoch has no saved queue.
  """
  missing = [e for e in epochs if e not in run.queues]
  if missing:
    raise ValueError(f'{run.workdir} has no queue for epochs {missing}')
  fig, axes = plt.subplots(1, len(epochs), figsize=(4.5 * len(epochs), 4),
                           squeeze=False)
  for ax, epoch in zip(axes[0], epochs):
    h = np.load(run.queues[epoch]).astype(np.float64).ravel()
    h = h[np.isfinite(h)]
    record = run.metrics_at(epoch)
    gmm = record.get('gmm')
    tau_h = threshold_h(record.get('p_threshold'))
    upper = max([h.max() if h.size else 1.0]
                + ([tau_h] if tau_h is not None else [])) * 1.05
    ax.hist(h, bins=bins, range=(0, upper), density=True, color='0.75',
            label='queue H')
    if gmm:
      x = np.linspace(0, upper, 400)
      clean, noisy = mixture_components(x, gmm)
      ax.plot(x, clean, color='tab:blue', label='clean component')
      ax.plot(x, noisy, color='tab:red', label='noisy component')
      ax.plot(x, clean + noisy, color='k', linestyle=':', label='mixture')
    if tau_h is not None:
      ax.axvline(tau_h, color='tab:green', linestyle='--',
                 label=f'-log p_threshold = {tau_h:.2f}')
    title = f'epoch {epoch}'
    estimated = record.get('estimated_noise_rate')
    if estimated is not None:
      title += f': est. noise {estimated:.2f}'
      if record.get('true_noise_rate') is not None:
        title += f' (true {record["true_noise_rate"]:.2f})'
    ax.set_title(title, fontsize='medium')
    ax.set_xlabel('H = -log p')
    ax.set_ylabel('density')
    ax.legend(fontsize='x-small')
  fig.suptitle(run.label)
  fig.tight_layout()
  return fig


def _save(fig: plt.Figure, path: pathlib.Path) -> pathlib.Path:
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _file_name(label: str, taken: set) -> str:
  base = workdir_lib.safe_name(label).strip('_') or 'run'
  name, i = base, 2
  while name in taken:
    name, i = f'{base}_{i}', i + 1
  taken.add(name)
  return name


def make_plots(workdirs: Sequence, out, *,
               epochs: Optional[Sequence[int]] = None,
               labels: Optional[Sequence[str]] = None,
               log=print) -> list[pathlib.Path]:
  """Writes all plots of the runs into ``out``.

  Args:
    workdirs: the runs' workdirs.
    out: output directory (created).
    epochs: epochs of the H histograms; by default first, middle and last
      with a saved queue, per run. Epochs a run has no queue for are left out
      of its plot with a note.
    labels: legend labels, one per workdir; by default from each config.
    log: where notes go.

  Returns:
    The paths written.

  Raises:
    FileNotFoundError, ValueError: from `load_run`, or if ``labels`` does not
      match ``workdirs``.
  """
  if not workdirs:
    raise ValueError('no workdirs given')
  if labels is not None and len(labels) != len(workdirs):
    raise ValueError(
        f'{len(labels)} labels for {len(workdirs)} workdirs')
  runs = [load_run(w, None if labels is None else labels[i])
          for i, w in enumerate(workdirs)]
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  written = [_save(plot_test_accuracy(runs), out / 'test_accuracy.png')]
  noisy_runs = [run for run in runs if np.any(np.isfinite(
      run.series('train_accuracy_noisy')))]
  if noisy_runs:
    written.append(_save(plot_memorised(noisy_runs), out / 'memorised.png'))

  ogc_runs = [run for run in runs if run.has_threshold]
  for run in runs:
    if not run.has_threshold:
      log(f'note: {run.label} ({run.workdir}) logged no tau; left out of '
          'threshold.png')
  if ogc_runs:
    written.append(_save(plot_threshold(ogc_runs), out / 'threshold.png'))

  taken = set()
  for run in runs:
    if not run.queues:
      log(f'note: {run.label} ({run.workdir}) has no saved queues; no H '
          'histogram')
      continue
    chosen = default_epochs(run.queues) if epochs is None else list(epochs)
    absent = [e for e in chosen if e not in run.queues]
    if absent:
      log(f'note: {run.label} has no queue for epochs {absent} (it has '
          f'{min(run.queues)}..{max(run.queues)}); left out')
    chosen = [e for e in chosen if e in run.queues]
    if not chosen:
      continue
    path = out / f'h_histogram_{_file_name(run.label, taken)}.png'
    written.append(_save(plot_h_histogram(run, chosen), path))
  return written


def _parse_epochs(text: str) -> list[int]:
  try:
    epochs = [int(e) for e in text.split(',') if e.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'--epochs {text!r} is not a comma-separated list of integers'
    ) from None
  if not epochs or min(epochs) < 1:
    raise argparse.ArgumentTypeError('--epochs are 1-based and not empty')
  return epochs


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m sweeps.plot',
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split('\n\n', 1)[1])
  parser.add_argument('workdirs', nargs='+', help='run workdirs')
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument('--epochs', type=_parse_epochs, default=None,
                      help='histogram epochs, e.g. 10,50,150 (default: first, '
                      'middle, last)')
  parser.add_argument('--labels', default=None,
                      help='comma-separated legend labels, one per workdir')
  args = parser.parse_args(argv)
  labels = None if args.labels is None else args.labels.split(',')
  try:
    written = make_plots(args.workdirs, args.out, epochs=args.epochs,
                         labels=labels)
  except (FileNotFoundError, ValueError) as e:
    parser.error(str(e))
  for path in written:
    print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
