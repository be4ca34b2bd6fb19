"""Tests for sweeps/grid.py: the sweep's grid grammar and run layout."""

import pathlib

import pytest

from sweeps import grid


@pytest.mark.parametrize('entry, expected', [
    ('ce', grid.Method('ce', 'ce', (), 'ce')),
    (' ogc_ce ', grid.Method('ogc_ce', 'ogc_ce', (), 'ogc_ce')),
    ('phuber_ce@loss_hparams.tau=5',
     grid.Method('phuber_ce@loss_hparams.tau=5', 'phuber_ce',
                 (('loss_hparams.tau', '5'),),
                 'phuber_ce@loss_hparams.tau=5')),
    ('ogc_ce@ogc.epsilon=5@ogc.queue_size=1024',
     grid.Method('ogc_ce@ogc.epsilon=5@ogc.queue_size=1024', 'ogc_ce',
                 (('ogc.epsilon', '5'), ('ogc.queue_size', '1024')),
                 'ogc_ce@ogc.epsilon=5@ogc.queue_size=1024')),
    ('ogc_ce @ ogc.epsilon = 5 : OGC (eps 5)',
     grid.Method('ogc_ce@ogc.epsilon=5', 'ogc_ce', (('ogc.epsilon', '5'),),
                 'OGC (eps 5)')),
])
def test_parse_method_good(entry, expected):
  assert grid.parse_method(entry) == expected


@pytest.mark.parametrize('entry, message', [
    ('', 'is not a method name'),
    ('1ce', 'is not a method name'),
    ('ce-x', 'is not a method name'),
    ('ce@', 'not of the form KEY=VALUE'),
    ('ce@ogc.epsilon', 'not of the form KEY=VALUE'),
    ('ce@ogc.epsilon=', 'not of the form KEY=VALUE'),
    ('ce@=5', 'is not a dotted name'),
    ('ce@ogc..epsilon=5', 'is not a dotted name'),
    ('ce@seed=1', 'which the sweep sets'),
    ('ce@noise.rate=0.2', 'which the sweep sets'),
    ('ce@method=gce', 'which the sweep sets'),
    ('ce@ogc.epsilon=1@ogc.epsilon=2', 'sets a config key twice'),
    ('ce:', 'empty label'),
])
def test_parse_method_bad(entry, message):
  with pytest.raises(ValueError, match=message):
    grid.parse_method(entry)


@pytest.mark.parametrize('spec, expected', [
    ('symmetric:0.2', ('symmetric', 0.2)),
    (' asymmetric : 0.40 ', ('asymmetric', 0.4)),
    ('instance:0', ('instance', 0.0)),
    ('none', ('none', 0.0)),
    ('none:0', ('none', 0.0)),
])
def test_parse_noise_good(spec, expected):
  assert grid.parse_noise(spec) == grid.Noise(*expected)


@pytest.mark.parametrize('spec, message', [
    ('gaussian:0.2', "Unknown noise kind='gaussian'; expected one of"),
    ('Symmetric:0.2', "Unknown noise kind='Symmetric'"),
    ('symmetric:abc', "rate 'abc' is not a number"),
    ('symmetric', 'has no rate'),
    ('symmetric:', 'has no rate'),
    ('symmetric:1.0', r'in \[0, 1\)'),
    ('symmetric:-0.1', r'in \[0, 1\)'),
    ('symmetric:nan', r'in \[0, 1\)'),
    ('none:0.2', "rate=0.2 with kind='none'"),
])
def test_parse_noise_bad(spec, message):
  with pytest.raises(ValueError, match=message):
    grid.parse_noise(spec)


def test_noise_names():
  noise = grid.parse_noise('symmetric:0.40')
  assert (noise.spec, noise.dirname, noise.column) == (
      'symmetric:0.4', 'symmetric_0.4', 'symmetric 40%')
  assert grid.parse_noise('instance:0.125').column == 'instance 12.5%'
  assert grid.parse_noise('none').column == 'none'


def test_parse_seeds():
  assert grid.parse_seeds('0, 1,2') == [0, 1, 2]
  with pytest.raises(ValueError, match="'x' .* is not an integer"):
    grid.parse_seeds('0,x')
  with pytest.raises(ValueError, match='repeat'):
    grid.parse_seeds('1,1')


def test_run_dir_layout(tmp_path):
  method = grid.parse_method('ogc_ce@ogc.epsilon=5@ogc.queue_size=1024:OGC')
  path = grid.run_dir(tmp_path, method, grid.parse_noise('instance:0.4'), 3)
  assert path == (tmp_path / 'ogc_ce+ogc.epsilon=5+ogc.queue_size=1024'
                  / 'instance_0.4' / 'seed_3')
  # Characters unsafe in a path are replaced; the label plays no part.
  odd = grid.parse_method('ce@model.name=a/b c')
  assert grid.run_dir('r', odd, grid.parse_noise('none'), 0) == pathlib.Path(
      'r/ce+model.name=a_b_c/none_0/seed_0')


def test_check_grid_rejects_collisions():
  ce = grid.parse_method('ce')
  noise = grid.parse_noise('symmetric:0.2')
  with pytest.raises(ValueError, match='noise settings repeat'):
    grid.check_grid([ce], [noise, grid.parse_noise('symmetric:0.20')], [0])
  with pytest.raises(ValueError, match='method entries repeat'):
    grid.check_grid([ce, grid.parse_method('ce:CE')], [noise], [0])
  with pytest.raises(ValueError, match='method labels repeat'):
    grid.check_grid([ce, grid.parse_method('gce:ce')], [noise], [0])
  with pytest.raises(ValueError, match='--seeds is empty'):
    grid.check_grid([ce], [noise], [])


def test_labels_column_runs_without_synthetic_noise():
  # A column of real labels: the CSV replaces the training labels and no
  # synthetic noise is added on top of them.
  real = grid.parse_noise(' labels : data/cifar10n/random1.csv ')
  assert real == grid.Noise('labels', 0.0, 'data/cifar10n/random1.csv')
  assert (real.spec, real.dirname, real.column) == (
      'labels:data/cifar10n/random1.csv', 'labels_random1', 'random1 labels')
  run, = grid.plan_runs('r', [grid.parse_method('ce')], [real], [2],
                        {'dataset': 'cifar10_jpeg'})
  assert run.overrides == {
      'method': 'ce', 'noise.kind': 'none', 'noise.rate': '0.0',
      'labels_csv': 'data/cifar10n/random1.csv', 'seed': '2',
      'dataset': 'cifar10_jpeg'}
  assert run.workdir == pathlib.Path('r/ce/labels_random1/seed_2')
  # Two CSVs of the same name would share a workdir and a column.
  with pytest.raises(ValueError, match='noise settings repeat'):
    grid.check_grid([grid.parse_method('ce')],
                    [real, grid.parse_noise('labels:other/random1.csv')], [0])
  # The column sets labels_csv; an override may not set it again.
  with pytest.raises(ValueError, match="--set sets 'labels_csv'"):
    grid.plan_runs('r', [grid.parse_method('ce')], [real], [0],
                   {'labels_csv': 'x.csv'})
  with pytest.raises(ValueError, match="entry 'ce@labels_csv=x.csv' sets"):
    grid.plan_runs('r', [grid.parse_method('ce@labels_csv=x.csv')], [real],
                   [0], {})
  # Where no column sets it, an override may.
  run, = grid.plan_runs('r', [grid.parse_method('ce')],
                        [grid.parse_noise('symmetric:0.2')], [0],
                        {'labels_csv': 'x.csv'})
  assert run.overrides['labels_csv'] == 'x.csv'
  for spec in ('labels', 'labels:', 'labels: '):
    with pytest.raises(ValueError, match='has no CSV path'):
      grid.parse_noise(spec)
