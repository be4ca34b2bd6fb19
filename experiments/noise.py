"""Synthetic label noise for learning with noisy labels.

Three standard corruptions of a clean label vector, each deterministic given an
integer ``seed``:

* :func:`symmetric`: every label flips with probability ``rate`` to a class
  drawn uniformly from the *other* ``num_classes - 1`` classes.
* :func:`asymmetric`: class-conditional flips between visually similar classes
  (:data:`ASYMMETRIC_MAPPINGS`); a label whose class has a mapping flips with
  probability ``rate`` to the mapped class, other labels never change.
* :func:`instance_dependent`: the part-dependent noise of Xia et al. (2020),
  whose flip rate and flip target depend on the input itself.

Each takes a ``protocol``. ``'ours'`` (the default) draws every label
independently from ``np.random.default_rng(seed)``, so the realised rate is
``rate`` up to sampling error. ``'authors'`` makes the noise as the OGC
authors' code does (github.com/Virusdoll/OGC, ``datasets/tools.py``):
class-conditional noise relabels exactly ``int(T[i, j] * n_i)`` samples of
class ``i`` to class ``j`` (:func:`from_transition_matrix`), so the realised
rate is ``rate`` rounded *down* per cell; their "50%" symmetric noise on
CIFAR-100 relabels ``int(0.5 / 99 * 500) = 2`` images of each class to each
other class, 198 of 500: a realised rate of 39.6%. Their seed is fixed at
:data:`AUTHORS_SEED`, independent of the run's seed.

:func:`corrupt_labels` dispatches on a ``kind`` string. Every function returns
:class:`NoisyLabels`: the noisy labels, the realised transition matrix and the
realised noise rate (:func:`realised_noise` computes them for labels that come
with the data, e.g. CIFAR-N). The true labels passed in are only used to build
the corruption and these diagnostics; a training loop must consume
``NoisyLabels.labels`` only.

The module is plain NumPy: label corruption runs once, on the host, before
training. `settings` reads a run's ``config.noise`` (checking it, in the
config's words) and `corrupt` applies it to a dataset's training labels.
"""

import numbers
from typing import NamedTuple, Optional

import numpy as np

from experiments.errors import ConfigError

KINDS = ('none', 'symmetric', 'asymmetric', 'instance')

# How the noise is drawn: independent per-label draws (ours) or the OGC
# authors' exact counts per transition-matrix cell (see the module docstring).
PROTOCOLS = ('ours', 'authors')

# The noise seed of the authors' code (`create_class_dependent_noisy_label`
# and `create_instance_dependent_noisy_label` default to ``seed=0``, and no
# caller passes another), whatever the run's seed.
AUTHORS_SEED = 0

# Standard deviation of the per-sample flip rate in instance-dependent noise
# (Xia et al., 2020, Section 4 and their public code: ``norm_std = 0.1``).
INSTANCE_FLIP_RATE_STD = 0.1

# Rows of the features processed at once by `instance_dependent`, bounding the
# float64 copy of the features to ``_CHUNK_SIZE * d`` values.
_CHUNK_SIZE = 4096

CIFAR10_CLASSES = (
    'airplane', 'automobile', 'bird', 'cat', 'deer',
    'dog', 'frog', 'horse', 'ship', 'truck',
)

# The 100 CIFAR-100 fine labels; the index of a name is its fine label (the
# classes are numbered in alphabetical order, as in the dataset's ``meta``).
CIFAR100_FINE_CLASSES = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver',
    'bed', 'bee', 'beetle', 'bicycle', 'bottle',
    'bowl', 'boy', 'bridge', 'bus', 'butterfly',
    'camel', 'can', 'castle', 'caterpillar', 'cattle',
    'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach',
    'couch', 'crab', 'crocodile', 'cup', 'dinosaur',
    'dolphin', 'elephant', 'flatfish', 'forest', 'fox',
    'girl', 'hamster', 'house', 'kangaroo', 'keyboard',
    'lamp', 'lawn_mower', 'leopard', 'lion', 'lizard',
    'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain',
    'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid',
    'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree',
    'plain', 'plate', 'poppy', 'porcupine', 'possum',
    'rabbit', 'raccoon', 'ray', 'road', 'rocket',
    'rose', 'sea', 'seal', 'shark', 'shrew',
    'skunk', 'skyscraper', 'snail', 'snake', 'spider',
    'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table',
    'tank', 'telephone', 'television', 'tiger', 'tractor',
    'train', 'trout', 'tulip', 'turtle', 'wardrobe',
    'whale', 'willow_tree', 'wolf', 'woman', 'worm',
)

# The 20 CIFAR-100 superclasses (coarse labels, in coarse-label order) and the
# five fine classes of each (Krizhevsky, 2009, Section 3).
CIFAR100_SUPERCLASSES = {
    'aquatic_mammals': ('beaver', 'dolphin', 'otter', 'seal', 'whale'),
    'fish': ('aquarium_fish', 'flatfish', 'ray', 'shark', 'trout'),
    'flowers': ('orchid', 'poppy', 'rose', 'sunflower', 'tulip'),
    'food_containers': ('bottle', 'bowl', 'can', 'cup', 'plate'),
    'fruit_and_vegetables': (
        'apple', 'mushroom', 'orange', 'pear', 'sweet_pepper'),
    'household_electrical_devices': (
        'clock', 'keyboard', 'lamp', 'telephone', 'television'),
    'household_furniture': ('bed', 'chair', 'couch', 'table', 'wardrobe'),
    'insects': ('bee', 'beetle', 'butterfly', 'caterpillar', 'cockroach'),
    'large_carnivores': ('bear', 'leopard', 'lion', 'tiger', 'wolf'),
    'large_man-made_outdoor_things': (
        'bridge', 'castle', 'house', 'road', 'skyscraper'),
    'large_natural_outdoor_scenes': (
        'cloud', 'forest', 'mountain', 'plain', 'sea'),
    'large_omnivores_and_herbivores': (
        'camel', 'cattle', 'chimpanzee', 'elephant', 'kangaroo'),
    'medium_mammals': ('fox', 'porcupine', 'possum', 'raccoon', 'skunk'),
    'non-insect_invertebrates': ('crab', 'lobster', 'snail', 'spider', 'worm'),
    'people': ('baby', 'boy', 'girl', 'man', 'woman'),
    'reptiles': ('crocodile', 'dinosaur', 'lizard', 'snake', 'turtle'),
    'small_mammals': ('hamster', 'mouse', 'rabbit', 'shrew', 'squirrel'),
    'trees': ('maple_tree', 'oak_tree', 'palm_tree', 'pine_tree',
              'willow_tree'),
    'vehicles_1': ('bicycle', 'bus', 'motorcycle', 'pickup_truck', 'train'),
    'vehicles_2': ('lawn_mower', 'rocket', 'streetcar', 'tank', 'tractor'),
}


def _cifar100_next_in_superclass():
  """Maps each fine label to the next fine label of its superclass.

  Within a superclass the five fine labels are taken in increasing order and
  the last one maps back to the first, so the mapping is a permutation made of
  twenty 5-cycles.
  """
  index = {name: i for i, name in enumerate(CIFAR100_FINE_CLASSES)}
  mapping = {}
  for fine_names in CIFAR100_SUPERCLASSES.values():
    members = sorted(index[name] for name in fine_names)
    for position, fine_label in enumerate(members):
      mapping[fine_label] = members[(position + 1) % len(members)]
  return mapping


def _cifar100_next_in_block():
  """The OGC authors' CIFAR-100 map: the next index in a block of five.

  Their code treats classes ``5k, ..., 5k + 4`` as a "superclass" and maps
  each to the next index, the last back to the first. CIFAR-100's fine labels
  are alphabetical, so these blocks are not the real superclasses: block 0 is
  apple, aquarium_fish, baby, bear, beaver.
  """
  return {c: 5 * (c // 5) + (c % 5 + 1) % 5 for c in range(100)}


# MNIST-style digits (also scikit-learn's 8x8 ``load_digits``): the flips of
# Patrini et al. (2017), 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1, between digits that
# are written alike.
_DIGITS_MAPPING = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}

# Class index -> class index it is flipped to by `asymmetric` noise.
#   cifar10: truck -> automobile, bird -> airplane, cat <-> dog,
#     deer -> horse (Patrini et al., 2017).
#   cifar100: each fine class -> the next fine class (by fine label, circularly)
#     within its superclass, using the real CIFAR-100 superclasses.
#   cifar100_blocks: the OGC authors' map, c -> the next index within its block
#     of five consecutive indices (4 -> 0, 9 -> 5, ...), not real superclasses.
#   digits, mnist: 2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1 (Patrini et al., 2017).
ASYMMETRIC_MAPPINGS = {
    'cifar10': {9: 1, 2: 0, 3: 5, 5: 3, 4: 7},
    'cifar100': _cifar100_next_in_superclass(),
    'cifar100_blocks': _cifar100_next_in_block(),
    'digits': dict(_DIGITS_MAPPING),
    'mnist': dict(_DIGITS_MAPPING),
}


class NoisyLabels(NamedTuple):
  """Corrupted labels and what the corruption actually did.

  Attributes:
    labels: int32 ``[n]``, the noisy labels, to be used for training.
    transition_matrix: float64 ``[C, C]``; row ``i`` is the empirical
      distribution of the noisy label among samples whose true label is ``i``
      (``T[i, j] = #{true = i, noisy = j} / #{true = i}``). Rows of classes
      absent from ``labels`` are the identity row.
    noise_rate: the realised fraction of labels that changed,
      ``mean(noisy != true)`` (``0.0`` for an empty label vector).
  """
  labels: np.ndarray
  transition_matrix: np.ndarray
  noise_rate: float


def _check_num_classes(num_classes):
  if (isinstance(num_classes, (bool, np.bool_))
      or not isinstance(num_classes, numbers.Integral) or num_classes < 2):
    raise ValueError(
        f'`num_classes` must be an integer >= 2, got {num_classes!r}.')
  return int(num_classes)


def _check_labels(labels, num_classes):
  """Returns ``labels`` as a 1-D int64 array with values in [0, num_classes)."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(
        f'`labels` must be 1-D, got an array of shape {labels.shape}.')
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'`labels` must be integers, got dtype {labels.dtype}.')
  labels = labels.astype(np.int64)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
        f'`labels` must lie in [0, num_classes) = [0, {num_classes}), got '
        f'values in [{labels.min()}, {labels.max()}].')
  return labels


# The rules of a noise setting, each written once: the functions below check
# their arguments with them, and so do `settings` (a run's config.noise) and
# the sweep's grid (``KIND:RATE``), each naming the value in its own words.


def check_kind(kind, name='`kind`') -> str:
  """A noise kind is one of `KINDS`.

  Raises:
    ValueError: ``Unknown noise NAME=KIND; expected one of KINDS.``
  """
  if not isinstance(kind, str) or kind not in KINDS:
    raise ValueError(f'Unknown noise {name}={kind!r}; expected one of '
                     f'{KINDS}.')
  return kind


def check_rate(rate, name='`rate`') -> float:
  """A noise rate is a number in [0, 1) (not a bool, not NaN).

  Raises:
    ValueError: ``NAME=RATE is not a noise rate; expected a number in [0, 1).``
  """
  if (isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real)
      or not 0.0 <= float(rate) < 1.0):
    raise ValueError(f'{name}={rate!r} is not a noise rate; expected a number '
                     'in [0, 1).')
  return float(rate)


def check_kind_and_rate(kind, rate, kind_name='`kind`', rate_name='`rate`'
                        ) -> tuple[str, float]:
  """`check_kind`, `check_rate`, and kind ``'none'`` has rate 0.

  So that a setting that asks for noise cannot silently train on clean labels.

  Example:
    >>> check_kind_and_rate('none', 0.2)
    Traceback (most recent call last):
    ...
    ValueError: `rate`=0.2 with `kind`='none'; set the rate to 0 or a kind of ('symmetric', 'asymmetric', 'instance').
  """
  kind, rate = check_kind(kind, kind_name), check_rate(rate, rate_name)
  if kind == 'none' and rate != 0:
    raise ValueError(f"{rate_name}={rate!r} with {kind_name}='none'; set the "
                     f'rate to 0 or a kind of {KINDS[1:]}.')
  return kind, rate


def check_protocol(protocol, name='`protocol`') -> str:
  """A protocol is one of `PROTOCOLS`."""
  if not isinstance(protocol, str) or protocol not in PROTOCOLS:
    raise ValueError(f'Unknown {name}={protocol!r}; expected one of '
                     f'{PROTOCOLS}.')
  return protocol


def check_seed(seed, name='`seed`') -> int:
  """A noise seed is an integer >= 0: noise must be reproducible."""
  if (isinstance(seed, (bool, np.bool_))
      or not isinstance(seed, numbers.Integral) or seed < 0):
    raise ValueError(f'{name}={seed!r} is not a seed; expected an integer '
                     '>= 0 (noise must be reproducible).')
  return int(seed)


def _check_common(labels, num_classes, rate, seed):
  num_classes = _check_num_classes(num_classes)
  return (_check_labels(labels, num_classes), num_classes, check_rate(rate),
          check_seed(seed))


def _noisy_labels(true_labels, noisy, num_classes):
  """Packs ``noisy`` with its empirical transition matrix and noise rate."""
  counts = np.bincount(
      true_labels * num_classes + noisy, minlength=num_classes * num_classes
  ).reshape(num_classes, num_classes).astype(np.float64)
  totals = counts.sum(axis=1, keepdims=True)
  transition = np.where(
      totals > 0, counts / np.maximum(totals, 1.0), np.eye(num_classes))
  noise_rate = float(np.mean(noisy != true_labels)) if noisy.size else 0.0
  return NoisyLabels(
      labels=noisy.astype(np.int32),
      transition_matrix=transition,
      noise_rate=noise_rate)


def realised_noise(labels, noisy_labels, num_classes):
  """The realised transition matrix and noise rate of given noisy labels.

  For labels that come with the data (a labels CSV over an image folder,
  CIFAR-N), where nothing here drew the noise.

  Args:
    labels: integer array ``[n]`` of true labels in ``[0, num_classes)``.
    noisy_labels: integer array ``[n]`` of the labels to train on.
    num_classes: number of classes ``C >= 2``.

  Returns:
    A :class:`NoisyLabels` holding ``noisy_labels``.

  Raises:
    ValueError: if an argument is invalid or the two label vectors differ in
      length; the message names it.

  Example:
    >>> import numpy as np
    >>> from experiments import noise
    >>> out = noise.realised_noise(np.array([0, 0, 1, 1]),
    ...                            np.array([0, 1, 1, 1]), 2)
    >>> out.noise_rate, out.transition_matrix.tolist()
    (0.25, [[0.5, 0.5], [0.0, 1.0]])
  """
  num_classes = _check_num_classes(num_classes)
  labels = _check_labels(labels, num_classes)
  noisy = np.asarray(noisy_labels)
  if noisy.shape != labels.shape:
    raise ValueError(
        f'`noisy_labels` must have the shape of `labels`, {labels.shape}, got '
        f'{noisy.shape}.')
  try:
    noisy = _check_labels(noisy, num_classes)
  except ValueError as e:
    raise ValueError(str(e).replace('`labels`', '`noisy_labels`')) from None
  return _noisy_labels(labels, noisy, num_classes)


def from_transition_matrix(labels, transition_matrix, seed):
  """Class-conditional noise with exact counts, as the OGC authors make it.

  For every class ``i`` with ``n_i`` samples and every ``j != i``, exactly
  ``int(transition_matrix[i, j] * n_i)`` samples of class ``i`` (truncated,
  not rounded) are relabelled ``j``; the rest of class ``i`` keeps its label.
  Which samples: for ``i`` in order, then ``j`` in order,
  ``RandomState(seed).choice`` draws them without replacement from the class's
  samples not yet relabelled. These are the draws of the authors'
  ``create_class_dependent_noisy_label`` (``np.random.seed(seed)``, then
  ``np.random.choice``), so for the same label vector the noisy labels are
  theirs, bit for bit. The draws only see each class's samples in order of
  index, so any reordering of the data that keeps the order within each class
  (e.g. CIFAR-10 stored class by class) flips the same images.

  Args:
    labels: integer array ``[n]`` of true labels in ``[0, C)``.
    transition_matrix: ``[C, C]`` row-stochastic matrix, ``C >= 2``; its
      diagonal is not used (the samples not moved keep their label).
    seed: integer in ``[0, 2**32)``, the seed of ``np.random.RandomState``.

  Returns:
    A :class:`NoisyLabels`.

  Raises:
    ValueError: if an argument is invalid (a matrix that is not square, not
      finite, has negative entries or rows not summing to 1); the message
      names it.

  Example:
    >>> import numpy as np
    >>> from experiments import noise
    >>> t = np.array([[0.7, 0.3], [0.25, 0.75]])
    >>> out = noise.from_transition_matrix(np.repeat([0, 1], 10), t, seed=0)
    >>> (out.transition_matrix * 10).round().astype(int).tolist()
    [[7, 3], [2, 8]]
  """
  transition_matrix = np.asarray(transition_matrix)
  if (transition_matrix.ndim != 2
      or transition_matrix.shape[0] != transition_matrix.shape[1]):
    raise ValueError(
        f'`transition_matrix` must be a square [C, C] array, got shape '
        f'{transition_matrix.shape}.')
  num_classes = _check_num_classes(transition_matrix.shape[0])
  if not np.issubdtype(transition_matrix.dtype, np.number):
    raise ValueError(f'`transition_matrix` must be numeric, got dtype '
                     f'{transition_matrix.dtype}.')
  transition_matrix = transition_matrix.astype(np.float64)
  if not np.all(np.isfinite(transition_matrix)) or np.any(
      transition_matrix < 0):
    raise ValueError('`transition_matrix` must be finite and non-negative.')
  row_sums = transition_matrix.sum(axis=1)
  if np.any(np.abs(row_sums - 1.0) > 1e-6):
    raise ValueError(
        f'`transition_matrix` rows must sum to 1, got sums '
        f'{np.round(row_sums, 6).tolist()}.')
  labels = _check_labels(labels, num_classes)
  seed = check_seed(seed)
  if seed >= 2**32:
    raise ValueError(
        f'`seed` must be below 2**32 (np.random.RandomState), got {seed}.')
  class_sizes = np.bincount(labels, minlength=num_classes)
  # The authors' `num_trans_matrix.astype(int)`: the same float products,
  # truncated.
  moves = (transition_matrix * class_sizes[:, None]).astype(np.int64)
  np.fill_diagonal(moves, 0)
  if np.any(moves.sum(axis=1) > class_sizes):
    raise ValueError(
        '`transition_matrix` moves more samples out of a class than it holds.')
  rng = np.random.RandomState(seed)  # pylint: disable=no-member
  noisy = labels.copy()
  for i in range(num_classes):
    unmoved = np.flatnonzero(labels == i)
    for j in np.flatnonzero(moves[i]):
      moved = rng.choice(unmoved, moves[i, j], replace=False)
      unmoved = np.setdiff1d(unmoved, moved)
      noisy[moved] = j
  return _noisy_labels(labels, noisy, num_classes)


def _symmetric_matrix(num_classes, rate):
  """``(1 - rate) I``, ``rate / (C - 1)`` off the diagonal (authors' floats)."""
  eye = np.eye(num_classes)
  return eye * (1.0 - rate) + (1.0 - eye) * rate / (num_classes - 1)


def _mapping_matrix(num_classes, rate, mapping):
  """``1 - rate`` on the diagonal and ``rate`` at ``[i, mapping[i]]``."""
  matrix = np.eye(num_classes)
  for source, target in mapping.items():
    matrix[source, source] = 1.0 - rate
    matrix[source, target] = rate
  return matrix


def symmetric(labels, num_classes, rate, seed, *, protocol='ours'):
  """Symmetric (uniform) label noise.

  The transition matrix is ``T = (1 - rate) I`` plus ``rate / (C - 1)`` off
  the diagonal, ``C = num_classes``. With ``protocol='ours'`` each label
  independently flips with probability ``rate`` to one of the other ``C - 1``
  classes, chosen uniformly, so ``T`` is the expected transition matrix. With
  ``protocol='authors'`` exactly ``int(rate / (C - 1) * n_i)`` samples of
  class ``i`` go to each other class (:func:`from_transition_matrix`), so the
  realised rate is below ``rate`` by up to ``(C - 1) / n_i``: 39.6% for
  ``rate=0.5`` on CIFAR-100 (500 images a class), 49.86% on CIFAR-10.

  Args:
    labels: integer array ``[n]`` of true labels in ``[0, num_classes)``.
    num_classes: number of classes ``C >= 2``.
    rate: flip probability ``eta`` in ``[0, 1)``.
    seed: non-negative integer seed of ``np.random.default_rng`` (``'ours'``)
      or, below ``2**32``, of ``np.random.RandomState`` (``'authors'``).
    protocol: ``'ours'`` or ``'authors'`` (:data:`PROTOCOLS`).

  Returns:
    A :class:`NoisyLabels`.

  Raises:
    ValueError: if an argument is invalid; the message names it.

  Example:
    >>> import numpy as np
    >>> from experiments import noise
    >>> out = noise.symmetric(np.arange(10).repeat(1000), 10, 0.4, seed=0)
    >>> round(out.noise_rate, 2)
    0.4
    >>> bool((np.diag(out.transition_matrix) > 0.55).all())
    True
    >>> cifar100 = np.arange(100).repeat(500)
    >>> out = noise.symmetric(cifar100, 100, 0.5, seed=0, protocol='authors')
    >>> out.noise_rate  # int(0.5 / 99 * 500) = 2 per cell: 198 of 500
    0.396

  References:
    van Rooyen et al., `Learning with Symmetric Label Noise: The Importance of
    Being Unhinged <https://arxiv.org/abs/1505.07634>`_, NeurIPS 2015.
  """
  labels, num_classes, rate, seed = _check_common(
      labels, num_classes, rate, seed)
  if check_protocol(protocol) == 'authors':
    return from_transition_matrix(
        labels, _symmetric_matrix(num_classes, rate), seed)
  rng = np.random.default_rng(seed)
  flip = rng.random(labels.shape[0]) < rate
  # Adding an offset in {1, ..., C - 1} modulo C picks a uniformly random class
  # different from the true one.
  offset = rng.integers(1, num_classes, size=labels.shape[0])
  noisy = np.where(flip, (labels + offset) % num_classes, labels)
  return _noisy_labels(labels, noisy, num_classes)


def asymmetric(labels, num_classes, rate, seed, dataset, *, protocol='ours'):
  """Asymmetric (class-conditional) label noise between similar classes.

  Each label whose class has an entry in ``ASYMMETRIC_MAPPINGS[dataset]`` flips
  with probability ``rate`` to the mapped class; labels of the other classes
  never change. The realised ``noise_rate`` is therefore ``rate`` times the
  fraction of samples in mapped classes (about ``rate / 2`` on CIFAR-10 and
  MNIST, ``rate`` on CIFAR-100 where every class is mapped).

  With ``protocol='ours'`` each label flips independently with probability
  ``rate``. With ``protocol='authors'`` exactly ``int(rate * n_i)`` samples of
  a mapped class ``i`` flip (:func:`from_transition_matrix` with ``1 - rate``
  on the diagonal and ``rate`` at ``[i, mapping[i]]``), as the authors' code
  does for CIFAR-10 and CIFAR-100. The protocol does not choose the map: the
  authors' CIFAR-10 map is ``'cifar10'``, their CIFAR-100 map is
  ``'cifar100_blocks'`` (next index within blocks of five consecutive indices)
  where ``'cifar100'`` is the real-superclass map; their code has no digits or
  MNIST noise, so ``'digits'`` / ``'mnist'`` apply their counting to Patrini's
  map.

  Args:
    labels: integer array ``[n]`` of true labels in ``[0, num_classes)``.
    num_classes: number of classes ``C >= 2``.
    rate: flip probability ``eta`` in ``[0, 1)``.
    seed: non-negative integer seed of ``np.random.default_rng`` (``'ours'``)
      or, below ``2**32``, of ``np.random.RandomState`` (``'authors'``).
    dataset: a key of :data:`ASYMMETRIC_MAPPINGS` (``'cifar10'``,
      ``'cifar100'``, ``'cifar100_blocks'``, ``'digits'``, ``'mnist'``).
    protocol: ``'ours'`` or ``'authors'`` (:data:`PROTOCOLS`).

  Returns:
    A :class:`NoisyLabels`.

  Raises:
    ValueError: if an argument is invalid, ``dataset`` has no mapping, or the
      mapping refers to a class ``>= num_classes``; the message names the
      argument.

  Example:
    >>> import numpy as np
    >>> from experiments import noise
    >>> y = np.arange(10).repeat(1000)
    >>> out = noise.asymmetric(y, 10, 0.4, seed=0, dataset='cifar10')
    >>> np.unique(y[out.labels != y]).tolist()  # bird, cat, deer, dog, truck
    [2, 3, 4, 5, 9]
    >>> np.unique(out.labels[out.labels != y]).tolist()  # their mapped classes
    [0, 1, 3, 5, 7]
    >>> out.transition_matrix[9, [9, 1]].round(2).tolist()  # truck row
    [0.61, 0.39]
    >>> out = noise.asymmetric(y, 10, 0.4, seed=0, dataset='cifar10',
    ...                        protocol='authors')
    >>> out.transition_matrix[9, [9, 1]].tolist(), out.noise_rate
    ([0.6, 0.4], 0.2)

  References:
    Patrini et al., `Making Deep Neural Networks Robust to Label Noise: a Loss
    Correction Approach <https://arxiv.org/abs/1609.03683>`_, CVPR 2017.
  """
  labels, num_classes, rate, seed = _check_common(
      labels, num_classes, rate, seed)
  if not isinstance(dataset, str) or dataset not in ASYMMETRIC_MAPPINGS:
    raise ValueError(
        f'`dataset` must name an asymmetric-noise mapping, one of '
        f'{sorted(ASYMMETRIC_MAPPINGS)}, got {dataset!r}.')
  mapping = ASYMMETRIC_MAPPINGS[dataset]
  largest = max(max(mapping), max(mapping.values()))
  if largest >= num_classes:
    raise ValueError(
        f'The {dataset!r} mapping uses class {largest}, which needs '
        f'`num_classes` > {largest}; got num_classes={num_classes}.')
  if check_protocol(protocol) == 'authors':
    return from_transition_matrix(
        labels, _mapping_matrix(num_classes, rate, mapping), seed)
  target = np.arange(num_classes)
  target[list(mapping)] = list(mapping.values())
  rng = np.random.default_rng(seed)
  flip = rng.random(labels.shape[0]) < rate
  noisy = np.where(flip, target[labels], labels)
  return _noisy_labels(labels, noisy, num_classes)


def _truncated_normal(rng, mean, std, size, low=0.0, high=1.0):
  """Draws ``size`` samples of N(mean, std^2) truncated to [low, high].

  Rejection sampling: draw from the normal and redraw the samples outside the
  interval. For ``mean`` in [0, 1) and ``std = 0.1`` at least half of the
  draws are accepted, so a handful of rounds suffice.
  """
  out = np.empty(size, dtype=np.float64)
  pending = np.arange(size)
  while pending.size:
    draw = rng.normal(mean, std, size=pending.size)
    accepted = (draw >= low) & (draw <= high)
    out[pending[accepted]] = draw[accepted]
    pending = pending[~accepted]
  return out


def instance_dependent(labels, features, num_classes, rate, seed, *,
                       protocol='ours'):
  """Instance-dependent (part-dependent) label noise of Xia et al. (2020).

  Following Algorithm 2 of the paper and its public code, with ``C`` classes
  and ``d`` input dimensions:

  1. per-sample flip rates ``q_i ~ N(rate, 0.1^2)`` truncated to ``[0, 1]``;
  2. a random projection ``W ~ N(0, 1)`` of shape ``[C, d, C]``;
  3. for sample ``x_i`` (flattened, divided by its L2 norm) with true label
     ``y``: ``s = x_i @ W[y]``, ``s[y] = -inf``,
     ``p = q_i * softmax(s)``, ``p[y] = 1 - q_i``;
  4. the noisy label is drawn from ``p``, in two equivalent steps: the sample
     flips with probability ``q_i``, then a flipped sample takes class ``j``
     with probability ``softmax(s)[j]``. (So with one seed the set of flipped
     samples does not depend on ``features``, only their new classes do.)

  So sample ``i`` keeps its label with probability ``1 - q_i`` and otherwise
  moves to a class chosen by its own features. Two deliberate differences from
  the reference code: the input is L2-normalised, so the flip targets depend
  on the direction of ``x`` and not on its scale (raw CIFAR pixels would make
  the softmax one-hot); and ``rate == 0`` gives clean labels (``q_i = 0``)
  rather than flip rates from a half-normal.

  ``protocol='authors'`` drops the normalisation: ``s = x_i @ W[y]`` on the
  inputs as given, as the OGC authors' code does on raw CIFAR pixels (0-255),
  where the scores differ by hundreds and the softmax is one-hot in effect:
  a flipped sample goes to the arg-max class of its projection. The draws are
  ours (``np.random.default_rng``, with the authors' seed passed in), not the
  authors' ``RandomState`` and SciPy stream, so the noise has their
  distribution but not their exact labels.

  Note the truncation makes ``E[q_i]`` slightly larger than ``rate`` when
  ``rate`` is within a few ``0.1`` of 0 (e.g. about 0.129 for ``rate = 0.1``).

  Args:
    labels: integer array ``[n]`` of true labels in ``[0, num_classes)``.
    features: numeric array ``[n, ...]`` (e.g. images ``[n, H, W, C]``); each
      row is flattened to ``d`` values. With ``protocol='ours'`` only its
      direction matters.
    num_classes: number of classes ``C >= 2``.
    rate: mean flip rate ``eta`` in ``[0, 1)``.
    seed: non-negative integer seed of ``np.random.default_rng``.
    protocol: ``'ours'`` or ``'authors'`` (:data:`PROTOCOLS`).

  Returns:
    A :class:`NoisyLabels`.

  Raises:
    ValueError: if an argument is invalid (including ``features`` whose first
      dimension differs from ``len(labels)``, or non-finite ``features``); the
      message names it.

  Example:
    >>> import numpy as np
    >>> from experiments import noise
    >>> x = np.random.default_rng(0).normal(size=(10000, 8, 8))
    >>> out = noise.instance_dependent(np.arange(10).repeat(1000), x, 10, 0.4,
    ...                                seed=0)
    >>> abs(out.noise_rate - 0.4) < 0.02
    True

  References:
    Xia et al., `Part-dependent Label Noise: Towards Instance-dependent Label
    Noise <https://arxiv.org/abs/2006.07836>`_, NeurIPS 2020.
  """
  labels, num_classes, rate, seed = _check_common(
      labels, num_classes, rate, seed)
  normalise = check_protocol(protocol) == 'ours'
  features = np.asarray(features)
  n = labels.shape[0]
  if features.ndim < 1 or features.shape[0] != n:
    raise ValueError(
        f'`features` must have shape [n, ...] with n = len(labels) = {n}, got '
        f'shape {features.shape}.')
  if not (np.issubdtype(features.dtype, np.number)
          or features.dtype == np.bool_):
    raise ValueError(f'`features` must be numeric, got dtype {features.dtype}.')
  features = features.reshape(n, -1)
  d = features.shape[1]
  if d == 0:
    raise ValueError(
        f'`features` must have at least one value per sample, got shape '
        f'{features.shape}.')
  if rate == 0.0 or n == 0:
    return _noisy_labels(labels, labels.copy(), num_classes)

  rng = np.random.default_rng(seed)
  # The draws happen in a fixed order, independent of the chunking.
  flip_rate = _truncated_normal(rng, rate, INSTANCE_FLIP_RATE_STD, n)
  projection = rng.standard_normal((num_classes, d, num_classes))
  flip = rng.random(n) < flip_rate
  uniform = rng.random(n)

  noisy = np.empty(n, dtype=np.int64)
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    for start in range(0, members.size, _CHUNK_SIZE):
      rows = members[start:start + _CHUNK_SIZE]
      x = features[rows].astype(np.float64)
      if normalise:
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        # An all-zero input has no direction: its scores are 0, so it flips
        # uniformly among the other classes.
        x = x / np.where(norm > 0, norm, 1.0)
      scores = x @ projection[c]
      if not np.all(np.isfinite(scores)):
        raise ValueError('`features` must be finite (no NaN or inf).')
      scores[:, c] = -np.inf
      scores -= scores.max(axis=1, keepdims=True)
      weights = np.exp(scores)
      # Inverse-CDF draw of the flip target. Dividing by the last entry makes
      # the CDF end at exactly 1 > uniform, so the draw always lands on a
      # class of positive weight, never on c (weight exp(-inf) = 0).
      cdf = np.cumsum(weights, axis=1)
      cdf /= cdf[:, -1:]
      target = (cdf <= uniform[rows, None]).sum(axis=1)
      noisy[rows] = np.where(flip[rows], target, c)
  return _noisy_labels(labels, noisy, num_classes)


def corrupt_labels(kind, labels, num_classes, rate, seed, *,
                   features=None, dataset=None, protocol='ours'):
  """Corrupts ``labels`` with the noise named by ``kind``.

  Args:
    kind: one of :data:`KINDS`: ``'none'`` (labels unchanged, identity
      transition matrix), ``'symmetric'``, ``'asymmetric'`` or ``'instance'``.
    labels: integer array ``[n]`` of true labels in ``[0, num_classes)``.
    num_classes: number of classes ``C >= 2``.
    rate: noise rate ``eta`` in ``[0, 1)``. With ``kind='none'`` it must be
      ``0``, so that a configuration asking for noise cannot silently train on
      clean labels.
    seed: non-negative integer seed (below ``2**32`` for the authors'
      class-conditional noise); :data:`AUTHORS_SEED` is the authors' own.
    features: inputs ``[n, ...]``; required by ``'instance'``, ignored
      otherwise.
    dataset: key of :data:`ASYMMETRIC_MAPPINGS`; required by ``'asymmetric'``,
      ignored otherwise.
    protocol: ``'ours'`` (independent draws per label) or ``'authors'`` (the
      OGC authors' exact counts; see :func:`symmetric`, :func:`asymmetric`,
      :func:`instance_dependent`).

  Returns:
    A :class:`NoisyLabels`.

  Raises:
    ValueError: if ``kind`` is unknown or an argument is invalid for it; the
      message names the argument.

  Example:
    >>> import numpy as np
    >>> from experiments import noise
    >>> out = noise.corrupt_labels('none', np.array([0, 1, 1]), 2, 0.0, seed=0)
    >>> out.labels, out.noise_rate
    (array([0, 1, 1], dtype=int32), 0.0)
  """
  kind, rate = check_kind_and_rate(kind, rate)
  check_protocol(protocol)
  if kind == 'none':
    labels, num_classes, rate, _ = _check_common(
        labels, num_classes, rate, seed)
    return _noisy_labels(labels, labels.copy(), num_classes)
  if kind == 'symmetric':
    return symmetric(labels, num_classes, rate, seed, protocol=protocol)
  if kind == 'asymmetric':
    return asymmetric(labels, num_classes, rate, seed, dataset,
                      protocol=protocol)
  if features is None:
    raise ValueError("`features` are required with kind='instance'.")
  return instance_dependent(labels, features, num_classes, rate, seed,
                            protocol=protocol)



# ---------------------------------------------------------------------------
# A run's noise, from its config.

# Datasets whose asymmetric mapping is known: name -> key of
# `ASYMMETRIC_MAPPINGS`.
MAPPING_OF_DATASET = {
    'digits': 'digits', 'mnist': 'mnist', 'cifar10': 'cifar10',
    'cifar10_jpeg': 'cifar10', 'cifar100': 'cifar100',
}


class Settings(NamedTuple):
  """The noise a run adds to its training labels (`settings`)."""
  kind: str
  rate: float
  seed: int
  mapping: Optional[str]
  protocol: str


def settings(config) -> Settings:
  """The checked noise settings of a run config, with defaults resolved.

  The seed defaults to the run's (``'ours'``) or `AUTHORS_SEED`
  (``'authors'``); the mapping to the dataset's own, and under the authors'
  protocol CIFAR-100's to theirs (``'cifar100_blocks'``).

  Raises:
    ConfigError: a key of ``config.noise`` is invalid; the message names the
      key, the value and the choices.
  """
  noise = config.noise
  try:
    kind, rate = check_kind_and_rate(noise.kind, noise.rate,
                                     'config.noise.kind', 'config.noise.rate')
    protocol = check_protocol(noise.protocol, 'config.noise.protocol')
    if noise.seed is not None:
      check_seed(noise.seed, 'config.noise.seed')
  except ValueError as e:
    raise ConfigError(str(e)) from None
  mapping = noise.mapping
  mappings = sorted(ASYMMETRIC_MAPPINGS)
  if mapping is not None and mapping not in mappings:
    raise ConfigError(f'Unknown config.noise.mapping={mapping!r}; expected '
                      f'one of {mappings}.')
  if (kind == 'asymmetric' and mapping is None
      and config.dataset not in MAPPING_OF_DATASET):
    raise ConfigError(
        f'config.noise.kind=\'asymmetric\' has no mapping for '
        f'config.dataset={config.dataset!r}; set config.noise.mapping to one '
        f'of {mappings}.')
  authors = protocol == 'authors'
  seed = noise.seed
  if seed is None:
    seed = AUTHORS_SEED if authors else config.seed
  if mapping is None:
    mapping = MAPPING_OF_DATASET.get(config.dataset)
    if authors and mapping == 'cifar100':
      mapping = 'cifar100_blocks'  # their map: blocks of 5 consecutive indices
  return Settings(kind, rate, seed, mapping, protocol)


def corrupt(settings_: Settings, labels, num_classes, features=None
            ) -> NoisyLabels:
  """`corrupt_labels` with a run's `settings`."""
  return corrupt_labels(settings_.kind, labels, num_classes, settings_.rate,
                        settings_.seed, features=features,
                        dataset=settings_.mapping, protocol=settings_.protocol)
