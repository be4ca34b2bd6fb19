"""Side by side with the authors' PyTorch code: the same run, two implementations.

OGC is defined by the authors' code (github.com/Virusdoll/OGC) as much as by
the paper. This script runs their loss (``methods.losses_ogc`` and
``methods.losses.CrossEntropy``, unmodified, from a checkout given by path)
in their training step (``trainer.Trainer.train_batch``: forward, their loss
with the optimizer's current learning rate, backward, global-norm clip 5,
``torch.optim.SGD`` with momentum and weight decay, ``MultiStepLR`` per
epoch), beside ogc_jax's own train step (`experiments.train.make_steps`), on
exactly the same inputs:

* the same data and noisy labels (`experiments.input_pipeline.load_data` of
  the config; ``noise.protocol='authors'`` draws their noise);
* the same initial weights (ours, copied into a PyTorch MLP of the same
  shape: the authors' code has no MLP; their ResNets are for GPUs);
* the same batches in the same order (our permutation per epoch, the last
  incomplete batch dropped on both sides).

Two modes:

* trajectory (default): both whole runs, epoch by epoch: the loss (mean of
  min(1, tau/|l'(p)|) * l(p), the objective OGC's gradient comes from, on
  both sides), test accuracy, the fraction of noisy labels memorised
  (training predictions equal to the wrong given label), tau and the mixture
  at the epoch's end, then the final accuracy (mean of the last 10 epochs).
* ``--steps N``: step by step, the largest relative difference of the
  parameters and of tau after each step, and the first step where either
  differs beyond float noise (``--tolerance``).

What each side's mixture fit is can be changed, to take the method apart:
``--fit`` is ogc_jax's (`ogc_jax.fit_gmm`'s ``fit``); ``--their-fit`` replaces
the function their loss calls (``methods.losses_ogc.fit_gmm``, as a module
attribute, their file untouched) with scikit-learn EM run to convergence
(``converged``) or with `ogc_jax.fit_gmm` (``ogc_jax``); ``--their-tau
ogc_jax`` replaces their whole refit (fit and threshold) by ogc_jax's, so
that only the training loops differ.

Needs PyTorch (``pip install torch``) and a checkout of the authors'
repository (``git clone https://github.com/Virusdoll/OGC``); without either it
says so in one line and exits 0. Run from the repository root::

  python -m benchmarks.parity --authors PATH/TO/OGC \\
      --config experiments/configs/cifar10_cpu.py --method ogc_ce \\
      --noise asymmetric:0.4 --set dataset=cifar10_jpeg
  python -m benchmarks.parity --authors PATH/TO/OGC --steps 200 ...

``--quick``: digits, 3 epochs (a smoke run).
"""

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import sys
import time
import types

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

import ogc_jax
from experiments import input_pipeline
from experiments import config_lib
from experiments import methods
from experiments import models
from experiments import train as train_lib

# Their scripts' settings (script/cifar10/ogc_*.sh), besides epsilon, the
# update period and the queue size, which come from the config.
AUTHORS_METHOD_PARAMS = dict(binary_search_tol=1e-7, binary_search_max_iter=10)
AUTHORS_LOSS_PARAMS = {'ogc_ce': {}, 'ogc_gce': {'q': 0.7},
                       'ogc_fl': {'gamma': 0.5}, 'ce': {}}


def _missing() -> str:
  """Why the authors' side cannot run here, or '' if it can."""
  if importlib.util.find_spec('torch') is None:
    return 'PyTorch is not installed (pip install torch)'
  return ''


def load_authors(path):
  """Their ``methods`` package and ``trainer`` module, imported from ``path``.

  Imported under their own names from their files, without changing
  ``sys.path``: ``methods`` as a package (its modules import each other
  relatively).
  """
  init = os.path.join(path, 'methods', '__init__.py')
  trainer_file = os.path.join(path, 'trainer.py')
  for f in (init, trainer_file):
    if not os.path.isfile(f):
      raise FileNotFoundError(
          f'{path!r} is not a checkout of the authors\' repository '
          f'(github.com/Virusdoll/OGC): no {os.path.relpath(f, path)}')
  spec = importlib.util.spec_from_file_location(
      'methods', init, submodule_search_locations=[os.path.dirname(init)])
  methods = importlib.util.module_from_spec(spec)
  sys.modules['methods'] = methods
  spec.loader.exec_module(methods)
  spec = importlib.util.spec_from_file_location('authors_trainer', trainer_file)
  trainer = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(trainer)
  return types.SimpleNamespace(methods=methods, trainer=trainer,
                               losses_ogc=sys.modules['methods.losses_ogc'])


def torch_mlp(params):
  """A PyTorch MLP holding the Flax `experiments.models.MLP` parameters.

  Its input is the flattened NHWC image, as the Flax model flattens it.
  """
  import torch  # pylint: disable=g-import-not-at-top
  hidden = sorted((n for n in params if n.startswith('Dense_')),
                  key=lambda n: int(n.split('_')[-1]))
  names = hidden + ['classifier']
  layers = [torch.nn.Flatten()]
  for i, name in enumerate(names):
    kernel = np.asarray(params[name]['kernel'])
    dense = torch.nn.Linear(*kernel.shape)
    with torch.no_grad():
      dense.weight.copy_(torch.from_numpy(kernel.T.copy()))
      dense.bias.copy_(torch.from_numpy(np.asarray(params[name]['bias'])))
    layers.append(dense)
    if i < len(names) - 1:
      layers.append(torch.nn.ReLU())
  return torch.nn.Sequential(*layers)


def torch_default_mlp(input_size, num_classes):
  """The MLP of `experiments.models.MLP` with PyTorch's own initialisation."""
  import torch  # pylint: disable=g-import-not-at-top
  widths = [input_size] + list(models.MLP(num_classes).hidden) + [num_classes]
  layers = [torch.nn.Flatten()]
  for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
    layers.append(torch.nn.Linear(fan_in, fan_out))
    if i < len(widths) - 2:
      layers.append(torch.nn.ReLU())
  return torch.nn.Sequential(*layers)


def loader_batches(num_train, batch_size, generator):
  """Their DataLoader's batches: a fresh shuffle, the last batch incomplete."""
  import torch  # pylint: disable=g-import-not-at-top
  perm = torch.randperm(num_train, generator=generator).numpy()
  return [perm[i:i + batch_size] for i in range(0, num_train, batch_size)]


def _torch_params(model):
  """The PyTorch MLP's parameters as Flax-shaped arrays, for comparison."""
  dense = [m for m in model if hasattr(m, 'weight')]
  names = [f'Dense_{i}' for i in range(len(dense) - 1)] + ['classifier']
  return {name: {'kernel': m.weight.detach().numpy().T,
                 'bias': m.bias.detach().numpy()}
          for name, m in zip(names, dense)}


def converged_sklearn_fit(x):
  """scikit-learn EM run to convergence, returning what their fit returns."""
  from sklearn.mixture import GaussianMixture  # pylint: disable=g-import-not-at-top
  gm = GaussianMixture(n_components=2, max_iter=2000, tol=1e-8,
                       reg_covar=1e-3).fit(x)
  means, covars = gm.means_.ravel(), gm.covariances_.ravel()
  lo, hi = np.argmin(means), np.argmax(means)
  return means[lo], covars[lo], means[hi], covars[hi]


def ogc_jax_fit(fit):
  """`ogc_jax.fit_gmm` returning what their fit returns."""
  def fit_fn(x):
    g = ogc_jax.fit_gmm(jnp.asarray(np.asarray(x).ravel(), jnp.float32),
                        fit=fit)
    return (float(g.mean_clean), float(g.var_clean), float(g.mean_noisy),
            float(g.var_noisy))
  return fit_fn


@functools.partial(jax.jit, static_argnums=0)
def _objective(base_loss, logits, labels, tau):
  """The batch mean of min(1, tau / |l'(p)|) * l(p), p clamped as OGC does."""
  p = jnp.clip(ogc_jax.losses.probability_of_label(logits, labels),
               ogc_jax.MIN_PROB, ogc_jax.MAX_PROB)
  weights = jnp.minimum(1.0, tau / ogc_jax.derivative_magnitude(base_loss, p))
  return jnp.mean(weights * base_loss(p))


class TheirSide:
  """The authors' loss in their train step, on a PyTorch copy of our MLP."""

  def __init__(self, authors, config, method_name, params, input_size,
               their_fit, their_tau, our_fit):
    """``params`` None: PyTorch's own initialisation, seeded as their main.py."""
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)  # their k-means draws from NumPy's global state
    self.model = torch_mlp(params) if params is not None else torch_default_mlp(
        input_size, 10)
    name = method_name
    kwargs = dict(AUTHORS_LOSS_PARAMS[name], num_classes=10)
    if name.startswith('ogc_'):
      kwargs.update(AUTHORS_METHOD_PARAMS, epsilon=config.ogc.epsilon,
                    time_frame_s=config.ogc.update_period,
                    queue_size_q=config.ogc.queue_size)
    self.loss = getattr(authors.methods, name)(**kwargs)
    self.is_ogc = name.startswith('ogc_')
    self._patches = contextlib.ExitStack()
    if their_fit != 'own':
      fit_fn = (converged_sklearn_fit if their_fit == 'converged'
                else ogc_jax_fit(our_fit))
      self._patch(authors.losses_ogc, 'fit_gmm', fit_fn)
    if their_tau == 'ogc_jax':
      self._use_ogc_jax_refit(method_name, config, our_fit)
    self.optimizer = torch.optim.SGD(
        self.model.parameters(), lr=config.learning_rate,
        momentum=config.momentum, weight_decay=config.weight_decay,
        nesterov=False)
    milestones = [int(round(f * config.num_epochs))
                  for f in config.lr_decay_epochs]
    self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
        self.optimizer, milestones=milestones, gamma=config.lr_decay_factor)
    args = types.SimpleNamespace(log_freq=10**12, write_freq=10**12)
    self.trainer = authors.trainer.Trainer(None, None, None, 'cpu', args)
    self.base_loss = (methods.loss_function(config) if self.is_ogc
                      else ogc_jax.losses.cross_entropy)

  def _patch(self, module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    self._patches.callback(setattr, module, name, old)

  def close(self):
    self._patches.close()

  def _use_ogc_jax_refit(self, method_name, config, fit):
    """Their loss with ogc_jax's refit (fit + threshold) in place of theirs."""
    loss, base_loss = self.loss, methods.loss_function(config)
    state = {'gmm': None}

    def get_tau_t():
      if len(loss.queue_H) < loss.queue_size_q:
        return loss.prob_thr_t, loss.tau_t
      h = jnp.asarray(np.asarray(loss.queue_H, np.float32))
      gmm = ogc_jax.fit_gmm(h, fit=fit, init=state['gmm'] if fit == 'converged'
                            else None)
      p, _ = ogc_jax.solve_threshold(gmm, base_loss, loss.lr_t, loss.epsilon)
      state['gmm'] = gmm
      loss.info.update(mean_clean=float(gmm.mean_clean),
                       covar_clean=float(gmm.var_clean),
                       mean_noisy=float(gmm.mean_noisy),
                       covar_noisy=float(gmm.var_noisy))
      p = float(p)
      return p, loss.mapping_p_to_grad(self.torch.tensor(p)).abs().item()

    del method_name
    loss.get_tau_t = get_tau_t

  @property
  def tau(self):
    return float(self.loss.tau_t) if self.is_ogc else None

  def step(self, images, labels, epoch):
    """One of their train steps; returns the logits and our-style loss."""
    torch = self.torch
    self.trainer.info['epoch'] = epoch
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels.astype(np.int64))
    pred, _ = self.trainer.train_batch(self.model, self.optimizer, self.loss,
                                       x, y)
    logits = pred.detach().numpy()
    return logits, self._objective(logits, labels)

  def _objective(self, logits, labels):
    """mean(min(1, tau / |l'(p)|) * l(p)): ogc_jax's objective, their tau."""
    tau = self.tau if self.is_ogc else np.inf
    return float(_objective(self.base_loss, logits, labels, tau))

  def end_epoch(self):
    self.scheduler.step()

  def mixture(self):
    info = getattr(self.loss, 'info', {})
    if not self.is_ogc or not info.get('covar_clean'):
      return None  # not fitted yet
    return dict(mean_clean=float(info['mean_clean']),
                var_clean=float(info['covar_clean']),
                mean_noisy=float(info['mean_noisy']),
                var_noisy=float(info['covar_noisy']))

  def params(self):
    return _torch_params(self.model)

  def test_accuracy(self, images, labels):
    torch = self.torch
    self.model.eval()
    with torch.no_grad():
      correct = 0
      for i in range(0, len(labels), 1000):
        pred = self.model(torch.from_numpy(images[i:i + 1000]))
        correct += int((pred.argmax(1).numpy() == labels[i:i + 1000]).sum())
    self.model.train()
    return correct / len(labels)


class OurSide:
  """ogc_jax's train step (`experiments.train.make_steps`), as a run uses it."""

  def __init__(self, config, data, mean, std):
    self.config = config
    num_train = len(data.labels)
    self.steps_per_epoch = num_train // config.batch_size
    mesh = Mesh(np.array(jax.devices()[:1]), ('data',))
    self.schedule = train_lib.learning_rate_schedule(config,
                                                     self.steps_per_epoch)
    self.method = methods.create_method(config, self.schedule)
    self.model = models.from_config(config, data.dataset.num_classes)
    tx = train_lib.create_optimizer(config, self.schedule)
    steps = train_lib.make_steps(
        config, self.model, self.method, tx, mean, std,
        NamedSharding(mesh, P('data')), num_train)
    init_rng, self.data_rng, self.aug_rng = train_lib.run_keys(config.seed)
    self.state = train_lib.create_train_state(
        init_rng, self.model, tx, self.method, data.images.shape[1:])
    self.arrays = tuple(jnp.asarray(a) for a in (data.images, data.labels,
                                                 data.true_labels))
    self._step = jax.jit(steps.train)
    self._epoch = jax.jit(functools.partial(train_lib.train_steps, steps.train,
                                            self.steps_per_epoch))
    self._eval = jax.jit(steps.evaluate)
    self.num_train = num_train

  def permutation(self, epoch):
    """The batch order of an epoch, as `experiments.train` draws it."""
    return train_lib.epoch_permutation(self.data_rng, epoch, self.num_train)

  def run_epoch(self, epoch, perm):
    sums = train_lib.EpochSums.zeros(self.method)
    self.state, sums = self._epoch(self.state, sums, self.arrays,
                                   jnp.asarray(perm),
                                   jax.random.fold_in(self.aug_rng, epoch))
    return jax.device_get(sums)

  def step(self, epoch, perm):
    sums = train_lib.EpochSums.zeros(self.method)
    self.state, sums = self._step(self.state, sums, self.arrays,
                                  jnp.asarray(perm),
                                  jax.random.fold_in(self.aug_rng, epoch))
    return jax.device_get(sums)

  @property
  def tau(self):
    s = self.state.method_state
    return float(s.tau) if isinstance(s, ogc_jax.OGCState) else None

  def mixture(self):
    s = self.state.method_state
    if not isinstance(s, ogc_jax.OGCState) or not int(s.num_threshold_updates):
      return None
    return {k: float(v) for k, v in s.gmm._asdict().items()}

  def test_accuracy(self, images, labels):
    return train_lib.evaluate(self._eval, self.state, images, labels, 1000,
                              jnp.asarray).accuracy()


def _normalised(images, mean, std):
  return ((images.astype(np.float32) / 255 - np.asarray(mean, np.float32))
          / np.asarray(std, np.float32))


def _max_relative_difference(a, b):
  """max over leaves of max|a - b| / max|a|."""
  diffs = jax.tree_util.tree_map(
      lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))
                         / max(float(np.max(np.abs(np.asarray(x)))), 1e-30)),
      a, b)
  return max(jax.tree_util.tree_leaves(diffs))


def _memorised(logits, labels, true_labels):
  noisy = labels != true_labels
  pred = np.argmax(logits, -1)
  return int(np.sum(noisy & (pred == labels))), int(np.sum(noisy))


def compare_steps(ours, theirs, data, x_train, num_steps, tolerance):
  """Both sides step by step; prints each step's differences."""
  bs = ours.config.batch_size
  first = None
  print(f'{"step":>6} {"lr":>8} {"tau ours":>10} {"tau theirs":>10} '
        f'{"tau rel.":>9} {"params rel.":>11}')
  step = 0
  epoch = 1
  while step < num_steps:
    perm = ours.permutation(epoch)
    for i in range(ours.steps_per_epoch):
      if step >= num_steps:
        break
      idx = perm[i * bs:(i + 1) * bs]
      lr = float(ours.schedule(step))
      ours.step(epoch, perm)
      theirs.step(x_train[idx], data.labels[idx], epoch)
      step += 1
      d_params = _max_relative_difference(
          jax.device_get(ours.state.params), theirs.params())
      t_ours, t_theirs = ours.tau, theirs.tau
      d_tau = (abs(t_ours - t_theirs) / t_theirs) if t_ours is not None else 0.0
      beyond = d_params > tolerance or d_tau > tolerance
      if beyond and first is None:
        first = (step, d_params, d_tau)
      refit = (ours.config.ogc.update_period
               and step % ours.config.ogc.update_period == 0)
      if step <= 3 or refit or beyond and step - first[0] < 3:
        print(f'{step:6d} {lr:8.4g} {t_ours or 0:10.5g} {t_theirs or 0:10.5g} '
              f'{d_tau:9.2e} {d_params:11.2e}')
    theirs.end_epoch()
    epoch += 1
  if first is None:
    print(f'No difference beyond {tolerance:g} in {num_steps} steps.')
  else:
    print(f'First difference beyond {tolerance:g}: step {first[0]} '
          f'(parameters {first[1]:.2e}, tau {first[2]:.2e}).')
  return first


def compare_trajectories(ours, theirs, data, x_train, x_test, config,
                         their_batches='ours', side='both'):
  """Both whole runs (or theirs alone: ``side='theirs'``), epoch by epoch.

  ``their_batches``: ``'ours'``, our batches in our order; ``'loader'``, as
  their DataLoader gives them (a shuffle of PyTorch's, the last batch
  incomplete).

  Returns:
    The histories and the final accuracies of the sides that ran.
  """
  import torch  # pylint: disable=g-import-not-at-top
  bs = config.batch_size
  dataset = data.dataset
  sides = ('theirs',) if side == 'theirs' else ('ours', 'theirs')
  history = {side: [] for side in sides}
  generator = torch.Generator().manual_seed(config.seed)
  num_train = len(data.labels)
  print(f'{"epoch":>5} | {"test acc":>17} | {"memorised":>15} | '
        f'{"loss":>15} | {"tau":>15} | {"noisy mean (ours, theirs)":>16}')
  blank = dict(test_accuracy=None, memorised=None, loss=None, tau=None,
               gmm=None)
  for epoch in range(1, config.num_epochs + 1):
    rows = {'ours': blank}
    perm = ours.permutation(epoch)  # our batch order, whichever side runs
    if 'ours' in sides:
      t0 = time.time()
      sums = ours.run_epoch(epoch, perm)
      rows['ours'] = dict(
          epoch=epoch,
          test_accuracy=ours.test_accuracy(dataset.test_images,
                                           dataset.test_labels),
          memorised=float(sums.correct_noisy / max(sums.n_noisy, 1)),
          loss=float(sums.loss / sums.count), tau=ours.tau,
          gmm=ours.mixture(), seconds=time.time() - t0)
    if their_batches == 'loader':
      batches = loader_batches(num_train, bs, generator)
    else:
      steps = num_train // bs
      batches = [perm[i * bs:(i + 1) * bs] for i in range(steps)]
    t0 = time.time()
    mem, n_noisy, loss_sum = 0, 0, 0.0
    for idx in batches:
      logits, loss = theirs.step(x_train[idx], data.labels[idx], epoch)
      m, n = _memorised(logits, data.labels[idx], data.true_labels[idx])
      mem, n_noisy, loss_sum = mem + m, n_noisy + n, loss_sum + loss
    theirs.end_epoch()
    rows['theirs'] = dict(
        epoch=epoch, test_accuracy=theirs.test_accuracy(
            x_test, dataset.test_labels),
        memorised=mem / max(n_noisy, 1), loss=loss_sum / len(batches),
        tau=theirs.tau, gmm=theirs.mixture(), seconds=time.time() - t0)
    for side in sides:
      history[side].append(rows[side])
    o, t = rows['ours'], rows['theirs']
    fmt = lambda v, spec, scale=1: '-' if v is None else format(scale * v, spec)
    mean = lambda r: None if not r['gmm'] else r['gmm']['mean_noisy']
    print(f'{epoch:5d} | {fmt(o["test_accuracy"], "7.2f", 100)} '
          f'{fmt(t["test_accuracy"], "7.2f", 100)}  | '
          f'{fmt(o["memorised"], "6.1f", 100)} '
          f'{fmt(t["memorised"], "6.1f", 100)}  | {fmt(o["loss"], "7.4f")} '
          f'{fmt(t["loss"], "7.4f")} | {fmt(o["tau"], "7.3f")} '
          f'{fmt(t["tau"], "7.3f")} | {fmt(mean(o), "7.3f")} '
          f'{fmt(mean(t), "7.3f")}', flush=True)
  final = {side: float(np.mean([r['test_accuracy'] for r in
                                history[side][-config.final_epochs:]]))
           for side in sides}
  print(f'final test accuracy (mean of the last {config.final_epochs} '
        'epochs): ' + ', '.join(f'{side} {100 * final[side]:.2f}'
                               for side in sides))
  return history, final


def build_config(args):
  overrides = dict(kv.split('=', 1) for kv in args.set)
  overrides.update(method=args.method, seed=str(args.seed))
  overrides['noise.protocol'] = 'authors'
  if args.noise:
    overrides['noise.kind'], overrides['noise.rate'] = args.noise.split(':')
  if args.fit:
    overrides['ogc.fit'] = args.fit
  if args.epochs:
    overrides['num_epochs'] = str(args.epochs)
  return config_lib.load(args.config, overrides)


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--authors', default=os.environ.get('OGC_AUTHORS_CODE'),
                      help='checkout of github.com/Virusdoll/OGC '
                           '(default: $OGC_AUTHORS_CODE)')
  parser.add_argument('--config', default='experiments/configs/cifar10_cpu.py')
  parser.add_argument('--method', default='ogc_ce',
                      choices=sorted(AUTHORS_LOSS_PARAMS))
  parser.add_argument('--noise', default='asymmetric:0.4', help='KIND:RATE')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--epochs', type=int, default=0,
                      help="number of epochs (0: the config's)")
  parser.add_argument('--set', action='append', default=[],
                      metavar='KEY=VALUE', help='a config override')
  parser.add_argument('--fit', default=None,
                      help="ogc_jax's mixture fit (ogc_jax.fit_gmm's fit)")
  parser.add_argument('--their-fit', default='own',
                      choices=('own', 'converged', 'ogc_jax'))
  parser.add_argument('--their-tau', default='own', choices=('own', 'ogc_jax'))
  parser.add_argument('--their-init', default='ours', choices=('ours', 'torch'),
                      help="their network's initial weights: a copy of ours, "
                           "or PyTorch's own (seeded as their main.py)")
  parser.add_argument('--their-batches', default='ours',
                      choices=('ours', 'loader'),
                      help='their batches: ours, in our order, or as their '
                           'DataLoader gives them (their own shuffle, the '
                           'last batch incomplete)')
  parser.add_argument('--side', default='both', choices=('both', 'theirs'),
                      help='trajectory mode: run both sides, or theirs alone')
  parser.add_argument('--steps', type=int, default=0,
                      help='step mode: compare this many steps')
  parser.add_argument('--tolerance', type=float, default=1e-4)
  parser.add_argument('--out', help='write both histories here (JSON)')
  parser.add_argument('--quick', action='store_true',
                      help='smoke run: digits, 3 epochs')
  args = parser.parse_args(argv)
  if args.quick:
    args.config, args.noise, args.epochs = ('experiments/configs/digits.py',
                                            'symmetric:0.6', 3)
  missing = _missing() or (
      '' if args.authors else
      "no checkout of the authors' code (--authors PATH or $OGC_AUTHORS_CODE)")
  if missing:
    print(f'parity: skipped, {missing}.')
    return None
  authors = load_authors(args.authors)
  config = build_config(args)
  data = input_pipeline.load_data(config)
  mean, std = data.dataset.channel_mean_std
  ours = OurSide(config, data, mean, std)
  theirs = TheirSide(
      authors, config, args.method,
      jax.device_get(ours.state.params) if args.their_init == 'ours' else None,
      int(np.prod(data.images.shape[1:])), args.their_fit, args.their_tau,
      config.ogc.fit)
  if args.steps and (args.their_init != 'ours' or args.their_batches != 'ours'
                     or args.side != 'both'):
    parser.error('--steps compares the same weights and batches on both sides')
  x_train = _normalised(data.images, mean, std)
  x_test = _normalised(data.dataset.test_images, mean, std)
  print(f'{args.method}, {args.noise}, seed {args.seed}, {len(data.labels)} '
        f'training images ({100 * data.noise.noise_rate:.1f}% noisy), '
        f'{ours.steps_per_epoch} steps an epoch; ogc_jax fit: '
        f'{config.ogc.fit}; theirs: fit {args.their_fit}, '
        f'tau {args.their_tau}, init {args.their_init}, batches '
        f'{args.their_batches}')
  try:
    if args.steps:
      return compare_steps(ours, theirs, data, x_train, args.steps,
                           args.tolerance)
    history, final = compare_trajectories(
        ours, theirs, data, x_train, x_test, config, args.their_batches,
        args.side)
  finally:
    theirs.close()
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'args': vars(args), 'final': final, 'history': history}, f,
                indent=1)
  return final


if __name__ == '__main__':
  main()
