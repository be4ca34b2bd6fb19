"""Which training labels look wrong: a run's ranked list, and how good it is.

At the end of a run with ``config.label_issues`` (`enabled`: by default
for OGC methods), the run (`experiments.train`) calls `end_of_run`, which
scores every training example with the trained network
in evaluation mode, without augmentation:

* its loss H = -log p of the given label, p clamped as OGC clamps it
  (`ogc_jax.feasible_probability`), and the predicted label;
* its score: the log-odds of the noisy component (`ogc_jax.noisy_log_odds`)
  of a two-component mixture fitted to the losses of all the training
  examples (`ogc_jax.fit_gmm`, to EM's fixed point), an estimate that the
  given label is wrong (the small-loss rule). An example is flagged where
  its score exceeds 0, its posterior 0.5;
* its margin: the given label's logit minus the largest other logit.

It writes them to ``label_issues.csv`` (`experiments.workdir`), the most
suspect first (`ranking`: by score, then by margin, lowest first). The
log-odds do not saturate where the posterior would (in float32 every
posterior past log-odds of about 17 is exactly 1), and the margin orders
the examples whose losses tie at the probability clamp (H = -log 1e-7),
so only examples with the same logits tie. Where the true labels are known (synthetic noise,
or data that brings both), `evaluate` measures the list against them: the
AUROC and average precision of its ranking, the precision, recall and F1 of
the flagged set; they go to ``result.json`` (``label_issues``). For OGC the
same measures of the posterior under OGC's own last mixture, the one fitted
to its queue of recent losses, applied to the same losses, go beside them
(``queue_mixture``): the mixture the list could have used instead.

With ``config.holdout.folds`` a run also writes its held-out fold's
predicted probabilities (`write_heldout`), the input of cleanlab's
``find_label_issues`` once every fold has run (``sweeps.compare_lists``).
"""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

import ogc_jax
from ogc_jax import losses
from experiments import methods
from experiments import workdir as workdir_lib
from experiments.data import folders

class RunEnd(NamedTuple):
  """What the end of a run reads of the trained run (`end_of_run`,
  `write_heldout`).

  Attributes:
    workdir: the run's workdir; files go in through `experiments.workdir`.
    is_main: whether this process writes the workdir (process 0).
    state: the method's final state, on the host.
    data: the run's `experiments.input_pipeline.Data` (training images,
      given and true labels).
    logits: the trained network in evaluation mode, ``logits(images)`` for
      uint8 images ``[n, H, W, C]``, a NumPy ``[n, classes]``.
  """
  workdir: str
  is_main: bool
  state: Any
  data: Any
  logits: Callable[[np.ndarray], np.ndarray]


# The log-odds above which an example is flagged: its label is more likely
# wrong than right under the mixture (a posterior above 0.5).
FLAG_ABOVE = 0.0


def enabled(config) -> bool:
  """Whether a run writes the list: ``config.label_issues``, or for None,
  whether the method is OGC's (``ogc_<base>``)."""
  if config.label_issues is None:
    return methods.parse_method_name(config.method).is_ogc
  return bool(config.label_issues)


def example_losses(logits, labels) -> np.ndarray:
  """H = -log p of each given label, p clamped to OGC's feasible range.

  Args:
    logits: ``[n, classes]``.
    labels: ``[n]``, the given labels.

  Returns:
    float32 ``[n]``, as OGC's queue holds them.
  """
  p = losses.probability_of_label(jnp.asarray(logits), jnp.asarray(labels))
  return np.asarray(-jnp.log(ogc_jax.feasible_probability(p)))


def label_margins(logits, labels) -> np.ndarray:
  """The given label's logit minus the largest other logit, per example.

  Negative where the network predicts another class; unlike the loss it
  does not stop at the probability clamp.

  Example:
    >>> label_margins(np.array([[2.0, 0.5, 1.0], [0.0, 3.0, 1.0]]),
    ...               np.array([0, 2])).tolist()
    [1.0, -2.0]
  """
  logits = np.asarray(logits, np.float32)
  labels = np.asarray(labels)
  rows = np.arange(len(labels))
  given = logits[rows, labels]
  others = logits.copy()
  others[rows, labels] = -np.inf
  return given - others.max(axis=-1)


def ranking(score, margin) -> np.ndarray:
  """The examples from the most suspect: by score, then margin (lowest
  first), then index.

  Example:
    >>> ranking(np.array([-3.0, 40.0, 40.0]),
    ...         np.array([0.5, -2.0, -7.0])).tolist()
    [2, 1, 0]
  """
  return np.lexsort((np.arange(len(score)), np.asarray(margin),
                     -np.asarray(score)))


def suspicion(order) -> np.ndarray:
  """A score without ties that ranks the examples in ``order``: n for the
  first, 1 for the last."""
  result = np.empty(len(order), np.int64)
  result[order] = np.arange(len(order), 0, -1)
  return result


# ----------------------------------------------------------------------------
# Measures against the true wrong labels: as scikit-learn computes them
# (tested against it), in NumPy, which the experiments do not depend on.


def _curve(score, positive):
  """True and false positives at or above each distinct score, highest first."""
  order = np.argsort(-np.asarray(score, np.float64), kind='stable')
  sorted_score, sorted_positive = np.asarray(score)[order], positive[order]
  last = np.r_[np.flatnonzero(np.diff(sorted_score)), len(order) - 1]
  true_positives = np.cumsum(sorted_positive)[last]
  return true_positives, last + 1 - true_positives


def auroc(score, positive) -> Optional[float]:
  """The area under the ROC curve of ``score`` for ``positive``.

  The probability that a random positive scores above a random negative,
  ties counting a half: scikit-learn's ``roc_auc_score``.

  Returns:
    The area; None where ``positive`` has one class only.

  Example:
    >>> auroc([0.9, 0.8, 0.8, 0.1], [True, False, True, False])
    0.875
  """
  positive = np.asarray(positive, bool)
  num_positive = int(positive.sum())
  if num_positive in (0, len(positive)):
    return None
  true_positives, false_positives = _curve(score, positive)
  return float(np.trapezoid(np.r_[0, true_positives] / num_positive,
                            np.r_[0, false_positives]
                            / (len(positive) - num_positive)))


def average_precision(score, positive) -> Optional[float]:
  """The average precision of ``score`` for ``positive``.

  The precision at each distinct score, weighted by the recall it adds:
  scikit-learn's ``average_precision_score`` (ties are one step).

  Returns:
    The average precision; None without positives.

  Example:
    >>> average_precision([0.9, 0.8, 0.7, 0.1], [True, False, True, False])
    0.8333333333333333
  """
  positive = np.asarray(positive, bool)
  num_positive = int(positive.sum())
  if not num_positive:
    return None
  true_positives, false_positives = _curve(score, positive)
  precision = true_positives / (true_positives + false_positives)
  recall_added = np.diff(np.r_[0, true_positives]) / num_positive
  return float(np.sum(recall_added * precision))


def flag_measures(flagged, positive) -> dict:
  """Precision, recall and F1 of ``flagged`` for ``positive`` (0 where
  undefined, as scikit-learn's with ``zero_division=0``)."""
  flagged, positive = np.asarray(flagged, bool), np.asarray(positive, bool)
  hits, num_flagged = int(np.sum(flagged & positive)), int(flagged.sum())
  num_positive = int(positive.sum())
  return {
      'precision': hits / num_flagged if num_flagged else 0.0,
      'recall': hits / num_positive if num_positive else 0.0,
      'f1': (2 * hits / (num_flagged + num_positive)
             if num_flagged + num_positive else 0.0),
  }


def evaluate(score, flagged, wrong=None) -> dict:
  """How well a scored list finds the wrong labels.

  Args:
    score: ``[n]``, higher for an example more likely wrongly labelled.
    flagged: ``[n]`` bools, the examples the list calls wrongly labelled.
    wrong: ``[n]`` bools, the truly wrong labels; None where unknown.

  Returns:
    ``examples``, ``flagged`` (counts), ``noisy`` (the true count),
    ``auroc`` and ``average_precision`` of ``score``, ``precision``,
    ``recall`` and ``f1`` of ``flagged``; those that need ``wrong`` are
    None without it.
  """
  flagged = np.asarray(flagged, bool)
  result = {'examples': len(flagged), 'flagged': int(flagged.sum()),
            'noisy': None, 'auroc': None, 'average_precision': None,
            'precision': None, 'recall': None, 'f1': None}
  if wrong is not None:
    wrong = np.asarray(wrong, bool)
    result.update(noisy=int(wrong.sum()), auroc=auroc(score, wrong),
                  average_precision=average_precision(score, wrong),
                  **flag_measures(flagged, wrong))
  return result


def _mixture_measures(gmm, loss, margin, wrong) -> tuple[np.ndarray, dict]:
  """The log-odds of each loss under ``gmm``, and `evaluate` of the ranking."""
  score = np.asarray(ogc_jax.noisy_log_odds(gmm, jnp.asarray(loss)))
  measures = evaluate(suspicion(ranking(score, margin)), score > FLAG_ABOVE,
                      wrong)
  measures['mixture'] = {k: float(v) for k, v in gmm._asdict().items()}
  return score, measures


# ----------------------------------------------------------------------------
# At the end of a run.


def end_of_run(run, queue_gmm: Optional[ogc_jax.GMM] = None) -> dict:
  """Scores the training examples, writes the list, returns its measures.

  Args:
    run: the `RunEnd` (the trained network, the data);
      every process scores, process 0 writes ``label_issues.csv``.
    queue_gmm: OGC's last mixture (of its queue), measured beside the list's.

  Returns:
    The ``label_issues`` block of ``result.json``: `evaluate`'s measures of
    the list (None where the true labels are unknown), the mixture fitted
    to all losses (``mixture``) and, given ``queue_gmm``, ``queue_mixture``:
    the same measures of the posterior under it.
  """
  data = run.data
  logits = run.logits(data.images)
  loss = example_losses(logits, data.labels)
  margin = label_margins(logits, data.labels)
  wrong = (data.labels != data.true_labels if data.true_labels_known
           else None)
  # EM to its fixed point: one fit a run, so its cost does not count, and
  # the list should not turn on where ten EM steps happen to stop.
  gmm = ogc_jax.fit_gmm(jnp.asarray(loss), fit="converged")
  score, measures = _mixture_measures(gmm, loss, margin, wrong)
  if queue_gmm is not None:
    measures['queue_mixture'] = _mixture_measures(queue_gmm, loss, margin,
                                                  wrong)[1]
  if run.is_main:
    order = ranking(score, margin)
    paths = (np.array(folders.train_files(data.folder))[data.indices]
             if data.folder is not None else np.full(len(loss), ''))
    workdir_lib.write_label_issues(run.workdir, {
        'index': data.indices[order], 'path': paths[order],
        'given_label': data.labels[order],
        'predicted_label': np.argmax(logits, -1)[order],
        'score': score[order], 'margin': margin[order], 'loss': loss[order],
        'flagged': score[order] > FLAG_ABOVE})
  return measures


def write_heldout(run) -> None:
  """Writes the held-out fold's predicted probabilities, if a fold was held
  out (``heldout_probs.npz``, `experiments.workdir.HELDOUT_ARRAYS`)."""
  heldout = run.data.heldout
  if heldout is None:
    return
  probs = jax.nn.softmax(jnp.asarray(run.logits(heldout.images)), axis=-1)
  if run.is_main:
    workdir_lib.write_heldout_probs(
        run.workdir, indices=heldout.indices,
        probs=np.asarray(probs, np.float32), labels=heldout.labels,
        true_labels=heldout.true_labels)


def write_run_end(run: RunEnd, config, queue_gmm=None) -> Optional[dict]:
  """What a run writes of its trained network before ``result.json``.

  A held-out fold's predicted probabilities (`write_heldout`) and, where
  `enabled`, the list (`end_of_run`, beside the measures of ``queue_gmm``,
  the method's own last mixture, where it has one).

  Returns:
    The ``label_issues`` field of ``result.json``: the list's measures, or
    None without a list.
  """
  write_heldout(run)
  return end_of_run(run, queue_gmm) if enabled(config) else None
