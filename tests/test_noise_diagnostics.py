"""The noise a run trains on, as `experiments.train` builds and reports it.

Covers the config keys ``noise.protocol`` and ``noise.seed`` and the
diagnostics of every run: ``true_noise_rate`` (metrics.jsonl, result.json) is
the realised fraction of training labels that differ from the true ones, also
when the noise comes with the data (a labels CSV over an image folder), and
result.json holds the realised transition matrix.
"""

import json
import os

import numpy as np
from PIL import Image
import pytest

from experiments import input_pipeline
from experiments import train
from experiments import noise as noise_lib


@pytest.fixture
def one_epoch(tiny_config):
  """``one_epoch(**overrides)``: `tiny_config` for one epoch, no queues."""
  return lambda **overrides: tiny_config(
      num_epochs=1, final_epochs=1, save_queues=False, **overrides)


def _read(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  with open(os.path.join(workdir, 'result.json')) as f:
    return rows, json.load(f)


def _write_image_folder(root, per_class, num_test=4, seed=0):
  """root/{train,test}/{a,b,c}/NN.png, 8x8 RGB noise images."""
  rng = np.random.default_rng(seed)
  for split, count in (('train', per_class), ('test', num_test)):
    for name in ('a', 'b', 'c'):
      os.makedirs(root / split / name)
      for i in range(count):
        pixels = rng.integers(0, 256, (8, 8, 3), np.uint8)
        Image.fromarray(pixels).save(root / split / name / f'{i:02d}.png')


@pytest.mark.slow
def test_labels_csv_run_reports_the_realised_noise(tmp_path, one_epoch):
  root = tmp_path / 'data'
  _write_image_folder(root, per_class=20)
  # Five images of a relabelled b, two of b relabelled c, one of c kept as c
  # (listed but unchanged): 7 of 60 labels differ from the folder's.
  rows = ([f'train/a/{i:02d}.png,b' for i in range(5)]
          + ['train/b/03.png,2', 'train/b/07.png,c', 'train/c/00.png,c'])
  csv_path = tmp_path / 'labels.csv'
  csv_path.write_text('path,label\n' + '\n'.join(rows) + '\n')
  config = one_epoch(dataset=f'folder:{root}', labels_csv=str(csv_path),
                   method='ce', batch_size=16, model='mlp',
                   **{'noise.kind': 'none', 'noise.rate': 0.0})
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  metrics, result = _read(workdir)
  assert [r['true_noise_rate'] for r in metrics] == [7 / 60]
  assert result['true_noise_rate'] == 7 / 60
  assert result['transition_matrix'] == [
      [15 / 20, 5 / 20, 0.0], [0.0, 18 / 20, 2 / 20], [0.0, 0.0, 1.0]]


def test_labels_csv_refuses_added_noise(tmp_path, one_epoch):
  root = tmp_path / 'data'
  _write_image_folder(root, per_class=2, num_test=1)
  csv_path = tmp_path / 'labels.csv'
  csv_path.write_text('train/a/00.png,b\n')
  for noise in ({'noise.kind': 'symmetric'},
                {'noise.kind': 'none', 'noise.rate': 0.2}):
    config = one_epoch(dataset=f'folder:{root}',
                     labels_csv=str(csv_path), **noise)
    with pytest.raises(ValueError, match='brings its own noisy labels'):
      train.load_data(config)


@pytest.mark.slow
def test_authors_protocol_run_realises_truncated_counts(tmp_path, one_epoch):
  config = one_epoch(method='ce',
                   **{'noise.protocol': 'authors', 'seed': 5})
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  metrics, result = _read(workdir)
  true = train.load_data(one_epoch(
      **{'noise.kind': 'none', 'noise.rate': 0.0})).true_labels
  # By hand: int(0.4 / 9 * n_i) labels of class i go to each other class.
  sizes = np.bincount(true, minlength=10)
  per_cell = np.floor(0.4 / 9 * sizes)
  assert per_cell.tolist() == [6.0] * 10  # 137 to 147 images a class
  expected = per_cell[:, None] / sizes[:, None] * (1 - np.eye(10))
  expected += np.diag(1 - 9 * per_cell / sizes)
  np.testing.assert_allclose(result['transition_matrix'], expected,
                             rtol=0, atol=1e-15)
  assert result['true_noise_rate'] == pytest.approx(540 / true.size, abs=1e-15)
  assert metrics[0]['true_noise_rate'] == result['true_noise_rate']


def test_noise_seed_and_protocol_keys(tmp_path, one_epoch):
  def given(**overrides):
    return train.load_data(one_epoch(**overrides)).labels

  data = train.load_data(one_epoch())
  labels, true, out = data.labels, data.true_labels, data.noise
  # Protocol 'ours' without noise.seed: the run's seed, as before the keys.
  np.testing.assert_array_equal(
      labels, noise_lib.symmetric(true, 10, 0.4, seed=0).labels)
  np.testing.assert_array_equal(
      given(seed=3), noise_lib.symmetric(true, 10, 0.4, seed=3).labels)
  np.testing.assert_array_equal(given(seed=3, **{'noise.seed': 0}), labels)
  assert out.noise_rate == np.mean(labels != true)
  # The authors' protocol: their seed 0 whatever the run's seed, unless set.
  authors = given(**{'noise.protocol': 'authors'})
  np.testing.assert_array_equal(given(seed=7, **{'noise.protocol': 'authors'}),
                                authors)
  np.testing.assert_array_equal(
      authors, noise_lib.symmetric(true, 10, 0.4, seed=0,
                                   protocol='authors').labels)
  assert np.any(given(**{'noise.protocol': 'authors', 'noise.seed': 1})
                != authors)
  with pytest.raises(ValueError, match="protocol.*'ours', 'authors'"):
    given(**{'noise.protocol': 'paper'})


def test_authors_protocol_uses_their_cifar100_map(tmp_path, monkeypatch,
                                                 one_epoch):
  # TFDS CIFAR-100 is not on this machine: a 100-class stand-in with the
  # name the config uses, 5 training images a class.
  images = np.zeros((500, 2, 2, 3), np.uint8)
  stand_in = input_pipeline.data_lib.Dataset(
      name='cifar100', train_images=images,
      train_labels=np.arange(100, dtype=np.int32).repeat(5),
      test_images=images[:10], test_labels=np.arange(10, dtype=np.int32),
      num_classes=100, class_names=tuple(map(str, range(100))))
  monkeypatch.setattr(input_pipeline.data_lib, 'load_dataset',
                      lambda *args, **kwargs: stand_in)
  blocks = noise_lib.ASYMMETRIC_MAPPINGS['cifar100_blocks']
  superclasses = noise_lib.ASYMMETRIC_MAPPINGS['cifar100']
  for protocol, mapping, targets in (('authors', None, blocks),
                                     ('authors', 'cifar100', superclasses),
                                     ('ours', None, superclasses)):
    data = train.load_data(one_epoch(
        dataset='cifar100', **{
            'noise.kind': 'asymmetric', 'noise.protocol': protocol,
            'noise.mapping': mapping}))
    labels, true, out = data.labels, data.true_labels, data.noise
    moved = labels != true
    np.testing.assert_array_equal(labels[moved],
                                  [targets[c] for c in true[moved]])
    if protocol == 'authors':  # int(0.4 * 5) = 2 of each class's 5 images
      np.testing.assert_array_equal(np.bincount(true[moved], minlength=100),
                                    np.full(100, 2))
      assert out.noise_rate == 0.4
