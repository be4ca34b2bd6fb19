"""The shared CIFAR-10 copy: a checksummed archive of JPEG image folders.

`unpack_shared_cifar10` checks ``cifar10-jpeg.tar.gz`` against its sha256 and
extracts it once; `experiments.data.folders.load_image_folder` reads the
result.
"""

import hashlib
import os
import tarfile
import tempfile

SHARED_CIFAR10_ARCHIVE = 'cifar10-jpeg.tar.gz'
SHARED_CIFAR10_SHA256 = (
    'd877bdec11f54282b92da36e9f045bd305d663b1223e3822baff39ca9ff6690a')


def _default_shared_data_dir():
  # The repository sits beside ../shared; OGC_SHARED_DATA overrides.
  repo = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
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
    ``dest``, the root to pass to
    `experiments.data.folders.load_image_folder`.
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
