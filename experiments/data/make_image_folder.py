r"""Builds the CIFAR-10 image folder from TFDS or from the original python batches.

  # The python batches (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz,
  # the archive or its extracted cifar-10-batches-py/ folder):
  python -m experiments.data.make_image_folder --source python-batches \
      --input cifar-10-python.tar.gz --out DIR
  # A TFDS dataset prepared in DATA_DIR (any image dataset: --dataset NAME):
  python -m experiments.data.make_image_folder --source tfds \
      --data_dir DATA_DIR --out DIR

writes ``DIR/{train,test}/<class>/NNNN.png``, NNNN the image's rank within
its class in the source's order (the layout `experiments.data.cifar10_folder`
checks). Train on it with ``--config.dataset=folder:DIR``; or make DIR
``DATA_DIR/cifar10-jpeg`` and use ``--config.dataset=cifar10_jpeg
--config.data_dir=DATA_DIR``. PNG keeps the pixels exactly; ``--format jpeg``
makes a smaller, lossy copy. The folder appears whole or not at all: it is
written beside DIR and renamed.
"""

import argparse
import concurrent.futures
import os
import pickle
import sys
import tarfile

import numpy as np
from PIL import Image

from experiments import files
from experiments.data.dataset import DataError
from experiments.data.dataset import Dataset
from experiments.data.tfds import CIFAR10_PYTHON_URL
from experiments.data.tfds import load_tfds

_BATCHES_FOLDER = 'cifar-10-batches-py'
_TRAIN_BATCHES = tuple(f'data_batch_{i}' for i in range(1, 6))
_TEST_BATCH = 'test_batch'
_META = 'batches.meta'
_EXTENSIONS = {'png': 'png', 'jpeg': 'jpg'}


def _unpickle(f, what):
  # The python batches are pickles (so only read files from a trusted source).
  try:
    return pickle.load(f, encoding='bytes')
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'{what} is not a CIFAR-10 python batch: {e}') from None


def _batch_arrays(batch, what):
  """uint8 ``[n, 32, 32, 3]`` images and int32 labels of one pickled batch."""
  try:
    data = np.asarray(batch[b'data'], np.uint8)
    labels = np.asarray(batch[b'labels'], np.int32)
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f'{what} is not a CIFAR-10 python batch: {e!r}') from None
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
    raise DataError(f'{what}: data {data.shape} and {len(labels)} labels; '
                    'expected [n, 3072] and n labels.')
  # Each row holds the red, then green, then blue 32x32 plane, row-major.
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_python_batches(path) -> Dataset:
  """Reads the original CIFAR-10 python batches.

  Args:
    path: ``cifar-10-python.tar.gz`` as downloaded, or the
      ``cifar-10-batches-py`` folder it holds (``data_batch_1`` ..
      ``data_batch_5``, ``test_batch``, ``batches.meta``).

  Returns:
    A `Dataset`: the 50,000 training images in the order of the batches, the
    10,000 test images, the class names of ``batches.meta``.

  Raises:
    DataError: the path or one of its files is missing or not a batch.
  """
  path = os.fspath(path)
  names = _TRAIN_BATCHES + (_TEST_BATCH, _META)
  if os.path.isdir(path):
    if os.path.isdir(os.path.join(path, _BATCHES_FOLDER)):
      path = os.path.join(path, _BATCHES_FOLDER)
    missing = [n for n in names if not os.path.isfile(os.path.join(path, n))]
    if missing:
      raise DataError(f'{path} lacks {missing}: not the CIFAR-10 python '
                      f'batches (download {CIFAR10_PYTHON_URL}).')
    contents = {}
    for name in names:
      with open(os.path.join(path, name), 'rb') as f:
        contents[name] = _unpickle(f, os.path.join(path, name))
  elif os.path.isfile(path):
    try:
      with tarfile.open(path) as tar:
        members = {os.path.basename(m.name): m for m in tar.getmembers()
                   if m.isfile()}
        missing = [n for n in names if n not in members]
        if missing:
          raise DataError(f'{path} lacks {missing}: not the CIFAR-10 python '
                          f'batches (download {CIFAR10_PYTHON_URL}).')
        contents = {name: _unpickle(tar.extractfile(members[name]),
                                    f'{path}:{members[name].name}')
                    for name in names}
    except (OSError, tarfile.TarError) as e:
      raise DataError(f'{path} cannot be read as a tar archive: {e}') from None
  else:
    raise DataError(f'{path} does not exist; download the CIFAR-10 python '
                    f'batches from {CIFAR10_PYTHON_URL}.')

  train = [_batch_arrays(contents[n], n) for n in _TRAIN_BATCHES]
  test_images, test_labels = _batch_arrays(contents[_TEST_BATCH], _TEST_BATCH)
  try:
    class_names = tuple(n.decode() for n in contents[_META][b'label_names'])
  except (KeyError, TypeError, AttributeError) as e:
    raise DataError(f'{_META} has no label_names: {e!r}') from None
  return Dataset(
      name=path,
      train_images=np.concatenate([images for images, _ in train]),
      train_labels=np.concatenate([labels for _, labels in train]),
      test_images=test_images,
      test_labels=test_labels,
      num_classes=len(class_names),
      class_names=class_names,
  )


def write_image_folder(dataset: Dataset, out, image_format='png',
                       quality=95) -> dict[str, int]:
  """Writes ``out/{train,test}/<class>/NNNN.<ext>`` from a `Dataset`.

  NNNN is the image's rank within its class in the dataset's order, so the
  folder lists each class in the source's order. The folder is written
  beside ``out`` and renamed to it.

  Args:
    dataset: the images (train labels as given; the folder holds them).
    out: the folder to create; it must not exist, or be empty.
    image_format: ``'png'`` (exact) or ``'jpeg'`` (lossy).
    quality: JPEG quality.

  Returns:
    The number of images written per split.
  """
  if image_format not in _EXTENSIONS:
    raise ValueError(f'image_format must be one of {list(_EXTENSIONS)}, got '
                     f'{image_format!r}.')
  out = os.path.abspath(os.fspath(out))
  if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
    raise DataError(f'{out} already exists and is not an empty folder.')
  extension = _EXTENSIONS[image_format]
  options = {'quality': quality} if image_format == 'jpeg' else {}

  def save(job):
    image, path = job
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        path, **options)

  counts = {}
  with files.staged_folder(out) as staging:  # out is empty or absent
    jobs = []
    for split in ('train', 'test'):
      images = getattr(dataset, f'{split}_images')
      labels = getattr(dataset, f'{split}_labels')
      counts[split] = len(labels)
      width = max(4, len(str(max(np.bincount(labels).max() - 1, 0))))
      for name in dataset.class_names:
        os.makedirs(os.path.join(staging, split, name))
      rank = np.zeros(dataset.num_classes, np.int64)
      for image, label in zip(images, labels):
        name = f'{rank[label]:0{width}d}.{extension}'
        rank[label] += 1
        jobs.append((image, os.path.join(
            staging, split, dataset.class_names[label], name)))
    # PIL releases the GIL while encoding, so threads help.
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=min(8, os.cpu_count() or 1)) as pool:
      list(pool.map(save, jobs))
  return counts


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m experiments.data.make_image_folder',
      description=__doc__.split('\n\n')[0].strip(),
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split('\n\n', 1)[1])
  parser.add_argument('--source', required=True,
                      choices=('python-batches', 'tfds'))
  parser.add_argument('--input', help='python-batches: cifar-10-python.tar.gz '
                      'or its cifar-10-batches-py folder')
  parser.add_argument('--dataset', default='cifar10',
                      help='tfds: the dataset (default cifar10)')
  parser.add_argument('--data_dir', help="tfds: its data folder (default: "
                      "TFDS's own)")
  parser.add_argument('--out', required=True, help='the folder to create')
  parser.add_argument('--format', default='png', choices=tuple(_EXTENSIONS))
  parser.add_argument('--quality', type=int, default=95,
                      help='JPEG quality (default 95)')
  args = parser.parse_args(argv)
  if args.source == 'python-batches' and not args.input:
    parser.error('--source python-batches needs --input')
  if args.source == 'tfds' and args.input:
    parser.error('--input is for --source python-batches; tfds takes '
                 '--dataset and --data_dir')
  try:
    if args.source == 'python-batches':
      dataset = read_python_batches(args.input)
    else:
      dataset = load_tfds(args.dataset, data_dir=args.data_dir)
    counts = write_image_folder(dataset, args.out, args.format, args.quality)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{args.out}: {counts["train"]} train and {counts["test"]} test '
        f'images of {dataset.num_classes} classes ({args.format})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
