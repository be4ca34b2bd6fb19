"""Fields shared by every experiment config: the authors' CIFAR recipe.

SGD with learning rate 0.1, momentum 0.9, weight decay 5e-4, batch 128,
150 epochs with the learning rate x0.1 at epochs 50 and 100 (at 1/3 and 2/3
of ``num_epochs`` when shortened), and a global-norm gradient clip of 5.0
for every method. Dataset configs override what differs.

`HELP` says in a line what each key means; ``python -m experiments.train
--help`` prints it beside the key's value, and `experiments.train` refuses a
config with a key that `HELP` lacks.
"""

import ml_collections
from ml_collections import config_dict

# Key -> what it means, one line each. A new key needs its line here.
HELP = {
    # Data.
    'dataset': "'digits' (bundled), a TFDS name ('cifar10', 'cifar100', "
               "'mnist', 'cifar10_n', ...) prepared in data_dir, "
               "'folder:PATH' (PATH/train/<class>/*.png and PATH/test/...), "
               "or 'cifar10_jpeg' (CIFAR-10 as an image folder: "
               'experiments.data.make_image_folder)',
    'data_dir': "TFDS data folder, or the folder holding cifar10-jpeg/ for "
                "'cifar10_jpeg' (None: TFDS's default; the system's "
                'temporary folder)',
    'label_key': 'TFDS feature of the training labels; CIFAR-N: aggre_label, '
                 'worse_label, random_label1..3 (cifar10_n), noise_label '
                 '(cifar100_n)',
    'labels_csv': 'image folders: a CSV of path,label rows replacing the '
                  'folder labels (then the noise comes with the data)',
    'cache_dir': 'folder of decoded datasets (.npz); None: ~/.cache/ogc_jax',
    'train_subset': 'train on a fixed random N training images (0: all)',
    'test_subset': 'evaluate on a fixed random N test images (0: all)',
    # Label noise added to the training labels (experiments.noise).
    'noise.kind': 'none | symmetric | asymmetric | instance',
    'noise.rate': 'noise rate eta in [0, 1); 0 with kind none',
    'noise.mapping': 'asymmetric: a map of experiments.noise.ASYMMETRIC_MAPPINGS '
                     "(None: the dataset's own)",
    'noise.protocol': "'ours' (independent draws per label) or 'authors' "
                      '(their code: exactly int(T_ij * n_i) labels of class i '
                      'moved to j, their CIFAR-100 map of blocks of 5; their '
                      '"50%" symmetric realises 39.6% on CIFAR-100)',
    'noise.seed': "seed of the noise; None: the run's seed ('ours'), 0 "
                  "('authors', theirs)",
    # Method.
    'method': 'a baseline loss (ogc_jax.baselines.LOSSES) or ogc_ + a base '
              'loss of p (ogc_ce, ogc_fl, ogc_gce, ogc_mae, ogc_taylor_ce)',
    'loss_hparams.gamma': "focal, ogc_fl: focusing parameter (None, here and "
                          "below: the loss's default)",
    'loss_hparams.q': 'gce, ogc_gce, phuber_gce, nce_agce: exponent q',
    'loss_hparams.tau': 'phuber_ce, phuber_gce: gradient bound tau',
    'loss_hparams.alpha': 'sce, nce_rce, nce_agce, anl_ce: weight of the '
                          'first term',
    'loss_hparams.beta': 'sce, nce_rce, nce_agce, anl_ce: weight of the '
                         'second term',
    'loss_hparams.a': 'nce_agce: a of the AGCE term',
    'loss_hparams.log_zero': 'sce, nce_rce: the value of log 0 in reverse CE',
    'loss_hparams.pi1': 'js: weight pi_1 of the labels',
    'loss_hparams.norm_bound': 'logit_clip_ce: bound on the logit norm',
    'loss_hparams.min_prob': 'anl_ce: smallest probability',
    'loss_hparams.order': 'taylor_ce, ogc_taylor_ce: order of the series',
    'ogc.epsilon': "OGC's epsilon: target clipped noise-to-clean gradient "
                   'ratio 1 + learning_rate * epsilon',
    'ogc.update_period': 'train steps between refits of the mixture and the '
                         'threshold',
    'ogc.queue_size': 'recent losses H = -log p the mixture is fitted to',
    'ogc.fit': "the mixture fit of each refit (ogc_jax.fit_gmm): 'published' "
               "(the authors' code: at most 10 EM steps from the two-means "
               "split), 'converged' (EM's most likely fixed point) or "
               "'conservative' (the ordered fixed point with the tightest "
               "threshold)",
    # Model and optimisation.
    'model': "'resnet18', 'resnet34', 'small_cnn' or 'mlp'",
    'dtype': 'compute dtype: float32 | bfloat16 (parameters stay float32)',
    'num_epochs': 'epochs to train',
    'batch_size': 'training images per step, over all devices',
    'learning_rate': 'SGD learning rate (> 0)',
    'momentum': 'SGD momentum',
    'weight_decay': 'weight decay, added to the gradient (as PyTorch SGD)',
    'lr_decay_epochs': 'fractions of num_epochs where the learning rate is '
                       'multiplied by lr_decay_factor',
    'lr_decay_factor': 'the factor of each learning-rate decay',
    'grad_clip_norm': 'global-norm gradient clip, for every method',
    # On-device augmentation.
    'augment.crop_padding': 'random crops after padding by N pixels (0: none)',
    'augment.flip': 'random horizontal flips',
    'augment.rotation_degrees': 'random rotations within +-N degrees '
                                '(0: none)',
    # The run.
    'seed': 'seed of initialisation, batch order, augmentation (and noise)',
    'final_epochs': 'reported accuracy: mean test accuracy of the last N '
                    'epochs',
    'eval_batch_size': 'test images per evaluation step',
    'num_devices': 'devices of the data-parallel mesh (0: every device)',
    'distributed': 'several processes (hosts): call jax.distributed.initialize '
                   'first, with the three keys below where given (None: '
                   "JAX's auto-detection: Cloud TPU, SLURM, Open MPI, "
                   'Kubernetes; JAX_COORDINATOR_ADDRESS)',
    'coordinator_address': "distributed: process 0's host:port, e.g. "
                           '10.0.0.1:1234',
    'num_processes': 'distributed: number of processes',
    'process_id': 'distributed: this process, 0 .. num_processes - 1 (process '
                  '0 writes the workdir and prints the result)',
    'checkpoint_every': 'epochs between Orbax checkpoints',
    'save_queues': "save the OGC queue at each epoch's end, for plots",
    'steps_per_dispatch': 'train steps per dispatch from Python (0: a whole '
                          'epoch); the progress bar advances once per '
                          'dispatch',
    'progress': 'show a progress bar on stderr',
    # Outputs about the labels (experiments.suspects).
    'label_issues': 'at the end, rank every training example by how likely '
                    'its label is wrong and write label_issues.csv (None: '
                    'for OGC methods only)',
    'holdout.folds': 'train on all but one of this many folds of the '
                     'training examples and write the held-out fold\'s '
                     'predicted probabilities (0: train on all)',
    'holdout.fold': 'the held-out fold, 0 .. holdout.folds - 1',
}


def get_config():
  """The full recipe on CIFAR-10 with OGC-CE under 50% symmetric noise."""
  config = ml_collections.ConfigDict()

  config.dataset = 'cifar10'
  config.data_dir = config_dict.placeholder(str)
  config.label_key = config_dict.placeholder(str)
  config.labels_csv = config_dict.placeholder(str)
  config.cache_dir = config_dict.placeholder(str)
  config.train_subset = 0
  config.test_subset = 0

  config.noise = ml_collections.ConfigDict()
  config.noise.kind = 'symmetric'
  config.noise.rate = 0.5
  config.noise.mapping = config_dict.placeholder(str)
  config.noise.protocol = 'ours'
  config.noise.seed = config_dict.placeholder(int)

  config.method = 'ogc_ce'
  config.loss_hparams = ml_collections.ConfigDict()
  for name in ('gamma', 'q', 'tau', 'alpha', 'beta', 'a', 'log_zero', 'pi1',
               'norm_bound', 'min_prob'):
    config.loss_hparams[name] = config_dict.placeholder(float)
  config.loss_hparams.order = config_dict.placeholder(int)
  config.ogc = ml_collections.ConfigDict()
  config.ogc.epsilon = 20.0
  config.ogc.update_period = 32
  config.ogc.queue_size = 4096
  config.ogc.fit = 'published'

  config.model = 'resnet18'
  config.dtype = 'float32'
  config.num_epochs = 150
  config.batch_size = 128
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.weight_decay = 5e-4
  config.lr_decay_epochs = (1 / 3, 2 / 3)
  config.lr_decay_factor = 0.1
  config.grad_clip_norm = 5.0

  config.augment = ml_collections.ConfigDict()
  config.augment.crop_padding = 4
  config.augment.flip = True
  config.augment.rotation_degrees = 15.0

  config.seed = 0
  config.final_epochs = 10
  config.eval_batch_size = 1000
  config.num_devices = 0
  config.distributed = False
  config.coordinator_address = config_dict.placeholder(str)
  config.num_processes = config_dict.placeholder(int)
  config.process_id = config_dict.placeholder(int)
  config.checkpoint_every = 1
  config.save_queues = True
  config.steps_per_dispatch = 0
  config.progress = True
  config.label_issues = config_dict.placeholder(bool)
  config.holdout = ml_collections.ConfigDict()
  config.holdout.folds = 0
  config.holdout.fold = 0
  return config
