"""CIFAR-100 with the authors' recipe: ResNet-34 on TFDS ``cifar100``.

Prepare the data once: ``tfds build cifar100 --data_dir=DATA_DIR
--file_format=array_record``, then ``--config.data_dir=DATA_DIR``.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'cifar100'
  config.model = 'resnet34'
  return config
