"""CIFAR-100 with the authors' recipe: ResNet-34 on TFDS ``cifar100``.

Prepare the data once in DATA_DIR as `experiments.data.tfds.prepare_command`
says, then ``--config.data_dir=DATA_DIR``.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'cifar100'
  config.model = 'resnet34'
  return config
