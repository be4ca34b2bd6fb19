"""CIFAR-10 with the authors' recipe: ResNet-18, 150 epochs, 50% symmetric noise.

By default it reads the shared image-folder copy (``cifar10_jpeg``); pass
``--config.dataset=cifar10 --config.data_dir=...`` for TFDS, or
``--config.dataset=cifar10_n --config.label_key=worse_label
--config.noise.kind=none --config.noise.rate=0`` for CIFAR-10N.
"""

from experiments.configs import default


def get_config():
  return default.get_config()
