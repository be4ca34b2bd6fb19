"""The `Dataset` every source returns, and `DataError`, what each raises."""

import dataclasses
import functools

import numpy as np

from experiments.errors import ConfigError


class DataError(ConfigError):
  """Data that a config names and that is missing or cannot be read.

  The message names what is missing and the command that prepares it; the
  command line prints it as one line (a `ConfigError`).
  """


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A decoded image classification dataset, held in host memory.

  Attributes:
    name: where the data came from (``'digits'``, a TFDS name, a folder).
    train_images: uint8 ``[n, H, W, C]``.
    train_labels: int32 ``[n]``, the labels as the source gives them; for
      CIFAR-N the chosen noisy label key, for a labels CSV its labels.
    test_images: uint8 ``[m, H, W, C]``.
    test_labels: int32 ``[m]``, clean labels.
    num_classes: number of classes; labels lie in ``[0, num_classes)``.
    class_names: ``num_classes`` names, in label order.
    train_clean_labels: int32 ``[n]`` true labels where the source has them
      apart from ``train_labels`` (CIFAR-N's ``'label'``, the folder labels
      under a labels CSV), else None.
  """
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]
  train_clean_labels: np.ndarray | None = None

  def __post_init__(self):
    if len(self.class_names) != self.num_classes:
      raise ValueError(
          f'{self.name}: {len(self.class_names)} class_names for '
          f'num_classes={self.num_classes}.')
    for split in ('train', 'test'):
      images = getattr(self, f'{split}_images')
      labels = getattr(self, f'{split}_labels')
      _check_images(f'{self.name}: {split}_images', images)
      _check_labels(f'{self.name}: {split}_labels', labels, len(images),
                    self.num_classes)
    if self.train_images.shape[1:] != self.test_images.shape[1:]:
      raise ValueError(
          f'{self.name}: train images have shape {self.train_images.shape[1:]}'
          f' but test images {self.test_images.shape[1:]}.')
    if self.train_clean_labels is not None:
      _check_labels(f'{self.name}: train_clean_labels',
                    self.train_clean_labels, len(self.train_images),
                    self.num_classes)

  @functools.cached_property
  def channel_mean_std(self) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the train images on the 0..1 scale.

    Computed exactly from per-channel histograms of the uint8 values, so no
    float copy of the images is made.

    Returns:
      ``(mean, std)``, float32 arrays of shape ``[C]``, for
      `experiments.augment.normalize`.
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for channel in range(self.train_images.shape[-1]):
      counts = np.bincount(
          self.train_images[..., channel].ravel(), minlength=256)
      mean = counts @ values / counts.sum()
      means.append(mean)
      stds.append(np.sqrt(counts @ (values - mean)**2 / counts.sum()))
    return np.array(means, np.float32), np.array(stds, np.float32)


def _check_images(what, images):
  if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
    raise ValueError(f'{what} must be a uint8 numpy array, got '
                     f'{type(images).__name__} {getattr(images, "dtype", "")}.')
  if images.ndim != 4:
    raise ValueError(f'{what} must have shape [n, H, W, C], got '
                     f'{images.shape}.')


def _check_labels(what, labels, n, num_classes):
  if not isinstance(labels, np.ndarray) or labels.dtype != np.int32:
    raise ValueError(f'{what} must be an int32 numpy array, got '
                     f'{type(labels).__name__} {getattr(labels, "dtype", "")}.')
  if labels.shape != (n,):
    raise ValueError(f'{what} must have shape ({n},), got {labels.shape}.')
  if n and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
        f'{what} must lie in [0, {num_classes}), got values in '
        f'[{labels.min()}, {labels.max()}].')
