"""Datasets and on-device augmentation for the OGC experiments.

Three sources give the same `Dataset` of decoded uint8 arrays:

* `load_digits`: scikit-learn's bundled 8x8 digits, the default; no download.
* `load_tfds`: a TFDS dataset prepared in the ``array_record`` format, read with
  `tfds.data_source` (no TensorFlow needed to read), including the real-world
  noisy-label sets ``cifar10_n`` and ``cifar100_n``.
* `load_image_folder`: ``root/{train,test}/<class>/*.{jpg,jpeg,png}``, with an
  optional CSV of ``path,label`` rows replacing the folder labels; this is how
  a user brings crowd-sourced labels for their own images.

`load_dataset` dispatches on a name and caches the decoded arrays as ``.npz``
so a second run does not decode again. The whole dataset then fits in device
memory; `normalize` and `augment` are pure ``jnp`` functions meant to run
inside the jit-compiled train step on device batches.

Preparing data on a machine with internet (reading needs no TensorFlow, but the
TFDS builders use ``tf.io.gfile``, so ``tfds build`` needs ``pip install
tensorflow`` once)::

  tfds build cifar10 --data_dir=DATA_DIR --file_format=array_record

CIFAR-N: download ``side_info_cifar10N.csv``, ``CIFAR-10_human_ordered.npy`` and
``image_order_c10.npy`` (CIFAR-100: ``side_info_cifar100N.csv``,
``CIFAR-100_human_ordered.npy``, ``image_order_c100.npy``) from
https://github.com/UCSC-REAL/cifar-10-100n into MANUAL_DIR, convert the
annotations to the CSV the TFDS builder reads::

  python -c "import numpy as np, pandas as pd; pd.DataFrame(np.load(
    'MANUAL_DIR/CIFAR-10_human_ordered.npy', allow_pickle=True)[()]).to_csv(
    'MANUAL_DIR/CIFAR-10_human_annotations.csv', index=False)"

and build (this also downloads the CIFAR binaries)::

  tfds build cifar10_n --data_dir=DATA_DIR --manual_dir=MANUAL_DIR \\
    --file_format=array_record
"""

import concurrent.futures
import csv
import dataclasses
import functools
import hashlib
import json
import os
import tarfile
import tempfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


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
_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')

SHARED_CIFAR10_ARCHIVE = 'cifar10-jpeg.tar.gz'
SHARED_CIFAR10_SHA256 = (
    'd877bdec11f54282b92da36e9f045bd305d663b1223e3822baff39ca9ff6690a')
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                   'frog', 'horse', 'ship', 'truck')

# Bump when decoding changes, so that old caches are not reused.
_CACHE_VERSION = 1


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
      ``(mean, std)``, float32 arrays of shape ``[C]``, for `normalize`.
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


# ----------------------------------------------------------------------------
# scikit-learn digits


def load_digits(test_fraction=0.2, seed=0) -> Dataset:
  """scikit-learn's bundled digits with a fixed, stratified train/test split.

  Args:
    test_fraction: fraction of the 1,797 images held out for testing.
    seed: ``random_state`` of `sklearn.model_selection.train_test_split`.

  Returns:
    A `Dataset` of 8x8x1 images, the 0..16 intensities rescaled to 0..255.

  Example:
    >>> from experiments import input_pipeline
    >>> ds = input_pipeline.load_digits()
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


# ----------------------------------------------------------------------------
# TensorFlow Datasets


def _base_name(name):
  """'cifar10_n:1.0.4' or 'cifar10_n/config' -> 'cifar10_n'."""
  return name.split(':')[0].split('/')[0]


def _build_command(builder, base_name):
  data_dir = os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))
  command = f'tfds build {base_name} --data_dir={data_dir}'
  if base_name in CIFAR_N_LABEL_KEYS:
    command += ' --manual_dir=MANUAL_DIR'
  return command + ' --file_format=array_record'


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
    ValueError: unknown dataset or label key, or the data is not prepared in
      the ``array_record`` format (the message gives the ``tfds build``
      command).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  base_name = _base_name(name)
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
    sources = [tfds.data_source(name, split=split, data_dir=data_dir,
                                download=False)
               for split in (train_split, test_split)]
  except (NotImplementedError, FileNotFoundError, AssertionError) as e:
    if not builder.is_prepared():
      problem = f'is not prepared in {builder.data_dir}'
    else:
      problem = (f'is prepared in the {builder.info.file_format.value} format '
                 f'in {builder.data_dir}; reading needs array_record, so '
                 'delete that folder and rebuild')
    raise ValueError(
        f'{name} {problem}. Prepare it on a machine with internet (and '
        f'tensorflow installed) with: {_build_command(builder, base_name)}'
        ) from e

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


# ----------------------------------------------------------------------------
# Image folders


def _decode_image(path):
  """Decodes an image to uint8 ``[H, W, 1]`` (grayscale) or ``[H, W, 3]``."""
  with Image.open(path) as image:
    if image.mode in ('L', '1', 'I;16', 'I'):
      array = np.asarray(image.convert('L'))[..., None]
    else:
      array = np.asarray(image.convert('RGB'))
  return array


def _resize(array, image_size):
  height, width = image_size
  if array.shape[:2] == (height, width):
    return array
  image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
  resized = np.asarray(image.resize((width, height), Image.BILINEAR))
  return resized.reshape(height, width, array.shape[-1])


def _folder_classes(root):
  train_dir = os.path.join(root, 'train')
  if not os.path.isdir(train_dir):
    raise ValueError(
        f'{root} has no train/ folder; expected root/train/<class>/*.jpg and '
        'root/test/<class>/*.jpg.')
  classes = sorted(entry.name for entry in os.scandir(train_dir)
                   if entry.is_dir())
  if not classes:
    raise ValueError(f'{train_dir} has no class subfolders.')
  return classes


def _folder_files(root, split, classes):
  """Sorted ``(relative path, folder label)`` of the images of one split."""
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    raise ValueError(f'{root} has no {split}/ folder.')
  unknown = sorted(entry.name for entry in os.scandir(split_dir)
                   if entry.is_dir() and entry.name not in classes)
  if unknown:
    raise ValueError(f'{split_dir} has classes {unknown} that train/ lacks.')
  files = []
  for label, class_name in enumerate(classes):
    class_dir = os.path.join(split_dir, class_name)
    if not os.path.isdir(class_dir):
      continue
    names = sorted(entry.name for entry in os.scandir(class_dir)
                   if entry.is_file()
                   and entry.name.lower().endswith(_IMAGE_EXTENSIONS))
    files.extend((f'{split}/{class_name}/{n}', label) for n in names)
  if not files:
    raise ValueError(f'{split_dir} holds no {"/".join(_IMAGE_EXTENSIONS)} '
                     'images.')
  return files


def _read_labels_csv(labels_csv, train_paths, classes):
  """Maps train image index -> label for the rows of a ``path,label`` CSV."""
  index_of = {path: i for i, path in enumerate(train_paths)}
  class_index = {name: i for i, name in enumerate(classes)}
  overrides = {}
  with open(labels_csv, newline='') as f:
    rows = list(csv.reader(f))
  for line_number, row in enumerate(rows, start=1):
    if not row or not ''.join(row).strip():
      continue
    if len(row) != 2:
      raise ValueError(f'{labels_csv}:{line_number}: expected "path,label", '
                       f'got {row!r}.')
    path, label = (part.strip() for part in row)
    if line_number == 1 and (path, label) == ('path', 'label'):
      continue
    path = os.path.normpath(path).replace(os.sep, '/')
    if path not in index_of:
      raise ValueError(
          f'{labels_csv}:{line_number}: {path!r} is not a train image of the '
          'folder (paths are relative to the root, e.g. train/cat/0001.jpg).')
    if label in class_index:
      label = class_index[label]
    else:
      try:
        label = int(label)
      except ValueError:
        raise ValueError(
            f'{labels_csv}:{line_number}: unknown class {label!r}; classes '
            f'are {classes} or their indices.') from None
      if not 0 <= label < len(classes):
        raise ValueError(
            f'{labels_csv}:{line_number}: label {label} is outside '
            f'[0, {len(classes)}).')
    if index_of[path] in overrides:
      raise ValueError(f'{labels_csv}:{line_number}: {path!r} is listed '
                       'twice.')
    overrides[index_of[path]] = label
  return overrides


def _decode_all(root, paths, image_size):
  # PIL releases the GIL while decoding, so threads help.
  with concurrent.futures.ThreadPoolExecutor(
      max_workers=min(8, os.cpu_count() or 1)) as pool:
    arrays = list(pool.map(lambda p: _decode_image(os.path.join(root, p)),
                           paths))
  if image_size is not None:
    arrays = [_resize(a, image_size) for a in arrays]
  return arrays


def load_image_folder(root, *, labels_csv=None, image_size=None) -> Dataset:
  """Loads ``root/{train,test}/<class>/*.{jpg,jpeg,png}`` into memory.

  Classes are the sorted subfolder names of ``root/train``. Grayscale images
  give one channel; if any image has colour, all get three.

  Args:
    root: folder holding ``train/`` and ``test/``.
    labels_csv: optional CSV of ``path,label`` rows (an optional header
      ``path,label``), ``path`` relative to ``root`` (``train/cat/0001.jpg``),
      ``label`` a class index or name. Its labels replace the folder labels of
      the listed train images, and the folder labels become
      ``train_clean_labels``.
    image_size: ``(height, width)`` or an int, to resize (bilinear) every
      image; None requires all images to have the same size.

  Returns:
    A `Dataset`.

  Raises:
    ValueError: a missing folder, images of differing size without
      ``image_size``, or a CSV row naming an unknown image or class.
  """
  root = os.fspath(root)
  if isinstance(image_size, int):
    image_size = (image_size, image_size)
  classes = _folder_classes(root)
  splits = {split: _folder_files(root, split, classes)
            for split in ('train', 'test')}
  overrides = None
  if labels_csv is not None:
    overrides = _read_labels_csv(
        labels_csv, [path for path, _ in splits['train']], classes)

  arrays = {split: _decode_all(root, [path for path, _ in files], image_size)
            for split, files in splits.items()}
  first_path, first = splits['train'][0][0], arrays['train'][0]
  for split, files in splits.items():
    for (path, _), array in zip(files, arrays[split]):
      if array.shape[:2] != first.shape[:2]:
        raise ValueError(
            f'{root}: {path} is {array.shape[0]}x{array.shape[1]} but '
            f'{first_path} is {first.shape[0]}x{first.shape[1]}; pass '
            'image_size to resize.')
  channels = max(a.shape[-1] for split in arrays.values() for a in split)

  def stack(split):
    images = np.stack(arrays[split])
    if images.shape[-1] != channels:
      images = np.broadcast_to(images, images.shape[:-1] + (channels,))
    labels = np.array([label for _, label in splits[split]], np.int32)
    return np.ascontiguousarray(images), labels

  train_images, folder_labels = stack('train')
  test_images, test_labels = stack('test')
  train_labels, train_clean_labels = folder_labels, None
  if overrides is not None:
    train_labels = folder_labels.copy()
    train_labels[list(overrides)] = list(overrides.values())
    train_clean_labels = folder_labels
  return Dataset(
      name=root,
      train_images=train_images,
      train_labels=train_labels,
      test_images=test_images,
      test_labels=test_labels,
      num_classes=len(classes),
      class_names=tuple(classes),
      train_clean_labels=train_clean_labels,
  )


def _default_shared_data_dir():
  # The repository sits beside ../shared; OGC_SHARED_DATA overrides.
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.environ.get(
      'OGC_SHARED_DATA', os.path.join(repo, '..', 'shared', 'data'))


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def unpack_shared_cifar10(dest, shared_data_dir=None) -> str:
  """Extracts the shared CIFAR-10 JPEG copy into ``dest`` unless already there.

  The archive holds ``train/<class>/NNNN.jpg`` (5,000 per class) and
  ``test/<class>/NNNN.jpg`` (1,000 per class), NNNN the image's rank within its
  class in the original CIFAR-10 order. It is checked against its sha256, then
  extracted beside ``dest`` and renamed to it, so an interrupted run leaves no
  half-extracted copy.

  Args:
    dest: folder to hold ``train/`` and ``test/``; absent or empty.
    shared_data_dir: folder holding ``cifar10-jpeg.tar.gz``; defaults to
      ``$OGC_SHARED_DATA`` or ``../shared/data`` beside the repository.

  Returns:
    ``dest``, the root to pass to `load_image_folder`.
  """
  dest = os.path.abspath(os.fspath(dest))
  if all(os.path.isdir(os.path.join(dest, s)) for s in ('train', 'test')):
    return dest
  if os.path.isdir(dest) and os.listdir(dest):
    raise ValueError(f'{dest} is not empty and holds no train/ and test/.')
  shared_data_dir = shared_data_dir or _default_shared_data_dir()
  archive = os.path.join(shared_data_dir, SHARED_CIFAR10_ARCHIVE)
  if not os.path.isfile(archive):
    raise ValueError(
        f'{archive} not found; set OGC_SHARED_DATA to the folder holding '
        f'{SHARED_CIFAR10_ARCHIVE}.')
  digest = _sha256(archive)
  if digest != SHARED_CIFAR10_SHA256:
    raise ValueError(f'{archive} has sha256 {digest}, expected '
                     f'{SHARED_CIFAR10_SHA256}.')
  parent = os.path.dirname(dest)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix='.cifar10-jpeg-')
  with tarfile.open(archive) as tar:
    tar.extractall(staging, filter='data')
  if os.path.isdir(dest):
    os.rmdir(dest)  # Empty, checked above.
  os.replace(staging, dest)
  return dest


# ----------------------------------------------------------------------------
# Dispatcher and cache


def _tree_fingerprint(root, relpaths):
  """Hash of the listed files' names, sizes and modification times."""
  digest = hashlib.sha256()
  for relpath in relpaths:
    stat = os.stat(os.path.join(root, relpath))
    digest.update(f'{relpath}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode())
  return f'{len(relpaths)}:{digest.hexdigest()}'


def _dir_fingerprint(directory):
  if not os.path.isdir(directory):
    return 'absent'
  relpaths = sorted(
      os.path.relpath(os.path.join(parent, name), directory)
      for parent, _, names in os.walk(directory) for name in names)
  return _tree_fingerprint(directory, relpaths)


def _save_npz(path, dataset):
  arrays = {
      'train_images': dataset.train_images,
      'train_labels': dataset.train_labels,
      'test_images': dataset.test_images,
      'test_labels': dataset.test_labels,
      'class_names': np.array(dataset.class_names, dtype=str),
      'name': np.array(dataset.name),
      'num_classes': np.array(dataset.num_classes),
  }
  if dataset.train_clean_labels is not None:
    arrays['train_clean_labels'] = dataset.train_clean_labels
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def _load_npz(path):
  with np.load(path, allow_pickle=False) as data:
    return Dataset(
        name=str(data['name']),
        train_images=data['train_images'],
        train_labels=data['train_labels'],
        test_images=data['test_images'],
        test_labels=data['test_labels'],
        num_classes=int(data['num_classes']),
        class_names=tuple(str(c) for c in data['class_names']),
        train_clean_labels=(data['train_clean_labels']
                            if 'train_clean_labels' in data else None),
    )


def load_dataset(name, *, data_dir=None, label_key=None, labels_csv=None,
                 cache_dir=None) -> Dataset:
  """Loads a dataset by name, from a ``.npz`` cache when one is valid.

  Names:
    * ``'digits'``: `load_digits` with its defaults.
    * ``'cifar10_jpeg'``: the shared CIFAR-10 JPEG copy, unpacked by
      `unpack_shared_cifar10` into ``data_dir/cifar10-jpeg`` (``data_dir``
      defaulting to ``ogc_jax_data`` in the system's temporary folder), then
      `load_image_folder`.
    * ``'folder:PATH'``, or a ``PATH`` containing a path separator that is an
      existing folder: `load_image_folder`.
    * anything else: `load_tfds`.

  The cache key covers the source (name, folder or TFDS data folder: file
  names, sizes and modification times), ``label_key`` and ``labels_csv``, so
  adding or changing a file decodes again.

  Args:
    name: see above.
    data_dir: TFDS data directory, or where to unpack ``'cifar10_jpeg'``.
    label_key: training label key for TFDS (see `load_tfds`).
    labels_csv: ``path,label`` CSV for image folders (see
      `load_image_folder`).
    cache_dir: folder for ``.npz`` caches; None disables caching.

  Returns:
    A `Dataset`.
  """
  name = os.fspath(name)
  if labels_csv is not None and label_key is not None:
    raise ValueError('Pass label_key (TFDS) or labels_csv (image folders), '
                     'not both.')
  folder = None
  if name == 'cifar10_jpeg':
    folder = unpack_shared_cifar10(os.path.join(
        data_dir or os.path.join(tempfile.gettempdir(), 'ogc_jax_data'),
        'cifar10-jpeg'))
  elif name.startswith('folder:'):
    folder = name[len('folder:'):]
  elif os.sep in name and os.path.isdir(name):
    folder = name

  if name == 'digits':
    if label_key is not None or labels_csv is not None:
      raise ValueError('digits takes no label_key or labels_csv.')
    key = {'source': 'digits'}
    load = load_digits
  elif folder is not None:
    if label_key is not None:
      raise ValueError(f'{name}: label_key applies to TFDS datasets; image '
                       'folders take labels_csv.')
    folder = os.path.abspath(folder)
    files = [path for split in ('train', 'test')
             for path, _ in _folder_files(folder, split,
                                          _folder_classes(folder))]
    key = {'source': 'folder', 'root': folder,
           'files': _tree_fingerprint(folder, files)}
    if labels_csv is not None:
      labels_csv = os.path.abspath(labels_csv)
      key['labels_csv'] = [labels_csv, _tree_fingerprint(
          os.path.dirname(labels_csv), [os.path.basename(labels_csv)])]
    load = functools.partial(load_image_folder, folder, labels_csv=labels_csv)
  else:
    if labels_csv is not None:
      raise ValueError(f'{name}: labels_csv applies to image folders; TFDS '
                       'datasets take label_key.')
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(name, data_dir=data_dir)
    key = {'source': 'tfds', 'name': name, 'label_key': label_key,
           'data': os.fspath(builder.data_dir),
           'files': _dir_fingerprint(os.fspath(builder.data_dir))}
    load = functools.partial(load_tfds, name, data_dir=data_dir,
                             label_key=label_key)

  if cache_dir is None:
    return load()
  key['version'] = _CACHE_VERSION
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
  slug = ''.join(c if c.isalnum() else '_'
                 for c in os.path.basename(name.rstrip('/\\')))
  path = os.path.join(os.fspath(cache_dir), f'{slug}-{digest[:16]}.npz')
  if os.path.isfile(path):
    return _load_npz(path)
  dataset = load()
  os.makedirs(cache_dir, exist_ok=True)
  _save_npz(path, dataset)
  return dataset


# ----------------------------------------------------------------------------
# On-device preprocessing


def normalize(images, mean, std):
  """Scales pixels to 0..1, then standardises each channel.

  Args:
    images: ``[..., C]`` on the 0..255 scale, uint8 or float.
    mean: ``[C]`` per-channel mean on the 0..1 scale
      (`Dataset.channel_mean_std`).
    std: ``[C]`` per-channel standard deviation on the 0..1 scale.

  Returns:
    float32 ``(images / 255 - mean) / std``, the shape of ``images``.

  Example:
    >>> import numpy as np
    >>> from experiments import input_pipeline
    >>> input_pipeline.normalize(np.array([[0, 255]], np.uint8).T, [0.5], [0.5])
    Array([[-1.],
           [ 1.]], dtype=float32)
  """
  images = jnp.asarray(images)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  if mean.shape != images.shape[-1:] or std.shape != images.shape[-1:]:
    raise ValueError(
        f'mean {mean.shape} and std {std.shape} must have one value per '
        f'channel of images {images.shape}.')
  return (images.astype(jnp.float32) / 255.0 - mean) / std


class AugmentationParams(NamedTuple):
  """Random draws of one augmented batch; a field is None when disabled.

  Attributes:
    crop_offsets: int32 ``[b, 2]``, the ``(row, column)`` corner of the crop in
      the zero-padded image, uniform in ``[0, 2 * crop_padding]``; the output
      pixel ``(y, x)`` is the input pixel ``(y + dy - p, x + dx - p)``.
    flips: bool ``[b]``, mirror left-right, each with probability 1/2.
    angles: float32 ``[b]``, rotation in degrees, uniform in
      ``[-rotation_degrees, rotation_degrees]``, counter-clockwise as
      displayed (the sense of `scipy.ndimage.rotate`).
  """
  crop_offsets: jax.Array | None
  flips: jax.Array | None
  angles: jax.Array | None


def sample_augmentation(rng, batch_size, *, crop_padding=4, flip=True,
                        rotation_degrees=15.0) -> AugmentationParams:
  """Draws the random parameters of `augment` for a batch.

  Args:
    rng: a `jax.random` key.
    batch_size: number of images.
    crop_padding: zero padding of the random crop; 0 disables cropping.
    flip: whether to mirror half of the images left-right.
    rotation_degrees: largest absolute rotation angle; 0 disables rotation.

  Returns:
    `AugmentationParams`.
  """
  if crop_padding < 0 or rotation_degrees < 0:
    raise ValueError(
        f'crop_padding ({crop_padding}) and rotation_degrees '
        f'({rotation_degrees}) must be non-negative.')
  crop_rng, flip_rng, angle_rng = jax.random.split(rng, 3)
  crop_offsets = flips = angles = None
  if crop_padding:
    crop_offsets = jax.random.randint(
        crop_rng, (batch_size, 2), 0, 2 * crop_padding + 1, dtype=jnp.int32)
  if flip:
    flips = jax.random.bernoulli(flip_rng, 0.5, (batch_size,))
  if rotation_degrees:
    angles = jax.random.uniform(
        angle_rng, (batch_size,), jnp.float32, -rotation_degrees,
        rotation_degrees)
  return AugmentationParams(crop_offsets, flips, angles)


def _rotate(image, angle):
  """Rotates ``[H, W, C]`` about its centre, bilinear, zero outside."""
  height, width = image.shape[:2]
  theta = jnp.deg2rad(angle)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  center_y, center_x = (height - 1) / 2, (width - 1) / 2
  y, x = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) - center_y,
                      jnp.arange(width, dtype=jnp.float32) - center_x,
                      indexing='ij')
  # Inverse map of scipy.ndimage.rotate: source = R @ (output - c) + c with
  # R = [[cos, sin], [-sin, cos]] on (row, column).
  source = [cos * y + sin * x + center_y, -sin * y + cos * x + center_x]
  # JAX's 'constant' mode is SciPy's 'grid-constant': zeros enter the
  # interpolation at the border, as in torchvision's fill=0.
  rotate_channel = lambda c: jax.scipy.ndimage.map_coordinates(
      c, source, order=1, mode='constant', cval=0.0)
  return jax.vmap(rotate_channel, in_axes=2, out_axes=2)(image)


def apply_augmentation(images, params: AugmentationParams, *,
                       crop_padding=4):
  """Applies drawn crops, flips and rotations, in that order, to a batch.

  Args:
    images: float ``[b, H, W, C]``.
    params: from `sample_augmentation` with the same ``crop_padding``.
    crop_padding: zero padding of the crop (static).

  Returns:
    The augmented images, same shape and dtype.
  """
  images = jnp.asarray(images)
  if images.ndim != 4 or not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(
        f'images must be a float [b, H, W, C] array, got {images.dtype} '
        f'{images.shape}; cast uint8 images with .astype(jnp.float32).')
  if (params.crop_offsets is not None) != bool(crop_padding):
    raise ValueError(
        f'params were drawn for another crop_padding than {crop_padding}.')
  height, width, channels = images.shape[1:]

  def augment_one(image, crop_offset, flip, angle):
    if crop_offset is not None:
      padded = jnp.pad(image, ((crop_padding, crop_padding),
                               (crop_padding, crop_padding), (0, 0)))
      image = jax.lax.dynamic_slice(
          padded, (crop_offset[0], crop_offset[1], 0),
          (height, width, channels))
    if flip is not None:
      image = jnp.where(flip, image[:, ::-1], image)
    if angle is not None:
      image = _rotate(image, angle).astype(image.dtype)
    return image

  return jax.vmap(augment_one)(images, *params)


def augment(rng, images, *, crop_padding=4, flip=True, rotation_degrees=15.0):
  """Random crop with zero padding, horizontal flip and rotation of a batch.

  The torchvision recipe ``RandomCrop(32, padding=4)``,
  ``RandomHorizontalFlip()``, ``RandomRotation(15)``, each image drawing its
  own parameters, as one vectorised ``jnp`` function to call inside a jitted
  step. Apply it before `normalize`, on the 0..255 scale, so that the zero
  fill of padding and rotation is black as in torchvision. Rotation
  interpolates bilinearly (torchvision's default is nearest), which blurs
  less than nearest-neighbour aliasing on 32x32 images.

  Args:
    rng: a `jax.random` key.
    images: float ``[b, H, W, C]``.
    crop_padding: zero padding of the random crop; 0 disables cropping.
    flip: whether to mirror half of the images left-right.
    rotation_degrees: largest absolute angle; 0 disables rotation.

  Returns:
    The augmented images, same shape and dtype.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from experiments import input_pipeline
    >>> images = jnp.ones((2, 8, 8, 1))
    >>> input_pipeline.augment(jax.random.key(0), images, crop_padding=0,
    ...                        flip=False, rotation_degrees=0.0).sum()
    Array(128., dtype=float32)
  """
  params = sample_augmentation(
      rng, jnp.shape(images)[0], crop_padding=crop_padding, flip=flip,
      rotation_degrees=rotation_degrees)
  return apply_augmentation(images, params, crop_padding=crop_padding)
