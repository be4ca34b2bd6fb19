"""scikit-learn's bundled 8x8 digits: the default dataset, no download."""

import numpy as np

from experiments.data.dataset import Dataset


def load_digits(test_fraction=0.2, seed=0) -> Dataset:
  """scikit-learn's bundled digits with a fixed, stratified train/test split.

  Args:
    test_fraction: fraction of the 1,797 images held out for testing.
    seed: ``random_state`` of `sklearn.model_selection.train_test_split`.

  Returns:
    A `Dataset` of 8x8x1 images, the 0..16 intensities rescaled to 0..255.

  Example:
    >>> from experiments import data
    >>> ds = data.load_digits()
    >>> ds.train_images.shape, ds.test_images.shape
    ((1437, 8, 8, 1), (360, 8, 8, 1))
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top

  if not 0.0 < test_fraction < 1.0:
    raise ValueError(
        f'test_fraction must lie in (0, 1), got {test_fraction}.')
  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  train_index, test_index = model_selection.train_test_split(
      np.arange(len(labels)), test_size=test_fraction, stratify=labels,
      random_state=seed)
  return Dataset(
      name='digits',
      train_images=images[train_index],
      train_labels=labels[train_index],
      test_images=images[test_index],
      test_labels=labels[test_index],
      num_classes=10,
      class_names=tuple(str(c) for c in range(10)),
  )
