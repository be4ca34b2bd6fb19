"""The layout of a run's workdir: its file names, readers and writers.

`experiments.train` writes a workdir, `sweeps.plot` and the sweeps
(`sweeps`) read it; all of them go through this module::

  WORKDIR/
    config.json          the configuration (`check_config`)
    metrics.jsonl        one JSON object per epoch, the fields of
                         `METRICS_FIELDS` and of every method's
                         (`write_metrics`)
    tensorboard/         the same rows as TensorBoard scalars
                         (`experiments.summaries`)
    queues/epoch_NNNN.npy  the OGC queue of H = -log p at an epoch's end
    checkpoints/         Orbax checkpoints, one per saved epoch
    label_issues.csv     the training examples, the most likely wrongly
                         labelled first (`write_label_issues`)
    label_issues.png     the top suspects' images (``experiments.audit``)
    heldout_probs.npz    the held-out fold's predicted probabilities
                         (`write_heldout_probs`)
    result.json          written last, the fields of `RESULT_FIELDS`: the
                         run is finished (`write_result`)

A sweep adds its own files beside these (`sweeps.run_files`).

Every file is replaced atomically (`experiments.files.write_atomic`:
written beside under a unique name, then renamed), so a killed run leaves
either the old file or the new one.
"""

import csv
import io
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Optional, Sequence

import numpy as np

from experiments.errors import ConfigError
from experiments.files import read_json
from experiments.files import write_atomic
from experiments.files import write_json

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
RESULT_FILE = 'result.json'
QUEUES_DIR = 'queues'
SUMMARIES_DIR = 'tensorboard'
CHECKPOINTS_DIR = 'checkpoints'
LABEL_ISSUES_FILE = 'label_issues.csv'
LABEL_ISSUES_SHEET = 'label_issues.png'
LABEL_ISSUES_CLEAN_SHEET = 'label_issues_clean.png'
NOISE_TRANSITION_PLOT = 'noise_transition.png'
HELDOUT_FILE = 'heldout_probs.npz'

# Configuration keys that do not change a run's results: a workdir may be
# resumed with other values of them.
RESULT_NEUTRAL_KEYS = ('progress', 'distributed', 'coordinator_address',
                       'num_processes', 'process_id')
# Configuration keys added since the first runs, with what a config.json
# without them means: the training was the same, so such a run is resumed
# or reused. A dotted key is one inside a nested setting: runs from before
# `ogc.fit` existed fitted the mixture to convergence.
CONFIG_KEYS_ADDED = {'label_issues': None, 'holdout': {'folds': 0, 'fold': 0},
                     'ogc.fit': 'converged'}

# The fields of result.json, every one in every run (`write_result`).
RESULT_FIELDS = {
    'final_test_accuracy': 'the mean test accuracy of the last '
                           'config.final_epochs epochs (as the paper reports)',
    'best_test_accuracy': 'the highest test accuracy of an epoch',
    'last_test_accuracy': "the last epoch's test accuracy",
    'num_epochs': 'epochs trained',
    'true_noise_rate': 'the realised fraction of training labels that differ '
                       'from the true ones',
    'transition_matrix': 'the realised noise transition matrix, row i the '
                         'distribution of the given label of class i',
    'wall_time_s': 'seconds of training and evaluation (a resumed run adds '
                   'its earlier epochs)',
    'devices': 'devices of the data-parallel mesh',
    'config': 'the configuration',
    'label_issues': 'how well label_issues.csv finds the wrong labels '
                    '(`experiments.suspects.evaluate`; null without the '
                    'list)',
    'classes_never_predicted': 'the classes the final network predicts for '
                               'no test example, a list (a collapse: [2, 4], '
                               'bird and deer on CIFAR-10)',
}
RESULT_KEYS = tuple(RESULT_FIELDS)
# Fields that records made before them lack; such a record reads as null
# there.
RESULT_FIELDS_ADDED = ('label_issues', 'classes_never_predicted')

# The columns of label_issues.csv, one row per training example, the most
# likely wrongly labelled first (`experiments.suspects`).
LABEL_ISSUES_COLUMNS = {
    'rank': 'the row, from 1',
    'index': "the example's position in the dataset's training split",
    'path': 'image folders: the image, relative to the folder (as a labels '
            'CSV names it); empty otherwise',
    'given_label': 'the label trained on',
    'predicted_label': "the trained network's prediction",
    'score': 'the log-odds that the given label is wrong (of the noisy '
             'component of a mixture fitted to all the losses)',
    'margin': "the given label's logit minus the largest other logit; "
              'ranks examples of equal score, lowest first',
    'loss': 'H = -log p of the given label under the trained network',
    'flagged': '1 where the score exceeds 0 (a posterior above 0.5)',
}
# Lists written before these columns existed (their score was the
# posterior) read them as NaN.
LABEL_ISSUES_COLUMNS_ADDED = ('margin',)

# The fields of every row of metrics.jsonl, one row per epoch, whatever the
# method; each method adds its own (`experiments.methods.METRICS_FIELDS`),
# and every row holds every method's: a field a method does not have is
# null (a baseline has no tau), as is one without a value yet (the mixture
# before the first fit).
METRICS_FIELDS = {
    'epoch': 'the epoch, from 1',
    'test_accuracy': 'accuracy on the test set',
    'test_accuracy_per_class': 'accuracy on the test examples of each true '
                               'class, a list by class (null for a class '
                               'without test examples)',
    'test_predictions_per_class': 'test examples predicted as each class, a '
                                  'list by class: 0 where the network never '
                                  'predicts the class',
    'loss': 'mean training loss over the epoch',
    'learning_rate': "the optimizer's learning rate at the epoch's last step",
    'train_accuracy_clean': 'training accuracy on examples with a correct '
                            'given label',
    'train_accuracy_noisy': 'on examples with a wrong given label, the '
                            'fraction predicted as that wrong label '
                            '(memorised; null without noisy labels)',
    'train_accuracy_noisy_true': 'on examples with a wrong given label, the '
                                 'fraction predicted as the true label',
    'true_noise_rate': 'the realised noise rate of the training labels',
    # Timing.
    'step_time_ms': 'milliseconds a train step, dispatch included',
    'images_per_second': 'training images a second',
    'epoch_time_s': 'seconds of the epoch, evaluation included',
}
METRICS_KEYS = tuple(METRICS_FIELDS)

_QUEUE_NAME = 'epoch_{:04d}.npy'
_QUEUE_PATTERN = re.compile(r'epoch_(\d+)\.npy')
# Characters a file or folder name may hold (`safe_name`).
_UNSAFE_NAME_CHARS = re.compile(r'[^A-Za-z0-9._=+-]')


def safe_name(text: str) -> str:
  """``text`` as a file or folder name: other characters than ``A-Za-z0-9._=+-`` become ``_``.

  Example:
    >>> safe_name('OGC-CE (eps=5)')
    'OGC-CE__eps=5_'
  """
  return _UNSAFE_NAME_CHARS.sub('_', text)


def config_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / CONFIG_FILE


def metrics_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / METRICS_FILE


def result_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / RESULT_FILE


def checkpoints_dir(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / CHECKPOINTS_DIR


def label_issues_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / LABEL_ISSUES_FILE


def label_issues_sheet_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / LABEL_ISSUES_SHEET


def label_issues_clean_sheet_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / LABEL_ISSUES_CLEAN_SHEET


def noise_transition_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / NOISE_TRANSITION_PLOT


def heldout_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / HELDOUT_FILE


def summaries_dir(workdir) -> pathlib.Path:
  """``WORKDIR/tensorboard/``, the TensorBoard event files."""
  return pathlib.Path(workdir) / SUMMARIES_DIR


def queue_path(workdir, epoch: int) -> pathlib.Path:
  """``WORKDIR/queues/epoch_NNNN.npy``, the queue at the end of ``epoch``."""
  return pathlib.Path(workdir) / QUEUES_DIR / _QUEUE_NAME.format(epoch)


# ----------------------------------------------------------------------------
# Writing


def differing_keys(recorded: dict, current: dict,
                   ignore: Sequence[str] = ()) -> list[str]:
  """The top-level keys whose values differ between two settings.

  Example:
    >>> differing_keys({'seed': 0, 'progress': True}, {'seed': 1},
    ...                ignore=('progress',))
    ['seed']
  """
  return sorted(k for k in set(recorded) | set(current)
                if k not in ignore and recorded.get(k) != current.get(k))


def with_added_keys(recorded: dict, config: dict) -> dict:
  """A recorded configuration with the `CONFIG_KEYS_ADDED` it lacks.

  Each key of `CONFIG_KEYS_ADDED` that ``config`` has and ``recorded``
  lacks gets the value given there (the meaning of its absence);
  ``recorded`` itself is not changed.

  Example:
    >>> with_added_keys({'seed': 0, 'ogc': {'epsilon': 20.0}},
    ...                 {'seed': 0, 'ogc': {'epsilon': 20.0, 'fit': 'x'}})
    {'seed': 0, 'ogc': {'epsilon': 20.0, 'fit': 'converged'}}
  """
  recorded = json.loads(json.dumps(recorded))  # a deep copy
  for key, value in CONFIG_KEYS_ADDED.items():
    *parents, name = key.split('.')
    have, want = recorded, config
    for parent in parents:
      have, want = have.get(parent), want.get(parent)
      if not (isinstance(have, dict) and isinstance(want, dict)):
        break
    else:
      if name in want and name not in have:
        have[name] = value
  return recorded


def absolute(workdir) -> str:
  """The workdir as an absolute path; an empty one is refused.

  Raises:
    ConfigError: ``workdir`` is empty (it would be the current folder).
  """
  if not os.fspath(workdir).strip():
    raise ConfigError('--workdir is empty: name the folder the run goes to '
                      '(the default is runs/digits_default).')
  return os.path.abspath(workdir)


def holds_an_epoch(workdir) -> bool:
  """Whether the workdir holds anything of a trained epoch or a result.

  A workdir with only its ``config.json`` (a run stopped before its first
  epoch ended) holds nothing to lose, so another configuration may take it.
  """
  checkpoints = checkpoints_dir(workdir)
  return (result_path(workdir).exists() or bool(read_metrics(workdir))
          or bool(saved_queues(workdir))
          or (checkpoints.is_dir() and any(checkpoints.iterdir())))


def check_config(workdir, config: dict, write: bool = True) -> None:
  """Claims a workdir for one configuration: a workdir holds one run.

  Writes ``config.json`` if the workdir has none, or one that no trained
  epoch followed (`holds_an_epoch`), else compares it with ``config``,
  ignoring `RESULT_NEUTRAL_KEYS`; a key of `CONFIG_KEYS_ADDED` that
  ``config.json`` lacks has the value given there.

  Args:
    workdir: the run's directory (exists).
    config: the configuration as a JSON-able dict.
    write: False checks only, writing nothing.

  Raises:
    ValueError: the workdir holds a run of another configuration; the
      message names the keys that differ.
  """
  path = config_path(workdir)
  if path.exists():
    diff = differing_keys(with_added_keys(read_json(path), config), config,
                          ignore=RESULT_NEUTRAL_KEYS)
    if not diff:
      return
    if holds_an_epoch(workdir):
      raise ValueError(
          f'{workdir} holds a run with a different configuration (differs '
          f'in {diff}); use another --workdir or delete that one.')
  if write:
    write_json(path, config)


def check_can_hold(workdir, config: dict) -> None:
  """Refuses a workdir that is a file or holds a run of another config.

  Creates and writes nothing, so it can come before the data is loaded.

  Raises:
    ConfigError: the workdir cannot hold a run of ``config``: it is a file,
      holds a run of another configuration, or a ``result.json`` that is
      not a run's.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f'workdir {workdir} is a file, not a folder.')
  if config_path(workdir).exists():
    try:
      check_config(workdir, config, write=False)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  try:
    read_result(workdir)
  except ValueError as e:
    raise ConfigError(f'{e}: it is not the result of a run; use another '
                      '--workdir or move the file away.') from None


def claim(workdir, config: dict) -> None:
  """Creates the workdir and writes or checks its ``config.json``.

  Raises:
    ConfigError: the workdir cannot be created or written, or holds a run
      of another configuration.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):  # can we write there?
      pass
  except OSError as e:
    raise ConfigError(f'workdir {workdir} cannot be written: {e.strerror} '
                      f'({e.filename}).') from None
  check_can_hold(workdir, config)
  check_config(workdir, config)


def read_config(workdir) -> dict:
  """The contents of ``config.json``, or {} where there is none."""
  path = config_path(workdir)
  return read_json(path) if path.is_file() else {}


def check_result(result: dict, where, *, added: bool = False) -> None:
  """Raises ValueError if ``result`` lacks one of `RESULT_KEYS`.

  A record may lack those of `RESULT_FIELDS_ADDED`, unless ``added``.
  """
  missing = [k for k in RESULT_KEYS if k not in result
             and (added or k not in RESULT_FIELDS_ADDED)]
  if missing:
    raise ValueError(f'{where} lacks {missing}')


def read_result(workdir) -> Optional[dict]:
  """The contents of ``result.json``; None while the run is unfinished.

  A field of `RESULT_FIELDS_ADDED` that the record lacks (it was made
  before the field) is None.

  Raises:
    ValueError: the file is not valid JSON or lacks one of `RESULT_KEYS`.
  """
  path = result_path(workdir)
  if not path.exists():
    return None
  result = read_json(path)
  check_result(result, path)
  return {**dict.fromkeys(RESULT_FIELDS_ADDED), **result}


def write_result(workdir, result: dict) -> None:
  """Writes ``result.json``: exactly the fields of `RESULT_FIELDS`.

  Raises:
    ValueError: ``result`` lacks a field or has another.
  """
  check_result(result, 'the result', added=True)
  extra = sorted(set(result) - set(RESULT_KEYS))
  if extra:
    raise ValueError(f'the result has fields {extra} that '
                     'workdir.RESULT_FIELDS does not list')
  write_json(result_path(workdir), result)


# ----------------------------------------------------------------------------
# Metrics


def read_metrics(workdir, up_to_epoch: Optional[int] = None) -> list[dict]:
  """The per-epoch records of ``metrics.jsonl``, sorted by epoch.

  Args:
    workdir: the run's directory.
    up_to_epoch: keep only the epochs up to this one (a resumed run drops
      the records written after its last checkpoint); None keeps all.

  Returns:
    One dict per epoch ([] where there is no ``metrics.jsonl``); if an epoch
    was logged twice, the last record. A last line that is not valid JSON
    (its writer stopped mid-line) is ignored.

  Raises:
    ValueError: a line other than the last is not valid JSON, or a record
      has no ``epoch``.
  """
  path = metrics_path(workdir)
  if not path.exists():
    return []
  records = {}
  lines = path.read_text().splitlines()
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if i == len(lines) - 1:
        continue
      raise ValueError(f'{path}, line {i + 1}: not valid JSON') from None
    if 'epoch' not in record:
      raise ValueError(f'{path}, line {i + 1}: no "epoch" key')
    records[int(record['epoch'])] = record
  return [records[e] for e in sorted(records)
          if up_to_epoch is None or e <= up_to_epoch]


def write_metrics(workdir, rows: Sequence[dict]) -> None:
  """Replaces ``metrics.jsonl`` with ``rows``, one JSON object per line."""
  write_atomic(metrics_path(workdir),
               ''.join(json.dumps(row, sort_keys=True) + '\n' for row in rows))


# ----------------------------------------------------------------------------
# Queues


def save_queue(workdir, epoch: int, queue: np.ndarray) -> pathlib.Path:
  """Saves the OGC queue (H values, oldest first) at the end of ``epoch``."""
  path = queue_path(workdir, epoch)
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomic(path, lambda f: np.save(f, queue))
  return path


def saved_queues(workdir) -> dict[int, pathlib.Path]:
  """Epoch -> path of every saved queue, sorted by epoch.

  Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as workdir:
    ...   path = save_queue(workdir, 12, np.zeros(4, np.float32))
    ...   [(epoch, p.name) for epoch, p in saved_queues(workdir).items()]
    [(12, 'epoch_0012.npy')]
  """
  queues_dir = pathlib.Path(workdir) / QUEUES_DIR
  if not queues_dir.is_dir():
    return {}
  queues = {}
  for path in queues_dir.iterdir():
    match = _QUEUE_PATTERN.fullmatch(path.name)
    if match:
      queues[int(match.group(1))] = path
  return dict(sorted(queues.items()))


# ----------------------------------------------------------------------------
# Checkpoints


def saved_checkpoints(workdir) -> list[int]:
  """The epochs of the finished checkpoints, in order.

  Orbax names a checkpoint by its epoch; one being written has another
  name until it is complete.
  """
  checkpoints = checkpoints_dir(workdir)
  if not checkpoints.is_dir():
    return []
  return sorted(int(path.name) for path in checkpoints.iterdir()
                if path.name.isdigit())


def remove_unfinished_checkpoints(workdir) -> None:
  """Removes the checkpoints an interrupted save left unfinished.

  Orbax writes a checkpoint under a temporary name (``50.orbax-checkpoint-
  tmp...``) and renames it when complete; the next run would remove it
  with a warning.
  """
  checkpoints = checkpoints_dir(workdir)
  if checkpoints.is_dir():
    for path in checkpoints.iterdir():
      if not path.name.isdigit() and '.orbax-checkpoint-tmp' in path.name:
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------
# Label issues


def write_label_issues(workdir, columns: dict) -> pathlib.Path:
  """Writes ``label_issues.csv``: one row per example, in the given order.

  Args:
    workdir: the run's directory.
    columns: the columns of `LABEL_ISSUES_COLUMNS` but ``rank`` (the row),
      each a sequence of one value per example; floats are written with 9
      significant digits (a float32 exactly), ``flagged`` as 1 or 0.

  Raises:
    ValueError: a column is missing, unknown, or of another length.
  """
  names = [name for name in LABEL_ISSUES_COLUMNS if name != 'rank']
  if sorted(columns) != sorted(names):
    raise ValueError(f'label_issues.csv has the columns {names}, got '
                     f'{sorted(columns)}')
  lengths = {len(columns[name]) for name in names}
  if len(lengths) != 1:
    raise ValueError(f'label_issues.csv: columns of lengths {lengths}')
  text = io.StringIO(newline='')
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(LABEL_ISSUES_COLUMNS)
  for rank, row in enumerate(zip(*(columns[name] for name in names)), 1):
    values = dict(zip(names, row))
    writer.writerow([
        rank, int(values['index']), values['path'],
        int(values['given_label']), int(values['predicted_label']),
        f'{values["score"]:.9g}', f'{values["margin"]:.9g}',
        f'{values["loss"]:.9g}', int(bool(values['flagged']))])
  path = label_issues_path(workdir)
  write_atomic(path, text.getvalue())
  return path


def read_label_issues(workdir) -> Optional[dict[str, np.ndarray]]:
  """``label_issues.csv`` as one array per column; None where there is none."""
  path = label_issues_path(workdir)
  if not path.is_file():
    return None
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  read = {'path': str, 'score': float, 'margin': float, 'loss': float,
          'flagged': lambda text: bool(int(text))}
  return {name: np.array([read.get(name, int)(row[name]) if name in row
                          else np.nan for row in rows])
          for name in LABEL_ISSUES_COLUMNS}


# The arrays of heldout_probs.npz.
HELDOUT_ARRAYS = {
    'indices': "the held-out examples' positions in the dataset's training "
               'split',
    'probs': 'their predicted probabilities, [n, classes] (float32)',
    'labels': 'their given (noisy) labels',
    'true_labels': 'their true labels, where known (else the given ones)',
}


def write_heldout_probs(workdir, **arrays) -> pathlib.Path:
  """Writes ``heldout_probs.npz``: the arrays of `HELDOUT_ARRAYS`."""
  if sorted(arrays) != sorted(HELDOUT_ARRAYS):
    raise ValueError(f'heldout_probs.npz holds {sorted(HELDOUT_ARRAYS)}, got '
                     f'{sorted(arrays)}')
  path = heldout_path(workdir)
  write_atomic(path, lambda f: np.savez(f, **arrays))
  return path


def read_heldout_probs(workdir) -> Optional[dict[str, np.ndarray]]:
  """The arrays of ``heldout_probs.npz``; None where there is none."""
  path = heldout_path(workdir)
  if not path.is_file():
    return None
  with np.load(path, allow_pickle=False) as arrays:
    return {name: arrays[name] for name in HELDOUT_ARRAYS}
