r"""Training on noisily labelled data with OGC or a baseline loss.

``train_and_evaluate(config, workdir)`` runs one experiment: it loads the
data, corrupts the training labels (`ogc_jax.noise`), trains data-parallel
over every device of a ``jax.sharding.Mesh``, evaluates each epoch and writes
to ``workdir`` (its layout is `experiments.workdir`'s):

* ``config.json``: the configuration;
* ``metrics.jsonl``: one JSON object per epoch (accuracies, loss, tau, the
  mixture, the estimated and true noise rate, mean |dl/dp| of clean and noisy
  samples before and after clipping, step time);
* ``queues/epoch_NNNN.npy``: the OGC queue of H = -log p at each epoch end;
* ``checkpoints/``: an Orbax checkpoint per epoch; the same command resumes
  from the last one and ends with the same results as an uninterrupted run;
* ``result.json``, written last: ``final_test_accuracy`` (mean of the last
  ``config.final_epochs`` epochs' test accuracy, as the paper reports),
  ``best_test_accuracy``, wall time and the config.

Command line (Flax-examples style)::

  python -m experiments.train --config experiments/configs/cifar10.py \
      --config.method=ogc_ce --config.noise.rate=0.5 --workdir runs/x

Without flags it trains OGC-CE on scikit-learn's digits with 60% symmetric
noise (`experiments/configs/digits.py`) into ``runs/digits_default``.
``--help`` lists every key of the config with its value and meaning. A bad
key or value, or a workdir that cannot hold the run, is reported in one line,
before any file is written and, but for a batch larger than the data, before
any data is loaded (`validate_config`).
"""

import dataclasses
import difflib
import functools
import json
import os
import re
import sys
import tempfile
import textwrap
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
import orbax.checkpoint as ocp

import ogc_jax
from ogc_jax import baselines
from ogc_jax import losses
from experiments import augment
from experiments import data as data_lib
from experiments.errors import ConfigError
from experiments import models
from experiments import workdir as workdir_lib
from experiments.configs import default as default_config

# Datasets whose asymmetric-noise mapping is known (ogc_jax.noise).
_MAPPING_OF_DATASET = {
    'digits': 'digits', 'mnist': 'mnist', 'cifar10': 'cifar10',
    'cifar10_jpeg': 'cifar10', 'cifar100': 'cifar100',
}


@flax.struct.dataclass
class TrainState:
  """Everything a step changes; checkpointed each epoch."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ogc_state: Any  # ogc_jax.OGCState, or an empty dict for baselines


# ---------------------------------------------------------------------------
# Configuration




class Method:
  """The loss of a config: a baseline loss or OGC with a base loss of p."""

  def __init__(self, config):
    name = config.method
    hparams = {k: v for k, v in config.loss_hparams.items() if v is not None}
    self.name = name
    self.is_ogc = name.startswith('ogc_')
    if self.is_ogc:
      base = name[len('ogc_'):]
      if base not in losses.BASE_LOSSES:
        raise ConfigError(
            f'Unknown OGC base loss {base!r} in config.method={name!r}; '
            f'expected ogc_ + one of {sorted(losses.BASE_LOSSES)}.')
      fn = losses.BASE_LOSSES[base]
    elif name in baselines.LOSSES:
      fn = baselines.LOSSES[name]
    else:
      raise ConfigError(
          f'Unknown method config.method={name!r}; expected one of '
          f'{sorted(baselines.LOSSES)} or ogc_<base> with <base> in '
          f'{sorted(losses.BASE_LOSSES)}.')
    accepted = set(losses.hyperparameters(fn))
    unknown = set(hparams) - accepted
    if unknown:
      raise ConfigError(
          f'config.loss_hparams sets {sorted(unknown)}, which method {name!r} '
          f'does not take (it takes {sorted(accepted) or "none"}).')
    self.hparams = hparams
    self.fn = functools.partial(fn, **hparams)


# Keys that must be integers >= 1, and >= 0.
_POSITIVE_KEYS = ('num_epochs', 'batch_size', 'eval_batch_size', 'final_epochs',
                  'checkpoint_every')
_NON_NEGATIVE_KEYS = ('train_subset', 'test_subset', 'num_devices',
                      'steps_per_dispatch')
DTYPES = ('float32', 'bfloat16')
# The datasets `experiments.data.load_dataset` knows by name.
_OWN_DATASETS = ('digits', 'cifar10_jpeg')
_DATASET_CHOICES = (
    "'digits', 'cifar10_jpeg' (CIFAR-10 as an image folder), 'folder:PATH' (an "
    'image folder: PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg) or a '
    "TFDS name such as 'cifar10', 'cifar100', 'mnist', 'cifar10_n' (prepared "
    'by `tfds build NAME --data_dir=DIR --file_format=array_record`, then '
    '--config.data_dir=DIR)')


def _flat_items(config, prefix=''):
  """``('noise.rate', 0.5)``-style pairs of every leaf of a ConfigDict."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _flat_items(value, f'{prefix}{key}.')
    else:
      yield prefix + key, value


def _did_you_mean(name, choices):
  """`` (did you mean 'a', 'b' or 'c'?)`` for the choices close to ``name``."""
  close = [repr(c) for c in difflib.get_close_matches(name, choices, n=3)]
  if not close:
    return ''
  if len(close) > 1:
    close = [', '.join(close[:-1]), close[-1]]
  return f' (did you mean {" or ".join(close)}?)'


def _check_dataset(config):
  """The dataset's name, its label options and its noise, without loading it."""
  name, label_key, labels_csv = (config.dataset, config.label_key,
                                 config.labels_csv)
  folder = None
  if name.startswith('folder:'):
    folder = name[len('folder:'):]
  elif os.sep in name and os.path.isdir(name):
    folder = name
  tfds_base = None
  if name not in _OWN_DATASETS and folder is None:
    # TFDS: 'cifar10', 'cifar10_n:1.0.4', 'imagenet2012/subset'. Its registry
    # is a cheap lookup; a name it lacks may still be prepared in data_dir.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    tfds_base = name.split(':')[0].split('/')[0]
    registered = tfds.list_builders(with_community_datasets=False)
    if tfds_base not in registered and not (
        config.data_dir and os.path.isdir(os.path.join(config.data_dir,
                                                       tfds_base))):
      hint = _did_you_mean(name, list(_OWN_DATASETS) + list(registered))
      raise ConfigError(f'Unknown dataset config.dataset={name!r}{hint}; '
                        f'expected {_DATASET_CHOICES}.')
  if folder is not None and not os.path.isdir(folder):
    raise ConfigError(f'config.dataset={name!r}: {folder!r} is not a folder; '
                      f'expected {_DATASET_CHOICES}.')
  if label_key is not None and tfds_base is None:
    raise ConfigError(f'config.label_key={label_key!r} applies to TFDS '
                      f'datasets, not to config.dataset={name!r}.')
  label_keys = data_lib.CIFAR_N_LABEL_KEYS.get(tfds_base)
  if label_key is not None and label_keys and label_key not in label_keys:
    raise ConfigError(f'config.label_key={label_key!r} is not a label key of '
                      f'{name!r}; expected one of {label_keys}.')
  if labels_csv is not None:
    if folder is None and name != 'cifar10_jpeg':
      raise ConfigError(f'config.labels_csv={labels_csv!r} applies to image '
                        f'folders, not to config.dataset={name!r}.')
    if not os.path.isfile(labels_csv):
      raise ConfigError(f'config.labels_csv={labels_csv!r} is not a file.')
  if (label_keys or labels_csv is not None) and (
      config.noise.kind != 'none' or config.noise.rate != 0):
    source = ' with config.labels_csv' if labels_csv is not None else ''
    raise ConfigError(
        f'config.dataset={name!r}{source} brings its own noisy labels, so '
        f'config.noise.kind={config.noise.kind!r} with rate '
        f'{config.noise.rate!r} would add more; set --config.noise.kind=none '
        '--config.noise.rate=0.')


def _check_noise(config):
  kind, rate = config.noise.kind, config.noise.rate
  if kind not in ogc_jax.noise.KINDS:
    raise ConfigError(f'Unknown noise config.noise.kind={kind!r}; expected one '
                      f'of {ogc_jax.noise.KINDS}.')
  if not 0 <= rate < 1:
    raise ConfigError(f'config.noise.rate={rate!r} is not a noise rate; '
                      'expected a number in [0, 1).')
  if kind == 'none' and rate != 0:
    raise ConfigError(f'config.noise.rate={rate!r} with config.noise.kind='
                      "'none'; set the rate to 0 or a kind of "
                      f'{ogc_jax.noise.KINDS[1:]}.')
  if config.noise.protocol not in ogc_jax.noise.PROTOCOLS:
    raise ConfigError(
        f'Unknown config.noise.protocol={config.noise.protocol!r}; expected '
        f'one of {ogc_jax.noise.PROTOCOLS}.')
  if config.noise.seed is not None and config.noise.seed < 0:
    raise ConfigError(f'config.noise.seed={config.noise.seed!r} is negative; '
                      'expected None (the run\'s seed) or an integer >= 0.')
  mappings = sorted(ogc_jax.noise.ASYMMETRIC_MAPPINGS)
  mapping = config.noise.mapping
  if mapping is not None and mapping not in mappings:
    raise ConfigError(f'Unknown config.noise.mapping={mapping!r}; expected '
                      f'one of {mappings}.')
  if (kind == 'asymmetric' and mapping is None
      and config.dataset not in _MAPPING_OF_DATASET):
    raise ConfigError(
        f'config.noise.kind=\'asymmetric\' has no mapping for '
        f'config.dataset={config.dataset!r}; set config.noise.mapping to one '
        f'of {mappings}.')


def validate_config(config) -> None:
  """Checks a configuration without loading data or writing a file.

  Finds, in seconds, what would otherwise fail after the data is loaded: a
  key that `experiments.configs.default.HELP` lacks, an unknown method, loss
  hyperparameter, noise, dataset or model, and numbers out of range. Only the
  batch against the dataset's size waits for the data (`train_and_evaluate`
  checks it right after loading, before writing anything).

  Args:
    config: an ``ml_collections.ConfigDict`` like `configs/default.py`.

  Raises:
    ConfigError: a ``ValueError`` naming the key, the bad value and the valid
      choices.

  Example:
    >>> from experiments.configs import digits
    >>> config = digits.get_config()
    >>> config.noise.kind = 'symetric'
    >>> validate_config(config)
    Traceback (most recent call last):
    ...
    experiments.errors.ConfigError: Unknown noise config.noise.kind='symetric'; expected one of ('none', 'symmetric', 'asymmetric', 'instance').
  """
  values = dict(_flat_items(config))
  keys = list(default_config.HELP)
  names = keys + sorted({key.split('.')[0] for key in keys if '.' in key})
  for key in values:
    if key not in default_config.HELP:
      raise ConfigError(
          f'Unknown configuration key {key!r}{_did_you_mean(key, names)}; '
          '`python -m experiments.train --help` lists the keys.')
  missing = [key for key in keys if key not in values]
  if missing:
    raise ConfigError(f'The configuration lacks the keys {missing} (see '
                      'experiments/configs/default.py).')
  method = Method(config)
  _check_noise(config)
  _check_dataset(config)
  try:
    models.create_model(config.model, num_classes=2)
  except ValueError as e:
    raise ConfigError(f'config.model: {e}') from None
  if config.dtype not in DTYPES:
    raise ConfigError(f'Unknown config.dtype={config.dtype!r}; expected one '
                      f'of {DTYPES}.')
  for key in _POSITIVE_KEYS + _NON_NEGATIVE_KEYS:
    smallest = 1 if key in _POSITIVE_KEYS else 0
    if values[key] < smallest:
      raise ConfigError(f'config.{key}={values[key]!r}; expected an integer '
                        f'>= {smallest}.')
  if not config.learning_rate > 0:
    raise ConfigError(f'config.learning_rate={config.learning_rate!r}; '
                      'expected a number > 0.')
  if config.train_subset and config.batch_size > config.train_subset:
    raise ConfigError(
        f'config.batch_size={config.batch_size} exceeds config.train_subset='
        f'{config.train_subset}, the training images; expected at most '
        f'{config.train_subset}.')
  if method.is_ogc:
    try:  # OGC checks its own arguments
      ogc_jax.ogc_weights(method.fn, epsilon=config.ogc.epsilon,
                          update_period=config.ogc.update_period,
                          queue_size=config.ogc.queue_size)
    except ValueError as e:
      raise ConfigError(f'config.ogc: {e}') from None


def learning_rate_schedule(config, steps_per_epoch):
  """Piecewise constant: x lr_decay_factor at the given fractions of training."""
  boundaries = {
      int(round(f * config.num_epochs)) * steps_per_epoch: config.lr_decay_factor
      for f in config.lr_decay_epochs}
  return optax.piecewise_constant_schedule(config.learning_rate, boundaries)


def make_weighting(config, method, schedule):
  """The fused OGC route of an OGC method (None for a baseline).

  Its ``update(probs, state)`` gives OGC the optimizer's learning rate,
  ``schedule(state.count)``: the harness makes one OGC update per SGD step,
  so OGC's count is SGD's.
  """
  if not method.is_ogc:
    return None
  weighting = ogc_jax.ogc_weights(
      method.fn, epsilon=config.ogc.epsilon,
      update_period=config.ogc.update_period,
      queue_size=config.ogc.queue_size)
  return weighting._replace(
      update=lambda probs, state: weighting.update(probs, state,
                                                   schedule(state.count)))


def create_optimizer(config, schedule):
  """Global-norm clip, then coupled weight decay and SGD momentum (PyTorch)."""
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(schedule, momentum=config.momentum))


# ---------------------------------------------------------------------------
# Data


def load_data(config):
  """The dataset with training labels corrupted as the config asks.

  The noise follows ``config.noise.protocol`` with seed ``config.noise.seed``
  (None: the run's seed, or the authors' seed 0 under their protocol). Data
  that brings its own noisy labels is not corrupted further; its noise is
  measured against the true labels.

  Returns:
    ``(dataset, images, given_labels, true_labels, noise)``: the dataset
    (its test split cut to ``test_subset``), the training images, the labels
    trained on and the true ones (diagnostics only), all three cut to
    ``train_subset``, and the `ogc_jax.noise.NoisyLabels`.
  """
  cache_dir = config.cache_dir or os.path.join(
      os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')),
      'ogc_jax')
  dataset = data_lib.load_dataset(
      config.dataset, data_dir=config.data_dir, label_key=config.label_key,
      labels_csv=config.labels_csv, cache_dir=cache_dir)
  images, labels = dataset.train_images, dataset.train_labels
  true = (dataset.train_clean_labels if dataset.train_clean_labels is not None
          else labels)
  if config.train_subset:
    # A fixed random subset (the same for every seed and method): folders
    # list images class by class, so a prefix would hold few classes.
    keep = np.sort(np.random.default_rng(0).permutation(len(labels))[
        :config.train_subset])
    images, labels, true = images[keep], labels[keep], true[keep]
  if config.test_subset:
    keep = np.sort(np.random.default_rng(1).permutation(
        len(dataset.test_labels))[:config.test_subset])
    dataset = dataclasses.replace(dataset, test_images=dataset.test_images[keep],
                                  test_labels=dataset.test_labels[keep])
  if dataset.train_clean_labels is not None:
    if config.noise.kind != 'none' or config.noise.rate != 0:
      raise ValueError(
          f'{config.dataset} brings its own noisy labels; set '
          '--config.noise.kind=none --config.noise.rate=0.')
    # The noise came with the data: report what it is against the true labels.
    noise = ogc_jax.noise.realised_noise(true, labels, dataset.num_classes)
    return dataset, images, noise.labels, true, noise
  authors = config.noise.protocol == 'authors'
  seed = config.noise.seed
  if seed is None:
    seed = ogc_jax.noise.AUTHORS_SEED if authors else config.seed
  mapping = config.noise.mapping or _MAPPING_OF_DATASET.get(config.dataset)
  if authors and not config.noise.mapping and mapping == 'cifar100':
    mapping = 'cifar100_blocks'  # their map: blocks of 5 consecutive indices
  noise = ogc_jax.noise.corrupt_labels(
      config.noise.kind, labels, dataset.num_classes, config.noise.rate,
      seed, features=images, dataset=mapping, protocol=config.noise.protocol)
  return dataset, images, noise.labels, true, noise


# ---------------------------------------------------------------------------
# Steps


def make_steps(config, model, method, weighting, tx, mean, std, data_sharding,
               num_train):
  """The train step and evaluation of one configuration (to be jitted).

  ``weighting`` is the method's `ogc_jax.ogc_weights`, None for baselines.
  """
  base_loss = method.fn if method.is_ogc else None
  aug = config.augment
  batch_size = config.batch_size
  mean, std = jnp.asarray(mean), jnp.asarray(std)

  def train_step(state, sums, data, perm, rng):
    """One SGD step on the batch perm[step % steps_per_epoch]."""
    images_all, given_all, true_all = data
    steps_per_epoch = num_train // batch_size
    start = (state.step % steps_per_epoch) * batch_size
    idx = jax.lax.dynamic_slice(perm, (start,), (batch_size,))
    images = jax.lax.with_sharding_constraint(images_all[idx], data_sharding)
    labels = jax.lax.with_sharding_constraint(given_all[idx], data_sharding)
    true = true_all[idx]
    rng = jax.random.fold_in(rng, state.step)
    x = images.astype(jnp.float32)
    if aug.crop_padding or aug.flip or aug.rotation_degrees:
      x = augment.augment(
          rng, x, crop_padding=aug.crop_padding, flip=aug.flip,
          rotation_degrees=aug.rotation_degrees)
    x = augment.normalize(x, mean, std)

    def loss_fn(params):
      logits, new_vars = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x, train=True,
          mutable=['batch_stats'])
      p = losses.probability_of_label(logits, labels)
      if method.is_ogc:
        weights, ogc_state = weighting.update(p, state.ogc_state)
        loss = ogc_jax.weighted_base_loss(base_loss, p, weights)
      else:
        ogc_state = state.ogc_state
        loss = jnp.mean(method.fn(logits, labels))
      return loss, (logits, p, new_vars.get('batch_stats', {}), ogc_state)

    (loss, (logits, p, batch_stats, ogc_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    # Diagnostics from the true labels: never used for training.
    noisy = labels != true
    pred = jnp.argmax(logits, -1)
    batch_sums = {
        'count': jnp.float32(batch_size),
        'loss': loss * batch_size,
        'n_clean': jnp.sum(~noisy, dtype=jnp.float32),
        'n_noisy': jnp.sum(noisy, dtype=jnp.float32),
        'correct_clean': jnp.sum(~noisy & (pred == labels), dtype=jnp.float32),
        'correct_noisy': jnp.sum(noisy & (pred == labels), dtype=jnp.float32),
        'correct_noisy_true': jnp.sum(noisy & (pred == true), dtype=jnp.float32),
    }
    if method.is_ogc:
      g = ogc_jax.derivative_magnitude(
          base_loss, jnp.clip(p, ogc_jax.MIN_PROB, ogc_jax.MAX_PROB))
      g_after = jnp.minimum(g, ogc_state.tau)
      batch_sums.update({
          'grad_clean_before': jnp.sum(jnp.where(noisy, 0, g)),
          'grad_clean_after': jnp.sum(jnp.where(noisy, 0, g_after)),
          'grad_noisy_before': jnp.sum(jnp.where(noisy, g, 0)),
          'grad_noisy_after': jnp.sum(jnp.where(noisy, g_after, 0)),
          # OGC's own count of the step (a fraction of the valid examples).
          'clipped': ogc_state.clipped_fraction * batch_size,
      })
    sums = jax.tree_util.tree_map(lambda a, b: a + b, sums, batch_sums)
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state,
                              ogc_state=ogc_state)
    return new_state, sums

  def eval_step(state, images, labels, mask):
    x = augment.normalize(images.astype(jnp.float32), mean, std)
    logits = model.apply({'params': state.params,
                          'batch_stats': state.batch_stats}, x, train=False)
    correct = (jnp.argmax(logits, -1) == labels) & mask
    return jnp.sum(correct, dtype=jnp.float32)

  return train_step, eval_step


def train_steps(train_step, num_steps, state, sums, data, perm, rng):
  """``num_steps`` consecutive train steps as one compiled loop."""
  if num_steps == 1:
    return train_step(state, sums, data, perm, rng)
  return jax.lax.fori_loop(
      0, num_steps, lambda _, carry: train_step(*carry, data, perm, rng),
      (state, sums))


def zero_sums(is_ogc):
  keys = ['count', 'loss', 'n_clean', 'n_noisy', 'correct_clean',
          'correct_noisy', 'correct_noisy_true']
  if is_ogc:
    keys += ['grad_clean_before', 'grad_clean_after', 'grad_noisy_before',
             'grad_noisy_after', 'clipped']
  return {k: np.zeros([], np.float32) for k in keys}


# ---------------------------------------------------------------------------
# Files (the layout is `experiments.workdir`'s)


def _config_dict(config):
  return json.loads(config.to_json_best_effort())


def _gmm_dict(gmm):
  return {k: float(v) for k, v in gmm._asdict().items()}


def _prepare_workdir(workdir) -> str:
  """Creates ``workdir`` (absolute); one that cannot hold a run is an error."""
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f'workdir {workdir} is a file, not a folder.')
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):  # can we write there?
      pass
  except OSError as e:
    raise ConfigError(f'workdir {workdir} cannot be written: {e.strerror} '
                      f'({e.filename}).') from None
  return workdir


# ---------------------------------------------------------------------------
# Progress


class ProgressBar:
  """A tqdm bar of train steps on stderr whose ETA leaves out compilation.

  The first epoch a process runs also compiles the train steps and the
  evaluation, which can take longer than many epochs: timed with it, the bar
  would promise hours. So during that epoch the bar shows no rate or ETA, and
  at its end (its first `set_postfix`, after the evaluation) the bar's clock
  starts again: the rate and ETA come from compiled epochs only.

  It takes tqdm's ``update(n)``, ``set_postfix(**kwargs)`` and ``close()``.
  """

  _WARM_UP_FORMAT = ('{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<?, the '
                     'first epoch compiles{postfix}]')

  def __init__(self, total: int, done: int = 0):
    self._total = total
    self._warming_up = True
    self._bar = self._new_bar(done, bar_format=self._WARM_UP_FORMAT,
                              leave=False)

  def _new_bar(self, done, **kwargs):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    return tqdm(total=self._total, initial=done, unit='step',
                dynamic_ncols=True, file=sys.stderr, **kwargs)

  def update(self, num_steps: int) -> None:
    self._bar.update(num_steps)

  def set_postfix(self, **kwargs) -> None:
    if self._warming_up:  # the first epoch is done: time the bar from here
      done = self._bar.n
      self._bar.close()
      self._bar = self._new_bar(done)
      self._warming_up = False
    self._bar.set_postfix(**kwargs)

  def close(self) -> None:
    self._bar.close()


# ---------------------------------------------------------------------------
# Main loop


# Keys in which runs trained together (`train_and_evaluate_runs`) may differ:
# the seed and the label noise. Everything else, the method included, is
# shared, so the runs are one program over a leading run axis.
PACKABLE_KEYS = ('seed', 'noise', 'progress')


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains and evaluates one configuration; returns the result dict.

  Args:
    config: an ``ml_collections.ConfigDict`` like `configs/default.py`.
    workdir: where config, metrics, queues, checkpoints and the result go.
      A workdir with a finished run returns its result without training; an
      unfinished one resumes from its last checkpoint.

  Returns:
    The contents of ``result.json``.

  Raises:
    ConfigError: the configuration or the workdir cannot give this run
      (`validate_config`; a workdir that is a file, not writable, or holds
      another run; a batch larger than the data or not divisible by the
      devices). It is raised before any file is written, so the corrected
      call works in the same workdir.
  """
  return train_and_evaluate_runs([config], [workdir])[0]


def train_and_evaluate_runs(configs, workdirs) -> list:
  """Trains several runs together, packed on the same devices.

  The runs may differ only in `PACKABLE_KEYS` (seed and label noise): they
  share the data, model, method and schedule, and train as one compiled
  program over a leading run axis (``jax.vmap`` over parameters, optimizer
  and OGC states, labels, permutations and augmentation keys), so one
  accelerator is kept busy by several small runs. Each run keeps its own
  workdir, written exactly as `train_and_evaluate` writes it, and its
  metrics equal those of the run trained alone to float tolerance. Finished
  runs are skipped; runs that stopped at different epochs resume in groups.

  Args:
    configs: the runs' configs.
    workdirs: one workdir per config.

  Returns:
    The runs' ``result.json`` contents, in the order of ``configs``.
  """
  if len(configs) != len(workdirs):
    raise ValueError(f'{len(configs)} configs but {len(workdirs)} workdirs.')
  if not configs:
    return []
  workdirs = [os.path.abspath(w) for w in workdirs]
  if len(set(workdirs)) != len(workdirs):
    raise ValueError(f'Packed runs need distinct workdirs, got {workdirs}.')
  first = _config_dict(configs[0])
  for config in configs[1:]:
    differ = workdir_lib.differing_keys(first, _config_dict(config),
                                        ignore=PACKABLE_KEYS)
    if differ:
      raise ValueError(
          f'Packed runs may differ only in {list(PACKABLE_KEYS)}; these differ '
          f'in {differ}.')
  initialize_distributed(configs[0])  # before any JAX computation
  for config in configs:
    validate_config(config)
  workdirs = [_prepare_workdir(w) for w in workdirs]
  results = [None] * len(configs)
  todo = []
  for i, (config, workdir) in enumerate(zip(configs, workdirs)):
    # A workdir holds one run: another run's is refused before the data is
    # loaded, and this run claims it (writes config.json) only once the data
    # has passed its checks (`_train_runs`).
    if workdir_lib.config_path(workdir).exists():
      try:
        workdir_lib.check_config(workdir, _config_dict(config))
      except ValueError as e:
        raise ConfigError(str(e)) from None
    results[i] = workdir_lib.read_result(workdir)
    if results[i] is None:
      todo.append(i)
  # Runs resume together only from the same epoch.
  by_epoch = {}
  for i in todo:
    by_epoch.setdefault(_latest_checkpoint(workdirs[i]), []).append(i)
  for group in by_epoch.values():
    trained = _train_runs([configs[i] for i in group],
                          [workdirs[i] for i in group])
    for i, result in zip(group, trained):
      results[i] = result
  return results


_DISTRIBUTED_KEYS = ('coordinator_address', 'num_processes', 'process_id')


def initialize_distributed(config) -> None:
  """``jax.distributed.initialize`` for ``config.distributed``, once.

  Passes the keys of `_DISTRIBUTED_KEYS` that are set; JAX detects the
  others on Cloud TPU, SLURM, Open MPI and Kubernetes, and reads
  JAX_COORDINATOR_ADDRESS. A failure is a one-line `ConfigError`.
  """
  if not config.distributed or jax.distributed.is_initialized():
    return
  kwargs = {k: config[k] for k in _DISTRIBUTED_KEYS if config[k] is not None}
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, RuntimeError) as e:
    reason = ' '.join(str(e).split())
    raise ConfigError(
        f'config.distributed: jax.distributed.initialize({kwargs}) failed: '
        f'{reason[:300]}; outside Cloud TPU, SLURM, Open MPI or Kubernetes '
        'set --config.coordinator_address, --config.num_processes and '
        '--config.process_id.') from None


def _checkpoint_manager(workdir):
  return ocp.CheckpointManager(
      workdir_lib.checkpoints_dir(workdir), options=ocp.CheckpointManagerOptions(
          max_to_keep=2, create=True, enable_async_checkpointing=False))


def _latest_checkpoint(workdir) -> int:
  if not workdir_lib.checkpoints_dir(workdir).exists():
    return 0
  return _checkpoint_manager(workdir).latest_step() or 0


def _train_runs(configs, workdirs) -> list:
  """Trains unfinished runs that share everything but `PACKABLE_KEYS`."""
  config = configs[0]  # what the runs share
  num_runs = len(configs)
  packed = num_runs > 1
  is_main = jax.process_index() == 0

  method = Method(config)
  loaded = [load_data(c) for c in configs]
  dataset, images = loaded[0][:2]
  for other in loaded[1:]:
    if other[1].shape != images.shape or not np.array_equal(other[1], images):
      raise ValueError('Packed runs must train on the same images.')
  noises = [l[4] for l in loaded]
  num_train = len(loaded[0][2])
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise ConfigError(
        f'config.batch_size={config.batch_size} exceeds the {num_train} '
        f'training images of {config.dataset!r}; expected at most '
        f'{num_train}.')

  def host_stack(values):
    """Per-run host values: stacked on a leading run axis when packed."""
    return np.stack(values) if packed else values[0]

  given = host_stack([l[2] for l in loaded])
  true = host_stack([l[3] for l in loaded])

  devices = jax.devices()
  if config.num_devices > len(devices):
    raise ConfigError(f'config.num_devices={config.num_devices}, but JAX '
                      f'sees {len(devices)} device(s); expected at most '
                      f'{len(devices)} (0: all).')
  if config.num_devices:
    devices = devices[:config.num_devices]
  if config.batch_size % len(devices):
    raise ConfigError(f'config.batch_size={config.batch_size} is not '
                      f'divisible by the {len(devices)} devices.')
  for c, workdir in zip(configs, workdirs):  # the runs claim their workdirs
    if is_main:  # process 0 writes every file of the workdir
      workdir_lib.check_config(workdir, _config_dict(c))
  mesh = Mesh(np.array(devices), ('data',))
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P('data'))

  def put(x, sharding=replicated):
    """A global array from a host value every process holds in full.

    Unlike ``jax.device_put``, this also works when the mesh spans hosts.
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

  data = tuple(put(a) for a in (images, given, true))
  test_images = np.asarray(dataset.test_images)
  test_labels = np.asarray(dataset.test_labels)
  mean, std = dataset.channel_mean_std

  model = models.create_model(config.model, dataset.num_classes,
                              dtype=jnp.dtype(config.dtype))
  schedule = learning_rate_schedule(config, steps_per_epoch)
  tx = create_optimizer(config, schedule)
  weighting = make_weighting(config, method, schedule)
  train_step, eval_step = make_steps(config, model, method, weighting, tx,
                                     mean, std, data_sharding, num_train)
  if packed:  # the images are shared; labels, states and keys are per run
    train_step = jax.vmap(train_step, in_axes=(0, 0, (None, 0, 0), 0, 0))
    eval_step = jax.vmap(eval_step, in_axes=(0, None, None, None))

  keys = [jax.random.split(jax.random.key(c.seed), 3) for c in configs]
  init_rng, data_rng, aug_rng = (
      [k[j] for k in keys] for j in range(3))

  def init_state(rng):
    variables = model.init(rng, jnp.zeros((1,) + images.shape[1:]),
                           train=False)
    params = variables['params']
    ogc_state = weighting.init() if method.is_ogc else {}
    return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(params), ogc_state=ogc_state)

  state = jax.jit(jax.vmap(init_state) if packed else init_state,
                  out_shardings=replicated)(
                      jnp.stack(init_rng) if packed else init_rng[0])
  # Many steps per dispatch: the data already lives on the devices, so a
  # chunk of steps is one compiled loop and Python is paid once per chunk.
  chunk = config.steps_per_dispatch or steps_per_epoch
  chunk = min(chunk, steps_per_epoch)
  jit_chunks = {}

  def run_steps(state, sums, perm, rng, num_steps):
    if num_steps not in jit_chunks:
      jit_chunks[num_steps] = jax.jit(
          functools.partial(train_steps, train_step, num_steps),
          donate_argnums=(0, 1), out_shardings=(replicated, replicated))
    return jit_chunks[num_steps](state, sums, data, perm, rng)
  jit_eval = jax.jit(eval_step)

  def run_slice(tree, r):
    return jax.tree_util.tree_map(lambda x: x[r], tree) if packed else tree

  managers = [_checkpoint_manager(w) for w in workdirs]
  start_epoch = managers[0].latest_step() or 0
  if start_epoch:
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                      run_slice(state, 0))
    restored = [m.restore(start_epoch, args=ocp.args.StandardRestore(abstract))
                for m in managers]
    state = (jax.tree_util.tree_map(lambda *x: put(np.stack(x)), *restored)
             if packed else restored[0])
  histories = [workdir_lib.read_metrics(w, up_to_epoch=start_epoch)
               for w in workdirs]
  if is_main:
    for workdir, history in zip(workdirs, histories):
      workdir_lib.write_metrics(workdir, history)
  wall_start = time.time() - sum(r.get('epoch_time_s', 0.0)
                                 for r in histories[0])

  eval_bs = min(config.eval_batch_size, len(test_labels))
  eval_bs -= eval_bs % len(devices)

  def evaluate(state):
    """Test accuracy of each run."""
    correct = 0.0
    for i in range(0, len(test_labels), eval_bs):
      x = test_images[i:i + eval_bs]
      y = test_labels[i:i + eval_bs]
      mask = np.ones(eval_bs, bool)
      if len(y) < eval_bs:  # pad the last chunk to keep one compiled shape
        pad = eval_bs - len(y)
        mask[len(y):] = False
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
        y = np.concatenate([y, np.zeros(pad, y.dtype)])
      correct += np.asarray(jit_eval(state, put(x, data_sharding),
                                     put(y, data_sharding),
                                     put(mask, data_sharding)), np.float64)
    return list(np.atleast_1d(correct / len(test_labels)).tolist())

  progress = None
  if config.progress and is_main:
    progress = ProgressBar(total=config.num_epochs * steps_per_epoch,
                           done=start_epoch * steps_per_epoch)

  for epoch in range(start_epoch + 1, config.num_epochs + 1):
    epoch_start = time.time()
    perm = put(host_stack([
        jax.device_get(jax.random.permutation(
            jax.random.fold_in(k, epoch), num_train)) for k in data_rng]))
    rng = [jax.random.fold_in(k, epoch) for k in aug_rng]
    rng = jnp.stack(rng) if packed else rng[0]
    sums = jax.tree_util.tree_map(lambda x: put(host_stack([x] * num_runs)),
                                  zero_sums(method.is_ogc))
    for first in range(0, steps_per_epoch, chunk):
      num_steps = min(chunk, steps_per_epoch - first)
      state, sums = run_steps(state, sums, perm, rng, num_steps)
      if progress is not None:
        progress.update(num_steps)
    sums = jax.device_get(sums)
    train_time = time.time() - epoch_start
    test_accuracy = evaluate(state)
    lr = float(schedule(int(np.ravel(jax.device_get(state.step))[0]) - 1))
    ogc_states = jax.device_get(state.ogc_state) if method.is_ogc else None
    epoch_time = time.time() - epoch_start
    for r, (workdir, history) in enumerate(zip(workdirs, histories)):
      row = _epoch_row(
          epoch, test_accuracy[r], lr, run_slice(sums, r), noises[r],
          run_slice(ogc_states, r) if method.is_ogc else None,
          train_time, steps_per_epoch, config.batch_size)
      row['epoch_time_s'] = epoch_time
      history.append(row)
      if method.is_ogc and config.save_queues and is_main:
        _save_queue(workdir, epoch, run_slice(ogc_states, r))
      # Metrics first, then the checkpoint: a run killed in between redoes
      # this epoch, and read_metrics(up_to_epoch=...) drops the line written
      # for it.
      if is_main:
        workdir_lib.write_metrics(workdir, history)
    if epoch % config.checkpoint_every == 0 or epoch == config.num_epochs:
      for r, manager in enumerate(managers):
        manager.save(epoch, args=ocp.args.StandardSave(run_slice(state, r)))
    if progress is not None:
      row = histories[0][-1]
      progress.set_postfix(epoch=epoch, loss=f"{row['loss']:.3f}",
                           test=f'{row["test_accuracy"]:.3f}',
                           tau=None if row['tau'] is None else f"{row['tau']:.3g}")
  for manager in managers:
    manager.wait_until_finished()
  if progress is not None:
    progress.close()

  results = []
  for config, workdir, history, noise in zip(configs, workdirs, histories,
                                             noises):
    accuracies = [r['test_accuracy'] for r in history]
    result = {
        'final_test_accuracy': float(np.mean(accuracies[-config.final_epochs:])),
        'best_test_accuracy': float(np.max(accuracies)),
        'last_test_accuracy': float(accuracies[-1]),
        'num_epochs': config.num_epochs,
        'true_noise_rate': float(noise.noise_rate),
        'transition_matrix': noise.transition_matrix.tolist(),
        'wall_time_s': time.time() - wall_start,
        'devices': len(devices),
        'packed_runs': num_runs,
        'config': _config_dict(config),
    }
    if is_main:
      workdir_lib.write_result(workdir, result)
    results.append(result)
  return results


def _epoch_row(epoch, test_accuracy, lr, sums, noise, ogc_state, train_time,
               steps_per_epoch, batch_size):
  """One run's line of metrics.jsonl."""
  row = {
      'epoch': epoch,
      'test_accuracy': test_accuracy,
      'loss': sums['loss'] / sums['count'],
      'learning_rate': lr,
      'train_accuracy_clean': sums['correct_clean'] / max(sums['n_clean'], 1),
      'train_accuracy_noisy': (sums['correct_noisy'] / sums['n_noisy']
                               if sums['n_noisy'] else None),
      'train_accuracy_noisy_true': (sums['correct_noisy_true'] / sums['n_noisy']
                                    if sums['n_noisy'] else None),
      'true_noise_rate': float(noise.noise_rate),
      'step_time_ms': 1000 * train_time / steps_per_epoch,
      'images_per_second': steps_per_epoch * batch_size / train_time,
      'tau': None, 'p_threshold': None, 'gmm': None,
      'estimated_noise_rate': None, 'clipped_fraction': None,
      'grad_clean_before': None, 'grad_clean_after': None,
      'grad_noisy_before': None, 'grad_noisy_after': None,
  }
  if ogc_state is not None:
    o = ogc_state
    fitted = int(o.num_threshold_updates) > 0
    n_clean, n_noisy = max(sums['n_clean'], 1), max(sums['n_noisy'], 1)
    row.update({
        'tau': float(o.tau), 'p_threshold': float(o.p_threshold),
        'gmm': _gmm_dict(o.gmm) if fitted else None,
        'estimated_noise_rate': float(o.gmm.weight_noisy) if fitted else None,
        'noise_to_clean_ratio': float(o.noise_to_clean_ratio),
        'num_threshold_updates': int(o.num_threshold_updates),
        'num_invalid': int(o.num_invalid),
        'clipped_fraction': sums['clipped'] / sums['count'],
        'grad_clean_before': sums['grad_clean_before'] / n_clean,
        'grad_clean_after': sums['grad_clean_after'] / n_clean,
        'grad_noisy_before': sums['grad_noisy_before'] / n_noisy,
        'grad_noisy_after': sums['grad_noisy_after'] / n_noisy,
    })
  return {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v)
          for k, v in row.items()}


def _save_queue(workdir, epoch, ogc_state):
  """The queue of H in the order it was filled, oldest first."""
  if not int(ogc_state.queue_count):
    return
  queue = np.roll(np.asarray(ogc_state.queue), -int(ogc_state.queue_index))
  if int(ogc_state.queue_count) < len(queue):
    queue = np.asarray(ogc_state.queue)[:int(ogc_state.queue_count)]
  workdir_lib.save_queue(workdir, epoch, queue)


# ---------------------------------------------------------------------------
# Command line

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), 'configs',
                               'digits.py')
_HELP_FLAGS = re.compile(r'--?(\?|help|helpshort|helpfull)(=.*)?')


def _define_flags(flag_values=flags.FLAGS):
  """--config and --workdir.

  Defining --config loads its default file with the ``--config.KEY=VALUE``
  overrides of ``sys.argv``, so a key the file lacks fails here.
  """
  config_flags.DEFINE_config_file(
      'config', _DEFAULT_CONFIG,
      'Training configuration (a Python file with get_config()); '
      '--config.KEY=VALUE sets one of the keys listed above.',
      flag_values=flag_values, lock_config=True)
  flags.DEFINE_string(
      'workdir', 'runs/digits_default', 'Where metrics, checkpoints and the '
      'result go; rerunning the same command resumes.',
      flag_values=flag_values)


def _format_value(value):
  return repr(tuple(value) if isinstance(value, list) else value)


def _usage_text(argv) -> str:
  """The module docstring and every configuration key, for ``--help``.

  Each key is listed with its value in the config ``argv`` names (with its
  overrides) and its line of `experiments.configs.default.HELP`.
  """
  flag_values = flags.FlagValues()
  _define_flags(flag_values)
  flag_values(argv, known_only=True)
  values = dict(_flat_items(flag_values.config))
  config_file = flag_values['config'].config_filename
  lines = [__doc__.rstrip(), '', textwrap.fill(
      f'Configuration keys, with their values in {config_file} and the '
      'overrides given; --config.KEY=VALUE sets one:', width=80)]
  for key in list(default_config.HELP) + sorted(set(values) -
                                                set(default_config.HELP)):
    lines.append(textwrap.fill(
        f'--config.{key}: {default_config.HELP.get(key, "")}', width=80,
        initial_indent='  ', subsequent_indent='    '))
    lines.append(f'    (default: {_format_value(values.get(key))})')
  return '\n'.join(lines) + '\n'


def _override_error(error, argv) -> str:
  """One line for a ``--config.KEY=VALUE`` whose KEY the config lacks."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]  # ml_collections wraps its KeyError
  text = str(error.args[0]) if error.args else str(error)
  first, _, hint = text.partition('\n')
  if not re.fullmatch(r"'[^']*'", first):
    return ' '.join(text.split())
  # ml_collections: "'nosie'\nDid you mean "noise" instead of "nosie"?"
  name = first[1:-1]
  flag = [arg.split('=')[0] for arg in argv
          if arg.lstrip('-').startswith('config.')
          and name in arg.split('=')[0].split('.')[1:]]
  where = f'{flag[-1]}: ' if flag else ''
  return (f'{where}the configuration has no key {name!r}. '
          f'{hint or "--help lists the keys."}')


def _parse_flags(argv):
  """Defines and parses the flags; a bad --config or key is one line."""
  if any(_HELP_FLAGS.fullmatch(arg) for arg in argv[1:]):
    text = __doc__
    try:
      text = _usage_text(argv)
    except Exception:  # pylint: disable=broad-except
      pass  # a bad --config or override: the docstring alone
    # absl prints __main__'s docstring with %-formatting: escape the %.
    sys.modules['__main__'].__doc__ = text.replace('%', '%%')
  try:
    _define_flags()
    argv = app.parse_flags_with_usage(argv)
    if not isinstance(flags.FLAGS.config, ml_collections.ConfigDict):
      flags.FLAGS.config.lock()  # raises why config_flags could not load it
  except OSError as e:  # the --config file cannot be loaded
    sys.exit(f'error: --config: {str(e).splitlines()[-1].strip()}')
  except (KeyError, AttributeError) as e:
    if not any(arg.lstrip('-').startswith('config.') for arg in argv):
      raise  # not an override: a bug worth its traceback
    sys.exit(f'error: {_override_error(e, argv)}')
  return argv


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}; the flags are '
             '--config, --workdir and --config.KEY=VALUE (see --help).')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  try:
    result = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  except ConfigError as e:
    sys.exit(f'error: {e}')
  if jax.process_index() == 0:
    print(json.dumps({k: result[k] for k in (
        'final_test_accuracy', 'best_test_accuracy', 'wall_time_s')},
                     indent=2))


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
