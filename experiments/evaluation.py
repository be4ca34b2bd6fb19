"""What an epoch measures: the test set's counts and the metrics row.

`evaluate` runs the compiled evaluation step over the test set, a batch at a
time; `epoch_row` turns an epoch's train sums (`experiments.train.EpochSums`)
and its `Evaluation` into the row ``metrics.jsonl`` and TensorBoard get.
"""

from typing import Any, NamedTuple, Optional

import jax
import numpy as np

from experiments import methods
from experiments import workdir as workdir_lib

# The keys of every row of metrics.jsonl: the run's, then every method's.
ROW_KEYS = (*workdir_lib.METRICS_KEYS, *methods.METRICS_FIELDS)


class Evaluation(NamedTuple):
  """Counts of one pass over the test set (`evaluate`), each ``[classes]``.

  Attributes:
    correct: the test examples of each true class predicted as that class.
    total: the test examples of each true class.
    predicted: the test examples predicted as each class: 0 for a class the
      network never predicts (under asymmetric noise OGC-CE's network can
      stop predicting bird and deer on CIFAR-10).
  """
  correct: Any
  total: Any
  predicted: Any

  def accuracy(self) -> float:
    """The test accuracy: the correct predictions of all classes over all."""
    return float(np.sum(self.correct) / np.sum(self.total))

  def accuracy_per_class(self) -> list:
    """Each true class's accuracy; None for a class without test examples."""
    return [float(c / t) if t else None
            for c, t in zip(self.correct, self.total)]


def padded_batches(images, batch_size, *more):
  """Batches of ``batch_size``, the last padded with zeros, and its mask."""
  for i in range(0, len(images), batch_size):
    arrays = [a[i:i + batch_size] for a in (images,) + more]
    mask = np.arange(batch_size) < len(arrays[0])
    pad = batch_size - len(arrays[0])
    yield [np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
           for a in arrays] + [mask]


def evaluate(eval_step, state, test_images, test_labels, batch_size, put
             ) -> Evaluation:
  """The test set's `Evaluation`, a batch at a time.

  The last batch is padded to keep one compiled shape, its padding masked
  out. ``eval_step`` is `Steps.evaluate` jitted with a replicated output,
  which every process of a multi-process run can read.
  """
  batches = [jax.device_get(eval_step(state, put(x), put(y), put(mask)))
             for x, y, mask in padded_batches(test_images, batch_size,
                                               test_labels)]
  return Evaluation(*(np.sum(counts, 0, dtype=np.int64)
                      for counts in zip(*batches)))


def predict(logits_step, state, images, batch_size, put) -> np.ndarray:
  """The network's logits of ``images`` in evaluation mode, by batches."""
  out = [np.asarray(jax.device_get(logits_step(state, put(x))))[mask]
         for x, mask in padded_batches(images, batch_size)]
  return np.concatenate(out)


def epoch_row(epoch, evaluation, lr, sums, noise, method_fields,
              train_time, steps_per_epoch, batch_size) -> dict:
  """One epoch's row of metrics.jsonl: every key of `ROW_KEYS`.

  ``evaluation`` is the epoch's test `Evaluation`; ``method_fields`` are the
  method's (`Method.metrics`); the fields no one fills are null, and
  ``epoch_time_s`` is the caller's.
  """
  s = sums
  noisy = lambda total: total / s.n_noisy if s.n_noisy else None
  row = dict.fromkeys(ROW_KEYS)
  row.update({
      'epoch': epoch, 'test_accuracy': evaluation.accuracy(),
      'test_accuracy_per_class': evaluation.accuracy_per_class(),
      'test_predictions_per_class': [int(n) for n in evaluation.predicted],
      'loss': s.loss / s.count, 'learning_rate': lr,
      'train_accuracy_clean': s.correct_clean / max(s.n_clean, 1),
      'train_accuracy_noisy': noisy(s.correct_noisy),
      'train_accuracy_noisy_true': noisy(s.correct_noisy_true),
      'true_noise_rate': float(noise.noise_rate),
      'step_time_ms': 1000 * train_time / steps_per_epoch,
      'images_per_second': steps_per_epoch * batch_size / train_time,
  })
  unknown = sorted(set(method_fields) - set(row))
  if unknown:
    raise ValueError(f'metrics {unknown} are not fields of '
                     'workdir.METRICS_FIELDS or methods.METRICS_FIELDS')
  row.update(method_fields)
  return {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v)
          for k, v in row.items()}


def classes_never_predicted(row: dict) -> Optional[list[int]]:
  """The classes an epoch's network predicts for no test example.

  Read from the epoch's metrics row; None for a row written before the rows
  counted predictions (a run resumed after its last epoch from the records
  of an earlier version).

  Example:
    >>> classes_never_predicted({'test_predictions_per_class': [5, 0, 3, 0]})
    [1, 3]
    >>> print(classes_never_predicted({'epoch': 1, 'test_accuracy': 0.5}))
    None
  """
  counts = row.get('test_predictions_per_class')
  if counts is None:
    return None
  return [c for c, n in enumerate(counts) if n == 0]
