"""Tests for experiments/data: the Dataset, each source and the cache."""

import hashlib
import os
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
from experiments.data import folders
from experiments.data import shared_cifar10

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
  with pytest.raises(ValueError, match=(
      r'cifar10_n is not prepared.*tfds build cifar10_n '
      r'--data_dir=.* --manual_dir=MANUAL_DIR --file_format=array_record')):
    data.load_tfds('cifar10_n', data_dir=str(tmp_path))


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


# ----------------------------------------------------------------------------
# The shared CIFAR-10 copy


def test_unpack_shared_cifar10_and_load_dataset(tmp_path, monkeypatch):
  tree = tmp_path / 'tree'
  written = _write_folder(tree, {'train': {'cat': [(4, 4)] * 2},
                                 'test': {'cat': [(4, 4)]}})
  shared = tmp_path / 'shared'
  shared.mkdir()
  archive = shared / shared_cifar10.SHARED_CIFAR10_ARCHIVE
  with tarfile.open(archive, 'w:gz') as tar:
    for split in ('train', 'test'):
      tar.add(tree / split, arcname=split)
  out = tmp_path / 'data' / 'cifar10-jpeg'
  with pytest.raises(ValueError, match='expected d877bdec'):
    data.unpack_shared_cifar10(out, shared)
  assert not out.exists()

  digest = hashlib.sha256(archive.read_bytes()).hexdigest()
  monkeypatch.setattr(shared_cifar10, 'SHARED_CIFAR10_SHA256', digest)
  monkeypatch.setenv('OGC_SHARED_DATA', str(shared))
  root = data.unpack_shared_cifar10(out)
  assert root == str(out)
  assert os.listdir(tmp_path / 'data') == ['cifar10-jpeg']  # No staging left.
  # Already extracted: the archive is not needed again.
  archive.unlink()
  ds = data.load_dataset('cifar10_jpeg', data_dir=tmp_path / 'data')
  np.testing.assert_array_equal(ds.train_images[1], written['train/cat/01.png'])
  assert ds.class_names == ('cat',)


def test_shared_data_defaults_to_the_folder_beside_the_repository(
    monkeypatch):
  monkeypatch.delenv('OGC_SHARED_DATA', raising=False)
  assert os.path.normpath(shared_cifar10._default_shared_data_dir()) == (
      os.path.normpath(os.path.join(REPO, '..', 'shared', 'data')))
  monkeypatch.setenv('OGC_SHARED_DATA', '/elsewhere')
  assert shared_cifar10._default_shared_data_dir() == '/elsewhere'
