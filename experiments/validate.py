"""The checks of a run's configuration, before anything is loaded or written.

`validate_config` calls the functions that consume each value (each rule
lives there, once) on the config alone, so that a bad config fails in
seconds, in one line (`experiments.errors.ConfigError`), and returns what
they computed that the run uses again (`Plan`).
"""

from typing import NamedTuple

import optax

from experiments import config_lib
from experiments import distributed
from experiments import input_pipeline
from experiments import methods
from experiments import models
from experiments import noise
from experiments.errors import ConfigError

# Integer keys and their smallest values.
_SMALLEST = {
    'num_epochs': 1, 'batch_size': 1, 'eval_batch_size': 1, 'final_epochs': 1,
    'checkpoint_every': 1, 'train_subset': 0, 'test_subset': 0,
    'num_devices': 0, 'steps_per_dispatch': 0,
}


class Plan(NamedTuple):
  """What validating a config computed, for the run to use, not recompute.

  Attributes:
    dataset: the parsed dataset name (`experiments.input_pipeline.check_dataset`).
    noise: the checked noise settings (`experiments.noise.settings`).
    devices: the devices of the run's mesh (`experiments.distributed.devices`).
  """
  dataset: input_pipeline.data_lib.DatasetName
  noise: noise.Settings
  devices: list


def validate_config(config) -> Plan:
  """Checks a configuration without loading data or writing a file.

  Calls, in seconds, the checks of what would otherwise fail after the data
  is loaded: a key that `experiments.configs.default.HELP` lacks
  (`experiments.config_lib.check_keys`), the method, its hyperparameters and
  OGC's settings (`experiments.methods.create_method`), the noise
  (`experiments.noise.settings`), the dataset and the held-out fold
  (`experiments.input_pipeline.check_dataset`, `check_holdout`), the model
  and dtype (`experiments.models.from_config`), the devices
  (`experiments.distributed.devices`) and numbers out of range. Only the
  batch (and the folds) against the dataset's size wait for the data
  (`experiments.train.train_and_evaluate` checks it right after loading,
  before writing anything).

  Returns:
    The `Plan`: what the checks computed that loading the data
    (`experiments.input_pipeline.load_data`) and training use.

  Raises:
    ConfigError: a ``ValueError`` naming the key, the bad value and the valid
      choices.

  Example:
    >>> from experiments.configs import digits
    >>> config = digits.get_config()
    >>> config.noise.kind = 'symetric'
    >>> validate_config(config)
    Traceback (most recent call last):
    ...
    experiments.errors.ConfigError: Unknown noise config.noise.kind='symetric'; expected one of ('none', 'symmetric', 'asymmetric', 'instance').
  """
  try:
    config_lib.check_keys(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  methods.create_method(config, optax.constant_schedule(config.learning_rate))
  noise_settings = noise.settings(config)
  dataset = input_pipeline.check_dataset(config)
  input_pipeline.check_holdout(config)
  models.from_config(config, num_classes=2)
  for key, smallest in _SMALLEST.items():
    value = config[key]
    if value < smallest:
      raise ConfigError(f'config.{key}={value!r}; expected an integer '
                        f'>= {smallest}.')
  if not config.learning_rate > 0:
    raise ConfigError(f'config.learning_rate={config.learning_rate!r}; '
                      'expected a number > 0.')
  if config.train_subset:
    input_pipeline.steps_per_epoch(config, config.train_subset,
                                   f'config.train_subset='
                                   f'{config.train_subset}, the training images')
  return Plan(dataset, noise_settings, distributed.devices(config))
