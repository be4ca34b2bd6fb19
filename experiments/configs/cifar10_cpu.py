"""A CPU-sized CIFAR-10 run on the shared copy: small CNN, 10k images, 30 epochs.

Same recipe otherwise (SGD 0.1, momentum, schedule at 1/3 and 2/3, clip 5.0,
augmentation), 40% symmetric noise. About 80 steps an epoch, so the queue
holds about half an epoch of losses and is refitted every 16 steps.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.model = 'small_cnn'
  config.train_subset = 10000
  config.noise.rate = 0.4
  config.num_epochs = 30
  config.ogc.queue_size = 4096
  config.ogc.update_period = 16
  return config
