"""Image folders ``root/{train,test}/<class>/*.{jpg,jpeg,png}`` and label CSVs.

An optional CSV of ``path,label`` rows replaces the folder labels of the
listed training images: this is how a user brings crowd-sourced labels for
their own images.
"""

import concurrent.futures
import csv
import os

import numpy as np
from PIL import Image

from experiments.data.dataset import DataError
from experiments.data.dataset import Dataset

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
# What every layout error adds: the layout, and how to make one from CIFAR-10.
LAYOUT = ('expected ROOT/train/<class>/*.png and ROOT/test/<class>/*.png (or '
          '.jpg); python -m experiments.data.make_image_folder builds one from '
          'CIFAR-10')


def _decode_image(path):
  """Decodes an image to uint8 ``[H, W, 1]`` (grayscale) or ``[H, W, 3]``."""
  try:
    with Image.open(path) as image:
      if image.mode in ('L', '1', 'I;16', 'I'):
        array = np.asarray(image.convert('L'))[..., None]
      else:
        array = np.asarray(image.convert('RGB'))
  except OSError as e:  # PIL.UnidentifiedImageError included
    raise DataError(f'{path} cannot be decoded as an image: {e}') from None
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
    what = 'has no train/ folder' if os.path.isdir(root) else 'does not exist'
    raise DataError(f'image folder {root} {what}; {LAYOUT}.')
  classes = sorted(entry.name for entry in os.scandir(train_dir)
                   if entry.is_dir())
  if not classes:
    raise DataError(f'{train_dir} has no class subfolders; {LAYOUT}.')
  return classes


def _folder_files(root, split, classes):
  """Sorted ``(relative path, folder label)`` of the images of one split."""
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    raise DataError(f'image folder {root} has no {split}/ folder; {LAYOUT}.')
  unknown = sorted(entry.name for entry in os.scandir(split_dir)
                   if entry.is_dir() and entry.name not in classes)
  if unknown:
    raise DataError(f'{split_dir} has classes {unknown} that train/ lacks.')
  files = []
  for label, class_name in enumerate(classes):
    class_dir = os.path.join(split_dir, class_name)
    if not os.path.isdir(class_dir):
      continue
    names = sorted(entry.name for entry in os.scandir(class_dir)
                   if entry.is_file()
                   and entry.name.lower().endswith(IMAGE_EXTENSIONS))
    files.extend((f'{split}/{class_name}/{n}', label) for n in names)
  if not files:
    raise DataError(f'{split_dir} holds no {"/".join(IMAGE_EXTENSIONS)} '
                    f'images; {LAYOUT}.')
  return files


def _read_labels_csv(labels_csv, train_paths, classes):
  """Maps train image index -> label for the rows of a ``path,label`` CSV."""
  index_of = {path: i for i, path in enumerate(train_paths)}
  class_index = {name: i for i, name in enumerate(classes)}
  overrides = {}
  try:
    with open(labels_csv, newline='', encoding='utf-8') as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DataError(
        f'labels CSV {labels_csv} cannot be read ({e}); expected a UTF-8 text '
        'file of "path,label" rows, path relative to the image folder.'
        ) from None
  for line_number, row in enumerate(rows, start=1):
    if not row or not ''.join(row).strip():
      continue
    if len(row) != 2:
      raise DataError(f'{labels_csv}:{line_number}: expected "path,label", '
                       f'got {row!r}.')
    path, label = (part.strip() for part in row)
    if line_number == 1 and (path, label) == ('path', 'label'):
      continue
    path = os.path.normpath(path).replace(os.sep, '/')
    if path not in index_of:
      raise DataError(
          f'{labels_csv}:{line_number}: {path!r} is not a train image of the '
          'folder (paths are relative to the root, e.g. train/cat/0001.jpg).')
    if label in class_index:
      label = class_index[label]
    else:
      try:
        label = int(label)
      except ValueError:
        raise DataError(
            f'{labels_csv}:{line_number}: unknown class {label!r}; classes '
            f'are {classes} or their indices.') from None
      if not 0 <= label < len(classes):
        raise DataError(
            f'{labels_csv}:{line_number}: label {label} is outside '
            f'[0, {len(classes)}).')
    if index_of[path] in overrides:
      raise DataError(f'{labels_csv}:{line_number}: {path!r} is listed '
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
    DataError: a missing folder, an image that cannot be decoded, images of
      differing size without ``image_size``, a labels CSV that cannot be read
      or a row naming an unknown image or class.
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
        raise DataError(
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


def train_files(root) -> list[str]:
  """The training images of a folder, relative to ``root``, in the order of
  `load_image_folder`'s ``train_images``.

  Each is named as a labels CSV names it (``train/cat/0001.jpg``).
  """
  root = os.fspath(root)
  return [path for path, _ in _folder_files(root, 'train',
                                            _folder_classes(root))]


def image_files(root) -> list[str]:
  """The train and test images of a folder, as paths relative to ``root``.

  These are the files `load_image_folder` decodes, in its order; the cache
  key of `experiments.data.load_dataset` covers them.
  """
  root = os.fspath(root)
  classes = _folder_classes(root)
  return [path for split in ('train', 'test')
          for path, _ in _folder_files(root, split, classes)]
