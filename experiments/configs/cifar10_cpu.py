"""A CPU-sized CIFAR-10 run on the shared copy, for machines without a GPU.

Small CNN, a fixed random 5,000 training images and 2,000 test images, 15
epochs (lr x0.1 at epochs 5 and 10), otherwise the full recipe (SGD 0.1,
momentum 0.9, weight decay, clip 5.0, crop + flip + rotation), 40%
symmetric noise. An epoch is 39 steps, so the threshold is refitted every 8
steps instead of 32; the queue keeps the paper's 4096.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.model = 'small_cnn'
  config.train_subset = 5000
  config.test_subset = 2000
  config.noise.rate = 0.4
  config.num_epochs = 15
  config.final_epochs = 5
  config.ogc.update_period = 8
  return config
