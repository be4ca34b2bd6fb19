"""The ``.npz`` cache of decoded datasets, keyed by what the source holds.

A key is a JSON-able dict naming the source and fingerprinting its files
(`tree_fingerprint`, `dir_fingerprint`): names, sizes and modification
times, so that adding or changing a file decodes again.
"""

import hashlib
import json
import os
import numpy as np

from experiments import files
from experiments.data.dataset import Dataset

# Bump when decoding changes, so that old caches are not reused.
CACHE_VERSION = 1


def tree_fingerprint(root, relpaths) -> str:
  """Hash of the listed files' names, sizes and modification times."""
  digest = hashlib.sha256()
  for relpath in relpaths:
    stat = os.stat(os.path.join(root, relpath))
    digest.update(f'{relpath}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode())
  return f'{len(relpaths)}:{digest.hexdigest()}'


def dir_fingerprint(directory) -> str:
  """`tree_fingerprint` of every file under ``directory`` (or ``'absent'``)."""
  if not os.path.isdir(directory):
    return 'absent'
  relpaths = sorted(
      os.path.relpath(os.path.join(parent, name), directory)
      for parent, _, names in os.walk(directory) for name in names)
  return tree_fingerprint(directory, relpaths)


def cached(load, key: dict, name: str, cache_dir) -> Dataset:
  """``load()``, or its result saved earlier under the same key.

  Args:
    load: builds the `Dataset` (decodes the source).
    key: JSON-able description of the source; `CACHE_VERSION` is added.
    name: readable part of the file name, e.g. the dataset's name or folder.
    cache_dir: folder of the ``.npz`` files; created when first written.

  Returns:
    The `Dataset`, from ``cache_dir/<name>-<hash of key>.npz`` when that
    exists, else from ``load()``, which is then saved there.
  """
  key = dict(key, version=CACHE_VERSION)
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
  files.write_atomic(path, lambda f: np.savez(f, **arrays))


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
