"""The embedded default: scikit-learn's digits, no download, a few CPU minutes.

An MLP on the 8x8 digits with 60% symmetric noise, trained with OGC-CE.
Digits has 1,437 training images, so an epoch is 11 steps of 128 (1,408
images); the queue and update period are scaled down with it, so the mixture
sees the losses of the last 1,024 images, 0.73 of an epoch, and is refitted
every 4 steps, 2.75 times an epoch. No augmentation: crops and rotations of
8x8 images destroy them.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'digits'
  config.model = 'mlp'
  config.noise.rate = 0.6
  config.num_epochs = 100
  config.ogc.queue_size = 1024
  config.ogc.update_period = 4
  config.augment.crop_padding = 0
  config.augment.flip = False
  config.augment.rotation_degrees = 0.0
  return config
