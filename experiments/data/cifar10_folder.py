"""``cifar10_jpeg``: CIFAR-10 as an image folder, checked by layout and counts.

The folder holds ``train/<class>/NNNN.<ext>`` (5,000 per class) and
``test/<class>/NNNN.<ext>`` (1,000 per class), the ten CIFAR-10 classes,
NNNN the image's rank within its class in the original CIFAR-10 order.
`prepare_cifar10_jpeg` finds it, or extracts it from an archive
``cifar10-jpeg.tar.gz`` of that layout, and checks it;
`experiments.data.folders.load_image_folder` reads it.
``python -m experiments.data.make_image_folder`` builds it from TFDS or from
the original python batches.
"""

import os
import tarfile

from experiments import files
from experiments.data import folders
from experiments.data.dataset import DataError
from experiments.data.tfds import CIFAR10_PYTHON_URL

ARCHIVE = 'cifar10-jpeg.tar.gz'
CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
               'horse', 'ship', 'truck')
IMAGES_PER_CLASS = {'train': 5000, 'test': 1000}


def default_archive_dir() -> str:
  """``$OGC_SHARED_DATA``, else ``shared/data`` beside the repository.

  A folder several checkouts share, so the archive is not copied into each.
  """
  repo = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  return os.environ.get(
      'OGC_SHARED_DATA', os.path.join(repo, '..', 'shared', 'data'))


def where_archive_is_looked_for(archive_dir=None) -> str:
  """Where `prepare_cifar10_jpeg` looks for the archive, and why there.

  Without ``archive_dir``, `default_archive_dir` with the reason: with
``OGC_SHARED_DATA=/data``, ``'/data/cifar10-jpeg.tar.gz ($OGC_SHARED_DATA)'``.

  Example:
    >>> where_archive_is_looked_for('/data')
    '/data/cifar10-jpeg.tar.gz'
  """
  if archive_dir is not None:
    return os.path.join(archive_dir, ARCHIVE)
  why = ('$OGC_SHARED_DATA' if 'OGC_SHARED_DATA' in os.environ
         else 'the default; set $OGC_SHARED_DATA for another folder')
  return f'{os.path.join(default_archive_dir(), ARCHIVE)} ({why})'


def _how_to_build(dest) -> str:
  return (f'build it from the CIFAR-10 python batches ({CIFAR10_PYTHON_URL}) '
          'with: python -m experiments.data.make_image_folder --source '
          f'python-batches --input cifar-10-python.tar.gz --out {dest} (from a '
          'prepared TFDS cifar10: --source tfds)')


def layout_problem(root) -> str | None:
  """What keeps ``root`` from being the CIFAR-10 image folder, or None.

  It must hold ``train/`` and ``test/``, each with exactly the ten CIFAR-10
  class folders, each holding `IMAGES_PER_CLASS` images (``.png``, ``.jpg``
  or ``.jpeg``).
  """
  for split, count in IMAGES_PER_CLASS.items():
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
      return f'it has no {split}/ folder'
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if classes != sorted(CLASS_NAMES):
      return (f'{split}/ has the class folders {classes}, not the CIFAR-10 '
              f'classes {sorted(CLASS_NAMES)}')
    for name in CLASS_NAMES:
      found = sum(1 for e in os.scandir(os.path.join(split_dir, name))
                  if e.is_file()
                  and e.name.lower().endswith(folders.IMAGE_EXTENSIONS))
      if found != count:
        return f'{split}/{name} holds {found} images, not {count}'
  return None


def prepare_cifar10_jpeg(dest, archive_dir=None) -> str:
  """The CIFAR-10 image folder at ``dest``, extracted there if need be.

  A folder already at ``dest`` is checked (`layout_problem`) and used. Else the
  archive ``cifar10-jpeg.tar.gz`` in ``archive_dir`` is extracted beside
  ``dest``, checked, and renamed to it, so an interrupted or bad extraction
  leaves nothing at ``dest``.

  Args:
    dest: folder to hold ``train/`` and ``test/``; absent, empty or complete.
    archive_dir: folder holding ``cifar10-jpeg.tar.gz``; defaults to
      `default_archive_dir`.

  Returns:
    ``dest``, the root to pass to
    `experiments.data.folders.load_image_folder`.

  Raises:
    DataError: no folder at ``dest`` and no archive, or a folder or archive
      without the CIFAR-10 layout and counts; the message says how to build
      the folder.
  """
  dest = os.path.abspath(os.fspath(dest))
  if os.path.isdir(dest) and os.listdir(dest):
    problem = layout_problem(dest)
    if problem:
      raise DataError(f'cifar10_jpeg: {dest} is not the CIFAR-10 image folder '
                      f'({problem}); remove it and {_how_to_build(dest)}.')
    return dest
  looked_at = where_archive_is_looked_for(archive_dir)
  archive_dir = archive_dir or default_archive_dir()
  archive = os.path.join(archive_dir, ARCHIVE)
  if not os.path.isfile(archive):
    raise DataError(
        f'cifar10_jpeg: no image folder at {dest} and no archive at '
        f'{looked_at}; {_how_to_build(dest)}, or give '
        '--config.data_dir=DIR where DIR/cifar10-jpeg is one.')
  try:
    with files.staged_folder(dest) as staging:  # dest is empty or absent
      try:
        with tarfile.open(archive) as tar:
          tar.extractall(staging, filter='data')
      except (OSError, tarfile.TarError) as e:
        raise DataError(f'{archive} cannot be extracted ({e}); '
                        f'{_how_to_build(dest)}.') from None
      problem = layout_problem(staging)
      if problem:
        raise DataError(f'cifar10_jpeg: {archive} does not hold the CIFAR-10 '
                        f'image folder ({problem}); {_how_to_build(dest)}.')
  except OSError:
    # Two runs started together (a sweep's first two) both extract; the
    # one that moves its copy second finds dest full. Its copy is dropped
    # and the first one's used, once checked.
    if not (os.path.isdir(dest) and os.listdir(dest)
            and layout_problem(dest) is None):
      raise
  return dest
