"""Datasets for the OGC experiments, decoded into host memory.

Every source gives the same `Dataset` of uint8 arrays (`dataset.py`):

* `load_digits` (`digits.py`): scikit-learn's bundled 8x8 digits, the
  default; no download.
* `load_tfds` (`tfds.py`): a TFDS dataset prepared in the ``array_record``
  format, including the real-world noisy-label sets ``cifar10_n`` and
  ``cifar100_n``; that module says how to prepare them.
* `load_image_folder` (`folders.py`): ``root/{train,test}/<class>/*.jpg``,
  with an optional CSV of ``path,label`` rows replacing the folder labels.
* `prepare_cifar10_jpeg` (`cifar10_folder.py`): CIFAR-10 as an image folder
  (``cifar10_jpeg``), checked by its layout and counts, extracted once from an
  archive if need be; ``python -m experiments.data.make_image_folder`` builds
  it from TFDS or the original python batches.

Every source raises `DataError` (a `experiments.errors.ConfigError`) for data
that is missing or cannot be read, naming the command that prepares it.

`load_dataset` picks the source by name and keeps the decoded arrays in an
``.npz`` cache (`cache.py`), so a second run does not decode again. The whole
dataset then fits in device memory; augmentation runs on device
(`experiments.augment`).
"""

import functools
import os
import tempfile
from typing import NamedTuple, Optional

from experiments.data import cache
from experiments.data import folders
from experiments.data import tfds as tfds_lib
from experiments.data.cifar10_folder import prepare_cifar10_jpeg
from experiments.data.dataset import DataError
from experiments.data.dataset import Dataset
from experiments.data.digits import load_digits
from experiments.data.folders import load_image_folder
from experiments.data.tfds import CIFAR_N_LABEL_KEYS
from experiments.data.tfds import load_tfds

__all__ = (
    'CIFAR_N_LABEL_KEYS',
    'DataError',
    'Dataset',
    'DatasetName',
    'OWN_DATASETS',
    'load_dataset',
    'load_digits',
    'load_image_folder',
    'load_tfds',
    'prepare_cifar10_jpeg',
    'parse_dataset_name',
)

# The datasets `load_dataset` knows by name (others are folders or TFDS's).
OWN_DATASETS = ('digits', 'cifar10_jpeg')


class DatasetName(NamedTuple):
  """What a dataset name names (`parse_dataset_name`).

  Attributes:
    kind: ``'digits'``, ``'cifar10_jpeg'``, ``'folder'`` or ``'tfds'``.
    folder: for ``'folder'``, the image folder's path as named.
    tfds_base: for ``'tfds'``, the builder's name without version or
      config (``'cifar10_n'`` of ``'cifar10_n:1.0.4'``).
  """
  kind: str
  folder: Optional[str] = None
  tfds_base: Optional[str] = None


def parse_dataset_name(name) -> DatasetName:
  """The one reading of a dataset name, for the loader and the checks.

  ``'digits'`` and ``'cifar10_jpeg'`` are this package's; ``'folder:PATH'``,
  or a ``PATH`` holding a path separator that is an existing folder, is an
  image folder; anything else is a TFDS name.

  Example:
    >>> parse_dataset_name('folder:/data/cifar')
    DatasetName(kind='folder', folder='/data/cifar', tfds_base=None)
    >>> parse_dataset_name('cifar10_n:1.0.4').tfds_base
    'cifar10_n'
  """
  name = os.fspath(name)
  if name in OWN_DATASETS:
    return DatasetName(name)
  if name.startswith('folder:'):
    return DatasetName('folder', folder=name[len('folder:'):])
  if os.sep in name and os.path.isdir(name):
    return DatasetName('folder', folder=name)
  return DatasetName('tfds', tfds_base=name.split(':')[0].split('/')[0])


def load_dataset(name, *, data_dir=None, label_key=None, labels_csv=None,
                 cache_dir=None) -> Dataset:
  """Loads a dataset by name, from a ``.npz`` cache when one is valid.

  Names:
    * ``'digits'``: `load_digits` with its defaults.
    * ``'cifar10_jpeg'``: CIFAR-10 as an image folder at
      ``data_dir/cifar10-jpeg`` (``data_dir`` defaulting to ``ogc_jax_data``
      in the system's temporary folder), extracted there from an archive if
      need be (`prepare_cifar10_jpeg`), then `load_image_folder`.
    * ``'folder:PATH'``, or a ``PATH`` containing a path separator that is an
      existing folder: `load_image_folder`.
    * anything else: `load_tfds`.

  The cache key covers the source (name, folder or TFDS data folder: file
  names, sizes and modification times), ``label_key`` and ``labels_csv``, so
  adding or changing a file decodes again.

  Args:
    name: see above.
    data_dir: TFDS data directory, or the folder holding ``cifar10-jpeg/``
      for ``'cifar10_jpeg'``.
    label_key: training label key for TFDS (see `load_tfds`).
    labels_csv: ``path,label`` CSV for image folders (see
      `load_image_folder`).
    cache_dir: folder for ``.npz`` caches; None disables caching.

  Returns:
    A `Dataset`.

  Raises:
    DataError: the data is missing or cannot be read; the message names the
      command that prepares it.

  Example:
    >>> from experiments import data
    >>> data.load_dataset('digits').class_names[:3]
    ('0', '1', '2')
  """
  name = os.fspath(name)
  if labels_csv is not None and label_key is not None:
    raise ValueError('Pass label_key (TFDS) or labels_csv (image folders), '
                     'not both.')
  parsed = parse_dataset_name(name)
  folder = parsed.folder
  if parsed.kind == 'cifar10_jpeg':
    folder = prepare_cifar10_jpeg(os.path.join(
        data_dir or os.path.join(tempfile.gettempdir(), 'ogc_jax_data'),
        'cifar10-jpeg'))

  if parsed.kind == 'digits':
    if label_key is not None or labels_csv is not None:
      raise ValueError('digits takes no label_key or labels_csv.')
    key = {'source': 'digits'}
    load = load_digits
  elif folder is not None:
    if label_key is not None:
      raise ValueError(f'{name}: label_key applies to TFDS datasets; image '
                       'folders take labels_csv.')
    folder = os.path.abspath(folder)
    key = {'source': 'folder', 'root': folder,
           'files': cache.tree_fingerprint(folder, folders.image_files(folder))}
    if labels_csv is not None:
      labels_csv = os.path.abspath(labels_csv)
      if not os.path.isfile(labels_csv):
        what = ('is not a file' if os.path.exists(labels_csv)
                else 'does not exist')
        raise DataError(f'labels CSV {labels_csv} {what}; expected a file of '
                        '"path,label" rows, path relative to the image folder '
                        f'{folder}.')
      key['labels_csv'] = [labels_csv, cache.tree_fingerprint(
          os.path.dirname(labels_csv), [os.path.basename(labels_csv)])]
    load = functools.partial(load_image_folder, folder, labels_csv=labels_csv)
  else:
    if labels_csv is not None:
      raise ValueError(f'{name}: labels_csv applies to image folders; TFDS '
                       'datasets take label_key.')
    builder_dir = tfds_lib.builder_dir(name, data_dir)
    key = {'source': 'tfds', 'name': name, 'label_key': label_key,
           'data': builder_dir, 'files': cache.dir_fingerprint(builder_dir)}
    load = functools.partial(load_tfds, name, data_dir=data_dir,
                             label_key=label_key)

  if cache_dir is None:
    return load()
  return cache.cached(load, key, name, cache_dir)
