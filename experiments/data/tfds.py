"""TensorFlow Datasets prepared in the ``array_record`` format.

`load_tfds` reads them with `tfds.data_source` (no TensorFlow needed to read),
including the real-world noisy-label sets ``cifar10_n`` and ``cifar100_n``.

Preparing data, once, on a machine with internet (`prepare_command`): reading
needs no TensorFlow, but the builders read their downloads with
``tf.io.gfile``, and TFDS's resources need ``importlib_resources``; the
``tfds build`` command line would also need Apache Beam, whose pins conflict
with this project's, so the Python route is the short one::

  pip install tensorflow importlib_resources
  python -c "import tensorflow_datasets as tfds; tfds.builder('cifar10', data_dir='DATA_DIR', file_format='array_record').download_and_prepare()"

CIFAR-N: download ``side_info_cifar10N.csv``, ``CIFAR-10_human_ordered.npy`` and
``image_order_c10.npy`` (CIFAR-100: ``side_info_cifar100N.csv``,
``CIFAR-100_human_ordered.npy``, ``image_order_c100.npy``) from
https://github.com/UCSC-REAL/cifar-10-100n into MANUAL_DIR, convert the
annotations to the CSV the TFDS builder reads::

  python -c "import numpy as np, pandas as pd; pd.DataFrame(np.load(
    'MANUAL_DIR/CIFAR-10_human_ordered.npy', allow_pickle=True)[()]).to_csv(
    'MANUAL_DIR/CIFAR-10_human_annotations.csv', index=False)"

and prepare it (this also downloads the CIFAR binaries): `prepare_command`
with ``manual_dir='MANUAL_DIR'``.
"""

import contextlib
import os

from absl import logging
import numpy as np

from experiments.data.dataset import DataError
from experiments.data.dataset import Dataset

# The original CIFAR-10 distribution (Krizhevsky, 2009): pickled python batches.
CIFAR10_PYTHON_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'

# Noisy label keys of the TFDS CIFAR-N builders (the first is the default).
# Their test splits carry -1 in these keys, so test labels come from 'label'.
# TFDS names the CIFAR-100N key 'noise_label' (the paper's 'noisy_label').
CIFAR_N_LABEL_KEYS = {
    'cifar10_n': ('aggre_label', 'worse_label', 'random_label1',
                  'random_label2', 'random_label3'),
    'cifar100_n': ('noise_label',),
}
_CLEAN_LABEL_KEY = 'label'
_IMAGE_KEY = 'image'


def _base_name(name):
  """'cifar10_n:1.0.4' or 'cifar10_n/config' -> 'cifar10_n'."""
  return name.split(':')[0].split('/')[0]


@contextlib.contextmanager
def _quiet():
  """Hides TFDS's warnings about each unprepared folder it looks into.

  The `DataError` that follows says it once, on one line, with the command
  that prepares the data.
  """
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)


def builder_dir(name, data_dir=None) -> str:
  """The folder where TFDS keeps (or would keep) ``name``'s prepared data."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with _quiet():
    return os.fspath(tfds.builder(name, data_dir=data_dir).data_dir)


# What preparing needs beside this project's packages (`prepare_command`).
PREPARE_PACKAGES = 'tensorflow importlib_resources'


def prepare_command(name, data_dir, manual_dir=None) -> str:
  """The command that prepares TFDS ``name`` in ``data_dir``, for a shell.

  Needs `PREPARE_PACKAGES` and internet, once.

  Example:
    >>> print(prepare_command('cifar10', '/data'))
    pip install tensorflow importlib_resources && python -c "import tensorflow_datasets as tfds; tfds.builder('cifar10', data_dir='/data', file_format='array_record').download_and_prepare()"
  """
  download = ('' if manual_dir is None else
              'download_config=tfds.download.DownloadConfig('
              f'manual_dir={manual_dir!r})')
  return (f'pip install {PREPARE_PACKAGES} && python -c "import '
          'tensorflow_datasets as tfds; '
          f'tfds.builder({name!r}, data_dir={os.fspath(data_dir)!r}, '
          "file_format='array_record')"
          f'.download_and_prepare({download})"')


def _not_readable(name, builder, base_name, given_data_dir) -> str:
  """Why TFDS cannot read ``name``, and the commands that prepare it."""
  data_dir = os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))
  if builder.is_prepared():
    problem = (f'is prepared in the {builder.info.file_format.value} format '
               f'in {builder.data_dir}, which needs TensorFlow to read: delete '
               'that folder')
  else:
    problem = f'is not prepared in {data_dir}'
  manual = 'MANUAL_DIR' if base_name in CIFAR_N_LABEL_KEYS else None
  message = (
      f'TFDS dataset {name!r} {problem}. Prepare it once, on a machine with '
      f'internet: {prepare_command(base_name, data_dir, manual)}')
  if given_data_dir is None:
    message += ' (or build it elsewhere and pass --config.data_dir=DIR)'
  else:
    message += f' (then --config.data_dir={data_dir})'
  if base_name == 'cifar10':
    message += (
        '; or, offline, train on the image-folder copy with '
        '--config.dataset=cifar10_jpeg, which extracts the archive '
        'cifar10-jpeg.tar.gz from $OGC_SHARED_DATA (by default ../shared/data '
        'beside the repository); or, '
        'without TensorFlow, build an image folder from the python '
        f'batches ({CIFAR10_PYTHON_URL}): python -m '
        'experiments.data.make_image_folder --source python-batches --input '
        'cifar-10-python.tar.gz --out DIR, then --config.dataset=folder:DIR')
  if base_name in CIFAR_N_LABEL_KEYS:
    message += ('; MANUAL_DIR holds the CIFAR-N files (see '
                'experiments/data/tfds.py)')
  return message + '.'


def load_tfds(name, *, data_dir=None, label_key=None, train_split='train',
              test_split='test') -> Dataset:
  """Loads a TFDS image dataset prepared in the ``array_record`` format.

  Reads every example once with `tfds.data_source` (no TensorFlow needed) and
  never downloads. For ``cifar10_n`` and ``cifar100_n``, ``label_key`` picks
  the noisy labels, ``'label'`` is kept as ``train_clean_labels``, and the test
  labels are ``'label'`` (the builders store -1 in the noisy keys of their test
  split, which they do have: no other dataset's test split is needed).

  Args:
    name: TFDS name, e.g. ``'cifar10'``, ``'mnist'``, ``'cifar10_n'``.
    data_dir: TFDS data directory; None for TFDS's default.
    label_key: feature holding the training labels. Defaults to ``'label'``;
      for ``cifar10_n`` to ``'aggre_label'`` (also ``'worse_label'``,
      ``'random_label1'`` .. ``'random_label3'``), for ``cifar100_n`` to
      ``'noise_label'``.
    train_split: split to train on.
    test_split: split to test on.

  Returns:
    A `Dataset`.

  Raises:
    ValueError: an unknown label key.
    DataError: the data is not prepared, or not in the ``array_record``
      format; the message gives the command that prepares it
      (`prepare_command`).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  base_name = _base_name(name)
  with _quiet():
    builder = tfds.builder(name, data_dir=data_dir)
  features = builder.info.features
  if base_name in CIFAR_N_LABEL_KEYS:
    allowed = CIFAR_N_LABEL_KEYS[base_name]
    label_key = allowed[0] if label_key is None else label_key
    if label_key not in allowed:
      raise ValueError(
          f'{name}: label_key must be one of {allowed}, got {label_key!r}.')
    clean_key, test_key = _CLEAN_LABEL_KEY, _CLEAN_LABEL_KEY
  else:
    label_key = _CLEAN_LABEL_KEY if label_key is None else label_key
    clean_key, test_key = None, label_key
  class_feature = features[label_key] if label_key in features else None
  if not isinstance(class_feature, tfds.features.ClassLabel):
    labels = [k for k, f in features.items()
              if isinstance(f, tfds.features.ClassLabel)]
    raise ValueError(
        f'{name}: label_key {label_key!r} is not a class label feature; '
        f'class label features: {labels}.')
  if _IMAGE_KEY not in features:
    raise ValueError(f'{name}: has no {_IMAGE_KEY!r} feature; features: '
                     f'{list(features)}.')

  try:
    with _quiet():
      sources = [tfds.data_source(name, split=split, data_dir=data_dir,
                                  download=False)
                 for split in (train_split, test_split)]
  except (NotImplementedError, FileNotFoundError, AssertionError,
          KeyError) as e:
    # Not prepared: TFDS raises KeyError (no splits) or FileNotFoundError;
    # prepared as tfrecord: NotImplementedError (no random access).
    with _quiet():
      message = _not_readable(name, builder, base_name, data_dir)
    raise DataError(message) from e

  def read(source, keys):
    columns = {key: [] for key in keys}
    for i in range(len(source)):
      example = source[i]
      for key in keys:
        columns[key].append(example[key])
    return [np.stack(columns[key]) for key in keys]

  train_keys = [_IMAGE_KEY, label_key] + ([clean_key] if clean_key else [])
  train = read(sources[0], train_keys)
  test_images, test_labels = read(sources[1], [_IMAGE_KEY, test_key])
  return Dataset(
      name=name,
      train_images=train[0].astype(np.uint8),
      train_labels=train[1].astype(np.int32),
      test_images=test_images.astype(np.uint8),
      test_labels=test_labels.astype(np.int32),
      num_classes=class_feature.num_classes,
      class_names=tuple(class_feature.names),
      train_clean_labels=train[2].astype(np.int32) if clean_key else None,
  )
