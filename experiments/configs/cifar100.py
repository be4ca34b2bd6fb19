"""CIFAR-100 with the authors' recipe: ResNet-34 from TFDS (``tfds build cifar100``)."""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'cifar100'
  config.model = 'resnet34'
  return config
