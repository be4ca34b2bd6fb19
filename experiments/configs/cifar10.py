"""CIFAR-10 with the authors' recipe: ResNet-18, 150 epochs, 50% symmetric noise.

Reads TFDS ``cifar10`` (prepared once in DATA_DIR as
`experiments.data.tfds.prepare_command` says, then
``--config.data_dir=DATA_DIR``). Other copies of the same data:
``--config.dataset=cifar10_jpeg`` (the image folder that
``python -m experiments.data.make_image_folder`` builds) or
``--config.dataset=folder:PATH``. CIFAR-10N's human labels:
``--config.dataset=cifar10_n --config.label_key=worse_label
--config.noise.kind=none --config.noise.rate=0``.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'cifar10'
  return config
