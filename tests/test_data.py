"""Tests for experiments/data: the Dataset, each source and the cache."""

import os
import pickle
import subprocess
import sys
import shutil
import tarfile
import tempfile

import numpy as np
from PIL import Image
import pytest
from sklearn import datasets
from sklearn import model_selection
import tensorflow_datasets as tfds

from experiments import augment
from experiments import data
from experiments.data import cifar10_folder
from experiments.data import folders
from experiments.data import make_image_folder
from experiments.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _temporary_files_in_tmp_path(tmp_path, monkeypatch):
  """Keeps the suite's temporary files out of the system's temporary folder.

  `tfds.builder` of a dataset that is not prepared (every TFDS test here)
  makes an empty ``tempfile.mkdtemp('tfds')`` and never removes it.
  """
  tempdir = tmp_path / 'tempfile'
  tempdir.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(tempdir))


# ----------------------------------------------------------------------------
# digits


def test_digits_split_sizes_and_stratification():
  ds = data.load_digits(test_fraction=0.2, seed=0)
  assert ds.train_images.shape == (1437, 8, 8, 1)
  assert ds.test_images.shape == (360, 8, 8, 1)
  assert ds.train_images.dtype == np.uint8
  assert ds.train_labels.dtype == np.int32
  assert (ds.num_classes, ds.train_clean_labels) == (10, None)
  all_labels = np.concatenate([ds.train_labels, ds.test_labels])
  whole = np.bincount(all_labels, minlength=10)
  np.testing.assert_array_equal(
      whole, np.bincount(datasets.load_digits().target))
  # Each class keeps its share of the whole set, to within one image.
  np.testing.assert_allclose(
      np.bincount(ds.train_labels, minlength=10), whole * 1437 / 1797, atol=1)
  np.testing.assert_allclose(
      np.bincount(ds.test_labels, minlength=10), whole * 360 / 1797, atol=1)


def test_digits_pixels_match_sklearn_rescaled():
  ds = data.load_digits(test_fraction=0.25, seed=3)
  digits = datasets.load_digits()
  train_index, test_index = model_selection.train_test_split(
      np.arange(1797), test_size=0.25, stratify=digits.target, random_state=3)
  # 0..16 intensities map to 0..255: 16 -> 255, 8 -> 127.5 -> 128, 1 -> 16.
  expected = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
  assert (expected.min(), expected.max()) == (0, 255)
  np.testing.assert_array_equal(ds.train_images, expected[train_index])
  np.testing.assert_array_equal(ds.test_images, expected[test_index])
  np.testing.assert_array_equal(ds.train_labels, digits.target[train_index])
  np.testing.assert_array_equal(ds.test_labels, digits.target[test_index])
  eights = digits.images[train_index, ..., None] == 8
  assert np.all(ds.train_images[eights] == 128)


def test_digits_split_is_deterministic_and_seeded():
  a = data.load_digits(seed=0)
  b = data.load_digits(seed=0)
  c = data.load_digits(seed=1)
  np.testing.assert_array_equal(a.train_images, b.train_images)
  np.testing.assert_array_equal(a.test_labels, b.test_labels)
  assert not np.array_equal(a.train_labels, c.train_labels)


def test_channel_mean_std_and_normalize():
  ds = data.load_digits()
  mean, std = ds.channel_mean_std
  pixels = ds.train_images.astype(np.float64) / 255
  np.testing.assert_allclose(mean, pixels.mean(axis=(0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, pixels.std(axis=(0, 1, 2)), rtol=1e-6)
  normalized = np.asarray(augment.normalize(ds.train_images, mean, std))
  assert normalized.dtype == np.float32
  np.testing.assert_allclose(normalized.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(normalized.std(axis=(0, 1, 2)), 1, atol=1e-5)


def test_dataset_rejects_out_of_range_labels():
  images = np.zeros((2, 2, 2, 1), np.uint8)
  with pytest.raises(ValueError, match=r'test_labels must lie in \[0, 3\)'):
    data.Dataset('x', images, np.zeros(2, np.int32), images,
                 np.array([0, -1], np.int32), 3, ('a', 'b', 'c'))


# ----------------------------------------------------------------------------
# TFDS, on tfds.testing.mock_data (its data_source mock needs no TensorFlow)


def _read_mock(name, split, keys):
  source = tfds.data_source(name, split=split)
  return {k: np.stack([source[i][k] for i in range(len(source))])
          for k in keys}


def test_tfds_cifar10_matches_data_source():
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load_tfds('cifar10')
    train = _read_mock('cifar10', 'train', ['image', 'label'])
    test = _read_mock('cifar10', 'test', ['image', 'label'])
  assert ds.train_images.shape == (6, 32, 32, 3)
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  np.testing.assert_array_equal(ds.train_images, train['image'])
  np.testing.assert_array_equal(ds.train_labels, train['label'])
  np.testing.assert_array_equal(ds.test_images, test['image'])
  np.testing.assert_array_equal(ds.test_labels, test['label'])
  assert (ds.num_classes, len(ds.class_names)) == (10, 10)
  assert ds.train_clean_labels is None


@pytest.mark.parametrize('label_key', [None, 'worse_label', 'random_label3'])
def test_tfds_cifar10_n_label_keys(label_key):
  with tfds.testing.mock_data(num_examples=8):
    ds = data.load_tfds('cifar10_n', label_key=label_key)
    keys = ['image', 'label', 'aggre_label', 'worse_label', 'random_label3']
    train = _read_mock('cifar10_n', 'train', keys)
    test = _read_mock('cifar10_n', 'test', ['label'])
  noisy = train[label_key or 'aggre_label']
  assert not np.array_equal(noisy, train['label'])  # The key matters.
  np.testing.assert_array_equal(ds.train_labels, noisy)
  np.testing.assert_array_equal(ds.train_clean_labels, train['label'])
  np.testing.assert_array_equal(ds.train_images, train['image'])
  # Test labels are the clean 'label' (the builder's noisy test keys are -1).
  np.testing.assert_array_equal(ds.test_labels, test['label'])


def test_tfds_cifar100_n_noise_label():
  with tfds.testing.mock_data(num_examples=5):
    ds = data.load_tfds('cifar100_n')
    train = _read_mock('cifar100_n', 'train', ['noise_label', 'label'])
  assert ds.num_classes == 100
  np.testing.assert_array_equal(ds.train_labels, train['noise_label'])
  np.testing.assert_array_equal(ds.train_clean_labels, train['label'])


@pytest.mark.parametrize('name,label_key', [
    ('cifar10_n', 'label'), ('cifar10_n', 'aggre'),
    ('cifar100_n', 'noisy_label'), ('cifar10', 'image'), ('cifar10', 'nope')])
def test_tfds_bad_label_key(name, label_key):
  with tfds.testing.mock_data(num_examples=2):
    with pytest.raises(ValueError, match='label_key'):
      data.load_tfds(name, label_key=label_key)


def test_tfds_missing_data_names_the_build_command(tmp_path):
  with pytest.raises(data.DataError, match=(
      r"TFDS dataset 'cifar10_n' is not prepared.*pip install tensorflow "
      r"importlib_resources && .*tfds.builder\('cifar10_n', data_dir='.*', "
      r"file_format='array_record'\).download_and_prepare\(download_config="
      r"tfds.download.DownloadConfig\(manual_dir='MANUAL_DIR'\)\)")):
    data.load_tfds('cifar10_n', data_dir=str(tmp_path))
  # CIFAR-10 can also come from the python batches, without TensorFlow.
  with pytest.raises(data.DataError, match=(
      'make_image_folder --source python-batches')) as error:
    data.load_tfds('cifar10', data_dir=str(tmp_path))
  assert '\n' not in str(error.value)
  # And offline from the image-folder archive, where it is looked for.
  assert ('or, offline, train on the image-folder copy with '
          '--config.dataset=cifar10_jpeg, which extracts the archive '
          'cifar10-jpeg.tar.gz from $OGC_SHARED_DATA (by default '
          '../shared/data beside the repository' in str(error.value))
  assert issubclass(data.DataError, ConfigError)


def test_the_prepare_command_is_a_call_of_the_pinned_tfds(tmp_path,
                                                          monkeypatch):
  # Its Python part, run with the preparing stubbed out (it downloads, and
  # needs TensorFlow): a builder of the array_record format in the folder
  # given, and download_and_prepare called as the advice says.
  command = data.tfds.prepare_command('cifar10_n', tmp_path, 'MANUAL_DIR')
  pip, code = command.split(' && python -c ')
  assert pip == 'pip install tensorflow importlib_resources'
  calls = []
  monkeypatch.setattr(
      tfds.core.DatasetBuilder, 'download_and_prepare',
      lambda self, **kwargs: calls.append((self, kwargs)))
  exec(code.strip('"'), {})  # pylint: disable=exec-used
  ((builder, kwargs),) = calls
  assert builder.name == 'cifar10_n' and os.fspath(
      builder.data_dir).startswith(str(tmp_path))
  assert builder.info.file_format.value == 'array_record'
  assert os.fspath(kwargs['download_config'].manual_dir) == 'MANUAL_DIR'


def test_tfds_prepared_as_tfrecord_says_to_rebuild(tmp_path):
  # What preparing without file_format='array_record' leaves: metadata of
  # a tfrecord dataset, which data_source cannot read.
  builder = tfds.builder('mnist', data_dir=str(tmp_path))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)
  with pytest.raises(data.DataError, match=(
      r"'mnist' is prepared in the tfrecord format in .*: delete that folder.*"
      r"tfds.builder\('mnist', .*file_format='array_record'\)")):
    data.load_tfds('mnist', data_dir=str(tmp_path))


# ----------------------------------------------------------------------------
# Image folders


def _write_folder(root, shapes, channels=3, seed=0):
  """Writes root/{split}/{class}/{i}.png; returns {relative path: pixels}."""
  rng = np.random.default_rng(seed)
  written = {}
  for split, counts in shapes.items():
    for class_name, sizes in counts.items():
      os.makedirs(os.path.join(root, split, class_name), exist_ok=True)
      for i, (height, width) in enumerate(sizes):
        pixels = rng.integers(0, 256, (height, width, channels), np.uint8)
        path = f'{split}/{class_name}/{i:02d}.png'
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(
            os.path.join(root, path))
        written[path] = pixels
  return written


# Class folders deliberately not in sorted order of creation.
_LAYOUT = {
    'train': {'zebra': [(5, 4)] * 3, 'ant': [(5, 4)] * 2, 'cat': [(5, 4)] * 2},
    'test': {'cat': [(5, 4)], 'zebra': [(5, 4)] * 2},
}


def test_image_folder_decodes_exact_pixels_and_sorted_classes(tmp_path):
  written = _write_folder(tmp_path, _LAYOUT)
  ds = data.load_image_folder(tmp_path)
  assert ds.class_names == ('ant', 'cat', 'zebra')
  np.testing.assert_array_equal(ds.train_labels, [0, 0, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(ds.test_labels, [1, 2, 2])
  order = ['train/ant/00.png', 'train/ant/01.png', 'train/cat/00.png',
           'train/cat/01.png', 'train/zebra/00.png', 'train/zebra/01.png',
           'train/zebra/02.png']
  np.testing.assert_array_equal(ds.train_images,
                                np.stack([written[p] for p in order]))
  np.testing.assert_array_equal(
      ds.test_images, np.stack([written[p] for p in
                                ['test/cat/00.png', 'test/zebra/00.png',
                                 'test/zebra/01.png']]))
  assert ds.train_clean_labels is None


def test_image_folder_grayscale_has_one_channel(tmp_path):
  written = _write_folder(tmp_path, _LAYOUT, channels=1)
  ds = data.load_image_folder(tmp_path)
  assert ds.train_images.shape == (7, 5, 4, 1)
  np.testing.assert_array_equal(ds.test_images[0], written['test/cat/00.png'])


def test_image_folder_sizes(tmp_path):
  _write_folder(tmp_path, {'train': {'a': [(5, 4), (6, 4)]},
                           'test': {'a': [(5, 4)]}})
  with pytest.raises(ValueError, match='is 6x4 but .* is 5x4; pass image_size'):
    data.load_image_folder(tmp_path)
  ds = data.load_image_folder(tmp_path, image_size=(3, 7))
  assert ds.train_images.shape == (2, 3, 7, 3)


def test_image_folder_labels_csv(tmp_path):
  _write_folder(tmp_path, _LAYOUT)
  csv_path = tmp_path / 'labels.csv'
  csv_path.write_text('path,label\ntrain/ant/01.png,zebra\n'
                      'train/zebra/00.png,1\ntrain/cat/00.png,cat\n')
  ds = data.load_image_folder(tmp_path, labels_csv=csv_path)
  np.testing.assert_array_equal(ds.train_labels, [0, 2, 1, 1, 1, 2, 2])
  np.testing.assert_array_equal(ds.train_clean_labels, [0, 0, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(ds.test_labels, [1, 2, 2])


@pytest.mark.parametrize('row,message', [
    ('train/ant/07.png,0', "'train/ant/07.png' is not a train image"),
    ('test/cat/00.png,0', "'test/cat/00.png' is not a train image"),
    ('train/ant/00.png,dog', "unknown class 'dog'"),
    ('train/ant/00.png,3', r'label 3 is outside \[0, 3\)'),
    ('train/ant/00.png', 'expected "path,label"'),
])
def test_image_folder_labels_csv_errors(tmp_path, row, message):
  _write_folder(tmp_path, _LAYOUT)
  csv_path = tmp_path / 'labels.csv'
  csv_path.write_text(row + '\n')
  with pytest.raises(ValueError, match=message):
    data.load_image_folder(tmp_path, labels_csv=csv_path)


def test_load_dataset_cache_hit_and_invalidation(tmp_path, monkeypatch):
  root, cache = tmp_path / 'data', tmp_path / 'cache'
  _write_folder(root, _LAYOUT)
  first = data.load_dataset(f'folder:{root}', cache_dir=cache)
  assert [p.suffix for p in cache.iterdir()] == ['.npz']  # No temporary left.

  decoded = []
  decode = folders._decode_image

  def counting_decode(path):
    decoded.append(path)
    return decode(path)

  def failing_decode(path):
    raise AssertionError(f'decoded {path} despite the cache')

  monkeypatch.setattr(folders, '_decode_image', failing_decode)
  second = data.load_dataset(f'folder:{root}', cache_dir=cache)
  for field in ('train_images', 'train_labels', 'test_images', 'test_labels'):
    np.testing.assert_array_equal(getattr(second, field),
                                  getattr(first, field))
  assert second.class_names == first.class_names
  assert second.train_clean_labels is None

  # A new file changes the key: everything is decoded again, once.
  Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(root / 'train/ant/99.png')
  monkeypatch.setattr(folders, '_decode_image', counting_decode)
  third = data.load_dataset(f'folder:{root}', cache_dir=cache)
  assert len(decoded) == 11 and third.train_images.shape == (8, 5, 4, 3)
  assert len(list(cache.iterdir())) == 2

  # A labels CSV is part of the key; its labels survive the cache.
  csv_path = tmp_path / 'labels.csv'
  csv_path.write_text('train/ant/99.png,zebra\n')
  data.load_dataset(str(root), labels_csv=csv_path, cache_dir=cache)
  monkeypatch.setattr(folders, '_decode_image', failing_decode)
  cached = data.load_dataset(str(root), labels_csv=csv_path,
                             cache_dir=cache)
  assert cached.train_labels[2] == 2 and cached.train_clean_labels[2] == 0


def test_load_dataset_digits_and_argument_errors(tmp_path):
  ds = data.load_dataset('digits')
  assert ds.train_images.shape == (1437, 8, 8, 1)
  with pytest.raises(ValueError, match='not both'):
    data.load_dataset('cifar10_n', label_key='aggre_label',
                      labels_csv='x.csv')
  with pytest.raises(ValueError, match='has no train/ folder'):
    data.load_dataset(f'folder:{tmp_path}')


def test_image_folder_errors_name_the_layout_and_the_builder(tmp_path):
  with pytest.raises(data.DataError, match=(
      r'image folder .*missing does not exist; expected ROOT/train/<class>/'
      r'\*.png .*make_image_folder')):
    data.load_dataset(f'folder:{tmp_path / "missing"}')
  _write_folder(tmp_path / 'no_test', {'train': {'a': [(2, 2)]}})
  with pytest.raises(data.DataError, match='has no test/ folder; expected'):
    data.load_image_folder(tmp_path / 'no_test')
  _write_folder(tmp_path / 'bad', _LAYOUT)
  (tmp_path / 'bad' / 'train' / 'ant' / '00.png').write_bytes(b'not a png')
  with pytest.raises(data.DataError, match='00.png cannot be decoded'):
    data.load_image_folder(tmp_path / 'bad')


def test_image_folder_ignores_files_that_are_not_images(tmp_path):
  # As docs/bad_input.md says: a README or .DS_Store beside the images is
  # not an error, and not an example.
  written = _write_folder(tmp_path, _LAYOUT)
  (tmp_path / 'train' / 'ant' / 'README.txt').write_text('notes')
  (tmp_path / 'train' / '.DS_Store').write_bytes(b'\0')
  (tmp_path / 'test' / 'cat' / 'labels.csv').write_text('x')
  ds = data.load_image_folder(tmp_path)
  assert len(ds.train_labels) + len(ds.test_labels) == len(written)


@pytest.mark.parametrize('contents,message', [
    (None, 'labels CSV .* does not exist; expected a file of "path,label"'),
    ('directory', 'labels CSV .* is not a file; expected'),
    (b'\xff\xfe\x00bad', 'labels CSV .* cannot be read .*UTF-8'),
])
def test_unreadable_labels_csv(tmp_path, contents, message):
  _write_folder(tmp_path / 'images', _LAYOUT)
  csv_path = tmp_path / 'labels.csv'
  if contents == 'directory':
    csv_path.mkdir()
  elif contents is not None:
    csv_path.write_bytes(contents)
  with pytest.raises(data.DataError, match=message) as error:
    data.load_dataset(f'folder:{tmp_path / "images"}', labels_csv=csv_path,
                      cache_dir=tmp_path / 'cache')
  assert '\n' not in str(error.value)


# ----------------------------------------------------------------------------
# cifar10_jpeg: CIFAR-10 as an image folder, from an archive or built


_SMALL = {'train': 2, 'test': 1}  # images per class of the fake CIFAR-10


def _cifar10_tree(root, per_class=None, seed=0):
  """A fake CIFAR-10 image folder; returns {relative path: pixels}."""
  per_class = per_class or _SMALL
  return _write_folder(root, {
      split: {name: [(4, 4)] * count for name in cifar10_folder.CLASS_NAMES}
      for split, count in per_class.items()}, seed=seed)


def _archive(tree, archive_dir):
  archive_dir.mkdir(exist_ok=True)
  with tarfile.open(archive_dir / cifar10_folder.ARCHIVE, 'w:gz') as tar:
    for split in ('train', 'test'):
      tar.add(tree / split, arcname=split)


def test_cifar10_jpeg_from_the_archive_checks_layout_and_counts(
    tmp_path, monkeypatch):
  monkeypatch.setattr(cifar10_folder, 'IMAGES_PER_CLASS', _SMALL)
  shared = tmp_path / 'shared'
  data_dir = tmp_path / 'data'
  # No folder and no archive: the message says how to make either.
  monkeypatch.setenv('OGC_SHARED_DATA', str(shared))
  with pytest.raises(data.DataError, match=(
      r'cifar10_jpeg: no image folder at .*cifar10-jpeg and no archive at '
      r'.*cifar10-jpeg.tar.gz .*; build it from the '
      r'CIFAR-10 python batches .*make_image_folder --source python-batches '
      r'--input cifar-10-python.tar.gz --out .*cifar10-jpeg')) as error:
    data.load_dataset('cifar10_jpeg', data_dir=data_dir)
  # Where it looked for the archive, and why there.
  assert (f'no archive at {shared}/cifar10-jpeg.tar.gz ($OGC_SHARED_DATA)'
          in str(error.value))

  # An archive with a class short of images is refused, and leaves nothing.
  short = tmp_path / 'short'
  _cifar10_tree(short)
  os.remove(short / 'train' / 'frog' / '01.png')
  _archive(short, shared)
  with pytest.raises(data.DataError, match=(
      r'does not hold the CIFAR-10 image folder \(train/frog holds 1 images, '
      r'not 2\)')):
    data.prepare_cifar10_jpeg(data_dir / 'cifar10-jpeg')
  assert not data_dir.exists() or os.listdir(data_dir) == []

  # The right layout: extracted once, then the archive is not needed.
  tree = tmp_path / 'tree'
  written = _cifar10_tree(tree)
  _archive(tree, shared)
  ds = data.load_dataset('cifar10_jpeg', data_dir=data_dir)
  assert os.listdir(data_dir) == ['cifar10-jpeg']  # No staging left.
  assert ds.class_names == cifar10_folder.CLASS_NAMES
  np.testing.assert_array_equal(ds.train_images[3], written['train/automobile/01.png'])
  (shared / cifar10_folder.ARCHIVE).unlink()
  assert data.load_dataset('cifar10_jpeg', data_dir=data_dir).train_images.shape == (20, 4, 4, 3)

  # A folder there that is not CIFAR-10 is refused, with how to rebuild it.
  os.remove(data_dir / 'cifar10-jpeg' / 'test' / 'cat' / '00.png')
  with pytest.raises(data.DataError, match=(
      r'is not the CIFAR-10 image folder \(test/cat holds 0 images, not 1\); '
      r'remove it and build it')):
    data.load_dataset('cifar10_jpeg', data_dir=data_dir)


def test_cifar10_jpeg_extracted_by_two_runs_at_once(tmp_path, monkeypatch):
  # A sweep's first two runs both extract; the second to finish found dest
  # full and failed ("Directory not empty"). It now uses the first's copy.
  monkeypatch.setattr(cifar10_folder, 'IMAGES_PER_CLASS', _SMALL)
  tree, shared, dest = tmp_path / 'tree', tmp_path / 'shared', tmp_path / 'd'
  _cifar10_tree(tree)
  _archive(tree, shared)
  real_open = tarfile.open

  def open_while_another_run_finishes(*args, **kwargs):
    if not dest.exists():  # the other run's extraction lands meanwhile
      shutil.copytree(tree, dest)
    return real_open(*args, **kwargs)

  monkeypatch.setattr(tarfile, 'open', open_while_another_run_finishes)
  assert data.prepare_cifar10_jpeg(dest, archive_dir=shared) == str(dest)
  assert not [n for n in os.listdir(tmp_path) if n.startswith('.')]  # staging
  # A full dest that is not the CIFAR-10 folder is still an error.
  shutil.rmtree(dest)
  monkeypatch.setattr(tarfile, 'open', lambda *a, **k: (
      dest.mkdir(), (dest / 'x').write_text('x'), real_open(*a, **k))[-1])
  with pytest.raises(OSError):
    data.prepare_cifar10_jpeg(dest, archive_dir=shared)


def test_archive_dir_defaults_to_shared_data_beside_the_repository(
    monkeypatch):
  monkeypatch.delenv('OGC_SHARED_DATA', raising=False)
  assert os.path.normpath(cifar10_folder.default_archive_dir()) == (
      os.path.normpath(os.path.join(REPO, '..', 'shared', 'data')))
  assert cifar10_folder.where_archive_is_looked_for() == (
      os.path.join(cifar10_folder.default_archive_dir(), 'cifar10-jpeg.tar.gz')
      + ' (the default; set $OGC_SHARED_DATA for another folder)')
  monkeypatch.setenv('OGC_SHARED_DATA', '/elsewhere')
  assert cifar10_folder.default_archive_dir() == '/elsewhere'
  assert cifar10_folder.where_archive_is_looked_for() == (
      '/elsewhere/cifar10-jpeg.tar.gz ($OGC_SHARED_DATA)')


def _python_batches(folder, per_batch=3, seed=0):
  """The original CIFAR-10 python batches, tiny: returns images and labels."""
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True)
  names = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
  images, labels = {}, {}
  for name in names:
    # Rows as the originals store them: the R, G, B planes, each row-major.
    rows = rng.integers(0, 256, (per_batch, 3072), np.uint8)
    labels[name] = [int(v) for v in rng.integers(0, 10, per_batch)]
    images[name] = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    with open(folder / name, 'wb') as f:
      pickle.dump({b'batch_label': name.encode(), b'labels': labels[name],
                   b'data': rows, b'filenames': [b'x.png'] * per_batch}, f)
  with open(folder / 'batches.meta', 'wb') as f:
    pickle.dump({b'label_names': [n.encode() for n in
                                  cifar10_folder.CLASS_NAMES],
                 b'num_vis': 3072, b'num_cases_per_batch': per_batch}, f)
  train = [f'data_batch_{i}' for i in range(1, 6)]
  return (np.concatenate([images[n] for n in train]),
          np.concatenate([labels[n] for n in train]),
          images['test_batch'], np.array(labels['test_batch']))


@pytest.mark.parametrize('as_archive', [False, True])
def test_make_image_folder_from_python_batches(tmp_path, capsys, as_archive):
  batches = tmp_path / 'cifar-10-batches-py'
  train_images, train_labels, test_images, test_labels = _python_batches(
      batches)
  source = batches
  if as_archive:
    source = tmp_path / 'cifar-10-python.tar.gz'
    with tarfile.open(source, 'w:gz') as tar:
      tar.add(batches, arcname='cifar-10-batches-py')
  out = tmp_path / 'data' / 'cifar10-jpeg'
  assert make_image_folder.main(['--source', 'python-batches', '--input',
                                 str(source), '--out', str(out)]) == 0
  assert capsys.readouterr().out.endswith(
      'cifar10-jpeg: 15 train and 3 test images of 10 classes (png)\n')
  assert [p.name for p in (tmp_path / 'data').iterdir()] == ['cifar10-jpeg']

  # NNNN is the rank within the class in the batches' order; PNG is exact.
  for i in np.flatnonzero(train_labels == train_labels[7]):
    rank = int(np.sum(train_labels[:i] == train_labels[i]))
    name = cifar10_folder.CLASS_NAMES[train_labels[i]]
    with Image.open(out / 'train' / name / f'{rank:04d}.png') as image:
      np.testing.assert_array_equal(np.asarray(image), train_images[i])
  # Read back, the folder lists each class in the source's order.
  ds = data.load_image_folder(out)
  order = np.argsort(train_labels, kind='stable')
  np.testing.assert_array_equal(ds.train_images, train_images[order])
  np.testing.assert_array_equal(ds.train_labels, train_labels[order])
  test_order = np.argsort(test_labels, kind='stable')
  np.testing.assert_array_equal(ds.test_images, test_images[test_order])
  assert ds.class_names == cifar10_folder.CLASS_NAMES


def test_make_image_folder_from_tfds_mock(tmp_path):
  out = tmp_path / 'data' / 'cifar10-jpeg'
  with tfds.testing.mock_data(num_examples=20):
    assert make_image_folder.main(['--source', 'tfds', '--out', str(out)]) == 0
    source = data.load_tfds('cifar10')
  ds = data.load_image_folder(out)
  order = np.argsort(source.train_labels, kind='stable')
  np.testing.assert_array_equal(ds.train_images, source.train_images[order])
  np.testing.assert_array_equal(ds.train_labels, source.train_labels[order])
  order = np.argsort(source.test_labels, kind='stable')
  np.testing.assert_array_equal(ds.test_images, source.test_images[order])
  # The mock's labels have no names (TFDS's prepared cifar10 names them
  # airplane ... truck): the folders are named '0' .. '9'.
  assert ds.class_names == source.class_names == tuple('0123456789')


def test_make_image_folder_errors(tmp_path, capsys):
  assert make_image_folder.main(['--source', 'python-batches', '--input',
                                 str(tmp_path / 'none.tar.gz'), '--out',
                                 str(tmp_path / 'out')]) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1
  assert 'none.tar.gz does not exist; download the CIFAR-10 python' in err
  (tmp_path / 'batches').mkdir()
  (tmp_path / 'batches' / 'data_batch_1').write_bytes(b'x')
  assert make_image_folder.main(['--source', 'python-batches', '--input',
                                 str(tmp_path / 'batches'), '--out',
                                 str(tmp_path / 'out')]) == 1
  assert "lacks ['data_batch_2'" in capsys.readouterr().err
  _python_batches(tmp_path / 'py')
  (tmp_path / 'out').mkdir()
  (tmp_path / 'out' / 'keep.txt').write_text('mine')
  assert make_image_folder.main(['--source', 'python-batches', '--input',
                                 str(tmp_path / 'py'), '--out',
                                 str(tmp_path / 'out')]) == 1
  assert 'already exists and is not an empty folder' in capsys.readouterr().err
  assert os.listdir(tmp_path / 'out') == ['keep.txt']
  assert sorted(os.listdir(tmp_path)) == ['batches', 'out', 'py', 'tempfile']


# ----------------------------------------------------------------------------
# Data errors through the command line: one line, exit status 1


def test_cli_prints_an_unprepared_tfds_dataset_as_one_line(tmp_path):
  # The CIFAR-10 config's default, TFDS cifar10, on a machine that has not
  # prepared it (TFDS's default data folder is empty).
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.train', '--config',
       os.path.join(REPO, 'experiments/configs/cifar10.py'), '--workdir',
       str(tmp_path / 'run'), f'--config.cache_dir={tmp_path / "cache"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TFDS_DATA_DIR=str(tmp_path / 'tfds'),
               TMPDIR=str(tmp_path)))
  assert proc.returncode == 1, proc.stderr
  lines = [l for l in proc.stderr.splitlines()
           if not l.startswith('WARNING:absl:')]
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith(
      f"error: TFDS dataset 'cifar10' is not prepared in {tmp_path / 'tfds'}. "
      'Prepare it once, on a machine with internet: pip install tensorflow '
      'importlib_resources && python -c "import tensorflow_datasets as tfds; '
      f"tfds.builder('cifar10', data_dir='{tmp_path / 'tfds'}', "
      "file_format='array_record').download_and_prepare()\"")
  assert 'make_image_folder --source python-batches' in lines[0]


@pytest.mark.parametrize('case', ['cifar10_jpeg', 'no_train_folder',
                                  'labels_csv_not_utf8'])
def test_train_and_evaluate_raises_data_errors_as_one_line(
    tmp_path, monkeypatch, case):
  from experiments import train  # pylint: disable=g-import-not-at-top
  from experiments.configs import digits  # pylint: disable=g-import-not-at-top
  config = digits.get_config()
  config.cache_dir = str(tmp_path / 'cache')
  config.data_dir = str(tmp_path / 'data')
  monkeypatch.setenv('OGC_SHARED_DATA', str(tmp_path / 'no_archive'))
  images = tmp_path / 'images'
  if case == 'cifar10_jpeg':
    config.dataset, message = 'cifar10_jpeg', 'make_image_folder --source'
  elif case == 'no_train_folder':
    (images / 'test').mkdir(parents=True)
    config.dataset, message = f'folder:{images}', 'has no train/ folder'
  else:
    _write_folder(images, _LAYOUT)
    (tmp_path / 'labels.csv').write_bytes(b'\xff\xfe\x00')
    config.dataset, config.labels_csv = f'folder:{images}', str(
        tmp_path / 'labels.csv')
    config.noise.kind, config.noise.rate = 'none', 0.0
    message = 'cannot be read'
  with pytest.raises(ConfigError, match=message) as error:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert isinstance(error.value, data.DataError)
  assert '\n' not in str(error.value)


def test_cifar10_cpu_config_reads_tfds_and_its_image_folder_alike(tmp_path):
  # configs/cifar10_cpu.py defaults to TFDS cifar10; its table ran on an
  # image-folder copy. From the same source, both give the same training
  # images with the same true labels (the folder is in class order), and the
  # authors' protocol moves the same number of labels.
  from experiments import input_pipeline
  from experiments.configs import cifar10_cpu
  out = tmp_path / 'folder'
  config = cifar10_cpu.get_config()
  config.cache_dir = str(tmp_path / 'cache')
  config.noise.protocol = 'authors'
  # 300 images: about 30 a class, so that the protocol's int(0.4 / 9 * n)
  # moves at least one label of each class to each other class.
  with tfds.testing.mock_data(num_examples=300):
    assert make_image_folder.main(['--source', 'tfds', '--out', str(out)]) == 0
    from_tfds = input_pipeline.load_data(config)
  config.dataset = f'folder:{out}'
  from_folder = input_pipeline.load_data(config)

  def rows(d):
    flat = d.images.reshape(len(d.images), -1)
    order = np.lexsort(np.c_[flat, d.true_labels].T[::-1])
    return flat[order], np.asarray(d.true_labels)[order]

  for a, b in zip(rows(from_tfds), rows(from_folder)):
    np.testing.assert_array_equal(a, b)
  assert (from_tfds.labels != from_tfds.true_labels).sum() == (
      from_folder.labels != from_folder.true_labels).sum() > 0
