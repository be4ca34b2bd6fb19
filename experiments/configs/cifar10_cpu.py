"""CIFAR-10 on two CPU cores, in the regime where the network memorises.

All 50,000 training images and all 10,000 test images, 40% symmetric noise.
Every choice below was made from the behaviour of plain cross-entropy alone
(one CE run, 40% symmetric noise, seed 0), never from OGC's score:

* ``model='mlp'`` (two hidden layers of 256): the network has the capacity
  to fit every wrong label, and a run is minutes on two cores: the committed
  records (``results/records/cifar10_cpu``, two runs at a time on 2 vCPUs of
  an AMD EPYC) took 88-566 s, median 201 s, OGC's the longest.
* ``learning_rate=0.02`` (momentum 0.9, weight decay 5e-4, clip 5.0 as in
  the recipe): CE's test accuracy peaks within the first few epochs (45.9% at
  epoch 4) and then falls as it starts to predict the wrong given labels.
* ``num_epochs=60`` with the learning rate x0.1 at epochs 20 and 40 (the
  recipe's 1/3 and 2/3): after the first decay CE memorises quickly (26% of
  the noisy labels at epoch 20, 68% at 40) and ends at 75% memorised with
  37.4% test accuracy; after the second decay nothing changes any more, so
  more epochs would only cost time.
* No augmentation: augmentation works against memorising the wrong labels,
  and this config is about the regime where they are memorised.
* The paper's OGC settings: a queue of 4,096 losses (a tenth of an epoch)
  refitted every 32 steps.

The dataset is TFDS ``cifar10``; ``--config.dataset=cifar10_jpeg`` (or
``folder:PATH``) reads an image-folder copy instead, which is what
``sweeps/specs/cifar10_cpu.json`` uses.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'cifar10'
  config.model = 'mlp'
  config.noise.rate = 0.4
  config.learning_rate = 0.02
  config.num_epochs = 60
  config.augment.crop_padding = 0
  config.augment.flip = False
  config.augment.rotation_degrees = 0.0
  config.checkpoint_every = 10
  return config
