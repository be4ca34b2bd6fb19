"""Tests for the audit's contact sheet (experiments/audit.py)."""

import numpy as np

from experiments import audit
from experiments import workdir as workdir_lib

CLASSES = ('airplane', 'bird', 'cat')


def _list(workdir, paths):
  """A label_issues.csv of 6 examples, scores log-odds-like and close."""
  scores = [16.1234567, 16.1234561, 16.12, 0.999912, 0.999911, -2.5]
  columns = {
      'index': [4, 0, 5, 2, 1, 3], 'given_label': [0, 0, 1, 2, 1, 2],
      'predicted_label': [1, 2, 0, 0, 1, 2], 'score': scores,
      'margin': [-3.5, -3.25, -1.0, -0.5, 0.25, 2.0],
      'loss': [16.12] * 6, 'flagged': [1, 1, 1, 1, 1, 0],
      'path': [paths[i] for i in (4, 0, 5, 2, 1, 3)] if paths else [''] * 6}
  workdir_lib.write_label_issues(workdir, columns)
  return workdir_lib.read_label_issues(workdir)


def _titles(figure):
  return [ax.get_title() for ax in figure.axes if ax.get_title()]


def test_each_tile_names_its_rank_path_labels_and_a_distinct_score(tmp_path):
  paths = ['train/airplane/0.png', 'train/airplane/1.png', 'train/bird/0.png',
           'train/cat/0.png', 'train/airplane/2.png', 'train/bird/1.png']
  table = _list(tmp_path, paths)
  images = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones(
      (6, 4, 4, 3), np.uint8)
  # The images are stored in another order than the split's indices.
  indices = np.array([5, 4, 3, 2, 1, 0])
  figure = audit.contact_sheet(table, images[::-1], indices, CLASSES, top=5)
  titles = _titles(figure)
  assert titles == [
      '#1 train/airplane/2.png\ngiven airplane\npredicted bird\n'
      'score 16.123457, margin -3.5',
      '#2 train/airplane/0.png\ngiven airplane\npredicted cat\n'
      'score 16.123456, margin -3.25',
      '#3 train/bird/1.png\ngiven bird\npredicted airplane\n'
      'score 16.12, margin -1',
      '#4 train/bird/0.png\ngiven cat\npredicted airplane\n'
      'score 0.999912, margin -0.5',
      '#5 train/airplane/1.png\ngiven bird\npredicted bird\n'
      'score 0.999911, margin 0.25']
  # Each tile shows its own example's image (pixel value = split index).
  shown = [ax.get_images()[0].get_array()[0, 0, 0]
           for ax in figure.axes if ax.get_images()]
  assert shown == [4, 0, 5, 2, 1]
  audit.plt.close(figure)


def test_a_list_without_paths_names_each_tile_by_its_index(tmp_path):
  table = _list(tmp_path, None)
  images = np.zeros((6, 4, 4, 1), np.uint8)
  figure = audit.contact_sheet(table, images, np.arange(6), CLASSES, top=64)
  names = [title.split('\n')[0] for title in _titles(figure)]
  assert names == ['#1 4', '#2 0', '#3 5', '#4 2', '#5 1', '#6 3']
  assert _titles(figure)[-1].endswith('score -2.5, margin 2')
  audit.plt.close(figure)


def test_distinct_numbers_uses_the_fewest_digits_that_keep_values_apart():
  assert audit.distinct_numbers([0.5, 0.25, 0.5]) == ['0.5', '0.25', '0.5']
  assert audit.distinct_numbers([1 - 1e-7, 1 - 2e-7]) == ['0.9999999',
                                                         '0.9999998']
  assert audit.distinct_numbers([16.12, 1234567.0]) == ['16.12', '1.235e+06']
