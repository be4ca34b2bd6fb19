"""A run's data: the dataset of its config, with the training labels it uses.

`load_data` loads the dataset `experiments.data` names, cuts it to the
config's subsets, corrupts the training labels as ``config.noise`` asks
(`experiments.noise`) and, with ``config.holdout.folds``, holds one fold of
the training examples out (`holdout_folds`); `check_dataset` and
`check_holdout` check the data keys of a config without loading anything.
"""

import dataclasses
import os
from typing import NamedTuple

import numpy as np

from experiments import config_lib
from experiments import data as data_lib
from experiments import noise as noise_lib
from experiments.errors import ConfigError

_DATASET_CHOICES = (
    "'digits', 'cifar10_jpeg' (CIFAR-10 as an image folder), 'folder:PATH' (an "
    'image folder: PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg) or a '
    "TFDS name such as 'cifar10', 'cifar100', 'mnist', 'cifar10_n' (prepared "
    "once in DIR by tfds.builder(NAME, data_dir=DIR, file_format="
    "'array_record').download_and_prepare(), then --config.data_dir=DIR)")


class Examples(NamedTuple):
  """Training examples held out of a run (`Data.heldout`).

  Attributes:
    indices: ``[n]``, their positions in the dataset's training split.
    images: uint8 ``[n, H, W, C]``.
    labels: int32 ``[n]``, their given (noisy) labels.
    true_labels: ``[n]``, their true labels (diagnostics only).
  """
  indices: np.ndarray
  images: np.ndarray
  labels: np.ndarray
  true_labels: np.ndarray


class Data(NamedTuple):
  """The data of a run (`load_data`).

  Attributes:
    dataset: the `experiments.data.Dataset`, its test split cut to
      ``config.test_subset``.
    images: uint8 ``[n, H, W, C]`` training images, cut to
      ``config.train_subset``, without the held-out fold.
    labels: int32 ``[n]``, the labels trained on (noisy).
    true_labels: ``[n]``, the true labels (diagnostics only).
    noise: the `experiments.noise.NoisyLabels` of the training labels
      before a fold is held out.
    indices: ``[n]``, each example's position in the dataset's training
      split (``dataset.train_images``).
    true_labels_known: whether ``true_labels`` are known apart from the
      given labels (synthetic noise, or data that brings both); if not they
      are the given labels.
    folder: for an image folder, its root: the images are
      ``experiments.data.folders.train_files(folder)[i]`` for ``i`` in
      ``indices``; else None.
    heldout: the held-out fold (``config.holdout``), or None.
  """
  dataset: data_lib.Dataset
  images: np.ndarray
  labels: np.ndarray
  true_labels: np.ndarray
  noise: noise_lib.NoisyLabels
  indices: np.ndarray
  true_labels_known: bool
  folder: str | None = None
  heldout: Examples | None = None


def check_dataset(config) -> data_lib.DatasetName:
  """The dataset's name, its label options and its noise, without loading it.

  Returns:
    The name as `experiments.data.parse_dataset_name` reads it.

  Raises:
    ConfigError: an unknown dataset, a label option it does not take, or
      noise added to data that brings its own noisy labels.
  """
  name, label_key, labels_csv = (config.dataset, config.label_key,
                                 config.labels_csv)
  parsed = data_lib.parse_dataset_name(name)
  folder, tfds_base = parsed.folder, parsed.tfds_base
  if parsed.kind == 'tfds':
    # TFDS: 'cifar10', 'cifar10_n:1.0.4', 'imagenet2012/subset'. Its registry
    # is a cheap lookup; a name it lacks may still be prepared in data_dir.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    registered = tfds.list_builders(with_community_datasets=False)
    if tfds_base not in registered and not (
        config.data_dir and os.path.isdir(os.path.join(config.data_dir,
                                                       tfds_base))):
      hint = config_lib.did_you_mean(
          name, list(data_lib.OWN_DATASETS) + list(registered))
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
    if parsed.kind not in ('folder', 'cifar10_jpeg'):
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
  return parsed


def check_holdout(config) -> None:
  """``config.holdout``: no folds (0), or at least 2 and a fold among them.

  Raises:
    ConfigError: the folds or the fold are out of range.
  """
  folds, fold = config.holdout.folds, config.holdout.fold
  if folds == 1 or folds < 0:
    raise ConfigError(f'config.holdout.folds={folds!r}; expected 0 (no fold '
                      'held out) or an integer >= 2.')
  if folds and not 0 <= fold < folds:
    raise ConfigError(f'config.holdout.fold={fold!r}; expected an integer in '
                      f'[0, {folds}), one of config.holdout.folds={folds}.')
  if not folds and fold != 0:
    raise ConfigError(f'config.holdout.fold={fold!r} without '
                      'config.holdout.folds; expected 0.')


def holdout_folds(config, labels: np.ndarray, noise_seed=None) -> np.ndarray:
  """The fold of each training example, 0 .. ``config.holdout.folds`` - 1.

  Stratified by the given label, as scikit-learn's ``StratifiedKFold``
  (which cleanlab's cross-validation uses): the examples of each given
  label, in a random order, then the next label's, are dealt to the folds
  in turn, so every fold holds each label's examples to within one. The
  order is drawn from ``np.random.default_rng([seed, noise seed])``, the
  run's seed and its noise's (`experiments.noise.settings`): the same for
  every fold of a run's configuration, whatever ``config.holdout.fold``.

  Args:
    config: the run's config (``holdout.folds``, ``seed``, ``noise``).
    labels: the given training labels, after the noise.
    noise_seed: the noise settings' seed, where the caller has them (None:
      from ``config``).

  Raises:
    ConfigError: fewer training examples than folds.
  """
  folds = config.holdout.folds
  if len(labels) < folds:
    raise ConfigError(f'config.holdout.folds={folds} exceeds the '
                      f'{len(labels)} training images.')
  if noise_seed is None:
    noise_seed = noise_lib.settings(config).seed
  rng = np.random.default_rng([config.seed, noise_seed])
  order = np.concatenate([rng.permutation(np.flatnonzero(labels == label))
                          for label in np.unique(labels)])
  fold = np.empty(len(labels), np.int64)
  fold[order] = np.arange(len(labels)) % folds
  return fold


def load_data(config, plan=None) -> Data:
  """The dataset with training labels corrupted as the config asks.

  The noise follows `experiments.noise.settings`. Data that brings its own
  noisy labels is not corrupted further (`check_dataset` refuses added
  noise); its noise is measured against the true labels. With
  ``config.holdout.folds``, the fold ``config.holdout.fold`` of
  `holdout_folds` is held out after the noise: every fold's run trains on
  the same noisy labels.

  Args:
    config: the run's config.
    plan: the `experiments.validate.Plan` of ``config`` where the caller
      validated it (its dataset name and noise settings are used as they
      are); None checks them here.

  Raises:
    ConfigError: `check_dataset`, `check_holdout` or
      `experiments.noise.settings` refuses the config.
  """
  if plan is None:
    dataset_name, noise_settings = check_dataset(config), noise_lib.settings(
        config)
    check_holdout(config)
  else:
    dataset_name, noise_settings = plan.dataset, plan.noise
  cache_dir = config.cache_dir or os.path.join(
      os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')),
      'ogc_jax')
  dataset = data_lib.load_dataset(
      config.dataset, data_dir=config.data_dir, label_key=config.label_key,
      labels_csv=config.labels_csv, cache_dir=cache_dir)
  images, labels = dataset.train_images, dataset.train_labels
  true = (dataset.train_clean_labels if dataset.train_clean_labels is not None
          else labels)
  indices = np.arange(len(labels))
  if config.train_subset:
    # A fixed random subset (the same for every seed and method): folders
    # list images class by class, so a prefix would hold few classes.
    indices = np.sort(np.random.default_rng(0).permutation(len(labels))[
        :config.train_subset])
    images, labels, true = images[indices], labels[indices], true[indices]
  if config.test_subset:
    keep = np.sort(np.random.default_rng(1).permutation(
        len(dataset.test_labels))[:config.test_subset])
    dataset = dataclasses.replace(dataset, test_images=dataset.test_images[keep],
                                  test_labels=dataset.test_labels[keep])
  if dataset.train_clean_labels is not None:
    # The noise came with the data: report what it is against the true labels.
    noise = noise_lib.realised_noise(true, labels, dataset.num_classes)
  else:
    noise = noise_lib.corrupt(noise_settings, labels, dataset.num_classes,
                              features=images)
  known = (dataset.train_clean_labels is not None
           or noise_settings.kind != 'none')
  folder = (dataset.name if dataset_name.kind in ('folder', 'cifar10_jpeg')
            else None)
  data = Data(dataset, images, noise.labels, true, noise, indices, known,
              folder)
  if not config.holdout.folds:
    return data
  out = holdout_folds(config, noise.labels,
                      noise_settings.seed) == config.holdout.fold
  return data._replace(
      images=images[~out], labels=noise.labels[~out], true_labels=true[~out],
      indices=indices[~out],
      heldout=Examples(indices[out], images[out], noise.labels[out],
                       true[out]))


def steps_per_epoch(config, num_train: int, images: str) -> int:
  """Full batches an epoch; a batch larger than the ``images`` is an error."""
  if config.batch_size > num_train:
    raise ConfigError(f'config.batch_size={config.batch_size} exceeds '
                      f'{images}; expected at most {num_train}.')
  return num_train // config.batch_size
