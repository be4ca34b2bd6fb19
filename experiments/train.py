"""Training on noisily labelled data with OGC or a baseline loss.

``train_and_evaluate(config, workdir)`` runs one experiment: it loads the
data, corrupts the training labels (`ogc_jax.noise`), trains data-parallel
over every device of a ``jax.sharding.Mesh``, evaluates each epoch and writes
to ``workdir``:

* ``config.json``: the configuration;
* ``metrics.jsonl``: one JSON object per epoch (accuracies, loss, tau, the
  mixture, the estimated and true noise rate, mean |dl/dp| of clean and noisy
  samples before and after clipping, step time);
* ``queues/epoch_NNNN.npy``: the OGC queue of H = -log p at each epoch end;
* ``checkpoints/``: an Orbax checkpoint per epoch; the same command resumes
  from the last one and ends with the same results as an uninterrupted run;
* ``result.json``, written last: ``final_test_accuracy`` (mean of the last
  ``config.final_epochs`` epochs' test accuracy, as the paper reports),
  ``best_test_accuracy``, wall time and the config.

Command line (Flax-examples style)::

  python -m experiments.train --config experiments/configs/cifar10.py \
      --config.method=ogc_ce --config.noise.rate=0.5 --workdir runs/x

Without flags it trains OGC-CE on scikit-learn's digits with 60% symmetric
noise (`experiments/configs/digits.py`) into ``runs/digits_default``.
"""

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ml_collections import config_flags
import numpy as np
import optax
import orbax.checkpoint as ocp

import ogc_jax
from ogc_jax import baselines
from ogc_jax import losses
from experiments import input_pipeline
from experiments import models

# Datasets whose asymmetric-noise mapping is known (ogc_jax.noise).
_MAPPING_OF_DATASET = {
    'digits': 'digits', 'mnist': 'mnist', 'cifar10': 'cifar10',
    'cifar10_jpeg': 'cifar10', 'cifar100': 'cifar100',
}


@flax.struct.dataclass
class TrainState:
  """Everything a step changes; checkpointed each epoch."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ogc_state: Any  # ogc_jax.OGCState, or an empty dict for baselines


# ---------------------------------------------------------------------------
# Configuration


class Method:
  """The loss of a config: a baseline loss or OGC with a base loss of p."""

  def __init__(self, config):
    name = config.method
    hparams = {k: v for k, v in config.loss_hparams.items() if v is not None}
    self.name = name
    self.is_ogc = name.startswith('ogc_')
    if self.is_ogc:
      base = name[len('ogc_'):]
      if base not in losses.BASE_LOSSES:
        raise ValueError(
            f'Unknown OGC base loss {base!r} in method {name!r}; expected '
            f'ogc_ + one of {sorted(losses.BASE_LOSSES)}.')
      fn = losses.BASE_LOSSES[base]
    elif name in baselines.LOSSES:
      fn = baselines.LOSSES[name]
    else:
      raise ValueError(
          f'Unknown method {name!r}; expected one of {sorted(baselines.LOSSES)}'
          f' or ogc_<base> with <base> in {sorted(losses.BASE_LOSSES)}.')
    accepted = set(losses.hyperparameters(fn))
    unknown = set(hparams) - accepted
    if unknown:
      raise ValueError(
          f'config.loss_hparams sets {sorted(unknown)}, which method {name!r} '
          f'does not take (it takes {sorted(accepted) or "none"}).')
    self.hparams = hparams
    self.fn = functools.partial(fn, **hparams)


def learning_rate_schedule(config, steps_per_epoch):
  """Piecewise constant: x lr_decay_factor at the given fractions of training."""
  boundaries = {
      int(round(f * config.num_epochs)) * steps_per_epoch: config.lr_decay_factor
      for f in config.lr_decay_epochs}
  return optax.piecewise_constant_schedule(config.learning_rate, boundaries)


def create_optimizer(config, schedule):
  """Global-norm clip, then coupled weight decay and SGD momentum (PyTorch)."""
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(schedule, momentum=config.momentum))


# ---------------------------------------------------------------------------
# Data


def load_data(config):
  """The dataset with training labels corrupted as the config asks.

  Returns:
    ``(dataset, given_labels, true_labels, noise)``: the labels trained on
    and the true ones (diagnostics only), and the `ogc_jax.noise.NoisyLabels`.
  """
  cache_dir = config.cache_dir or os.path.join(
      os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')),
      'ogc_jax')
  dataset = input_pipeline.load_dataset(
      config.dataset, data_dir=config.data_dir, label_key=config.label_key,
      labels_csv=config.labels_csv, cache_dir=cache_dir)
  images, labels = dataset.train_images, dataset.train_labels
  true = (dataset.train_clean_labels if dataset.train_clean_labels is not None
          else labels)
  if config.train_subset:
    # A fixed random subset (the same for every seed and method): folders
    # list images class by class, so a prefix would hold few classes.
    keep = np.sort(np.random.default_rng(0).permutation(len(labels))[
        :config.train_subset])
    images, labels, true = images[keep], labels[keep], true[keep]
  if config.test_subset:
    keep = np.sort(np.random.default_rng(1).permutation(
        len(dataset.test_labels))[:config.test_subset])
    dataset = dataclasses.replace(dataset, test_images=dataset.test_images[keep],
                                  test_labels=dataset.test_labels[keep])
  if dataset.train_clean_labels is not None and config.noise.kind != 'none':
    raise ValueError(
        f'{config.dataset} brings its own noisy labels; set '
        '--config.noise.kind=none --config.noise.rate=0.')
  mapping = config.noise.mapping or _MAPPING_OF_DATASET.get(config.dataset)
  noise = ogc_jax.noise.corrupt_labels(
      config.noise.kind, labels, dataset.num_classes, config.noise.rate,
      config.seed, features=images, dataset=mapping)
  return dataset, images, noise.labels, true, noise


# ---------------------------------------------------------------------------
# Steps


def make_steps(config, model, method, weighting, tx, mean, std, data_sharding,
               num_train):
  """The train step and evaluation of one configuration (to be jitted).

  ``weighting`` is the method's `ogc_jax.ogc_weights`, None for baselines.
  """
  base_loss = method.fn if method.is_ogc else None
  aug = config.augment
  batch_size = config.batch_size
  mean, std = jnp.asarray(mean), jnp.asarray(std)

  def train_step(state, sums, data, perm, rng):
    """One SGD step on the batch perm[step % steps_per_epoch]."""
    images_all, given_all, true_all = data
    steps_per_epoch = num_train // batch_size
    start = (state.step % steps_per_epoch) * batch_size
    idx = jax.lax.dynamic_slice(perm, (start,), (batch_size,))
    images = jax.lax.with_sharding_constraint(images_all[idx], data_sharding)
    labels = jax.lax.with_sharding_constraint(given_all[idx], data_sharding)
    true = true_all[idx]
    rng = jax.random.fold_in(rng, state.step)
    x = images.astype(jnp.float32)
    if aug.crop_padding or aug.flip or aug.rotation_degrees:
      x = input_pipeline.augment(
          rng, x, crop_padding=aug.crop_padding, flip=aug.flip,
          rotation_degrees=aug.rotation_degrees)
    x = input_pipeline.normalize(x, mean, std)

    def loss_fn(params):
      logits, new_vars = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x, train=True,
          mutable=['batch_stats'])
      p = losses.probability_of_label(logits, labels)
      if method.is_ogc:
        weights, ogc_state = weighting.update(p, state.ogc_state)
        loss = ogc_jax.weighted_base_loss(base_loss, p, weights)
      else:
        ogc_state = state.ogc_state
        loss = jnp.mean(method.fn(logits, labels))
      return loss, (logits, p, new_vars.get('batch_stats', {}), ogc_state)

    (loss, (logits, p, batch_stats, ogc_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    # Diagnostics from the true labels: never used for training.
    noisy = labels != true
    pred = jnp.argmax(logits, -1)
    batch_sums = {
        'count': jnp.float32(batch_size),
        'loss': loss * batch_size,
        'n_clean': jnp.sum(~noisy, dtype=jnp.float32),
        'n_noisy': jnp.sum(noisy, dtype=jnp.float32),
        'correct_clean': jnp.sum(~noisy & (pred == labels), dtype=jnp.float32),
        'correct_noisy': jnp.sum(noisy & (pred == labels), dtype=jnp.float32),
        'correct_noisy_true': jnp.sum(noisy & (pred == true), dtype=jnp.float32),
    }
    if method.is_ogc:
      g = ogc_jax.derivative_magnitude(
          base_loss, jnp.clip(p, ogc_jax.MIN_PROB, ogc_jax.MAX_PROB))
      g_after = jnp.minimum(g, ogc_state.tau)
      batch_sums.update({
          'grad_clean_before': jnp.sum(jnp.where(noisy, 0, g)),
          'grad_clean_after': jnp.sum(jnp.where(noisy, 0, g_after)),
          'grad_noisy_before': jnp.sum(jnp.where(noisy, g, 0)),
          'grad_noisy_after': jnp.sum(jnp.where(noisy, g_after, 0)),
          'clipped': jnp.sum(g > ogc_state.tau, dtype=jnp.float32),
      })
    sums = jax.tree_util.tree_map(lambda a, b: a + b, sums, batch_sums)
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state,
                              ogc_state=ogc_state)
    return new_state, sums

  def eval_step(state, images, labels, mask):
    x = input_pipeline.normalize(images.astype(jnp.float32), mean, std)
    logits = model.apply({'params': state.params,
                          'batch_stats': state.batch_stats}, x, train=False)
    correct = (jnp.argmax(logits, -1) == labels) & mask
    return jnp.sum(correct, dtype=jnp.float32)

  return train_step, eval_step


def zero_sums(is_ogc):
  keys = ['count', 'loss', 'n_clean', 'n_noisy', 'correct_clean',
          'correct_noisy', 'correct_noisy_true']
  if is_ogc:
    keys += ['grad_clean_before', 'grad_clean_after', 'grad_noisy_before',
             'grad_noisy_after', 'clipped']
  return {k: np.zeros([], np.float32) for k in keys}


# ---------------------------------------------------------------------------
# Files


def _write_json(path, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _config_dict(config):
  return json.loads(config.to_json_best_effort())


def _check_workdir_config(config, workdir):
  """Refuses to mix runs: a workdir belongs to one configuration."""
  path = os.path.join(workdir, 'config.json')
  current = _config_dict(config)
  ignore = {'progress'}  # does not change the results
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    diff = sorted(k for k in set(saved) | set(current) - ignore
                  if k not in ignore and saved.get(k) != current.get(k))
    if diff:
      raise ValueError(
          f'{workdir} holds a run with a different configuration (differs in '
          f'{diff}); use another --workdir or delete that one.')
  else:
    _write_json(path, current)


def _read_metrics(path, up_to_epoch):
  """Metrics of the epochs up to the checkpoint; later lines are dropped."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if r['epoch'] <= up_to_epoch]


def _write_metrics(path, rows):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    for row in rows:
      f.write(json.dumps(row, sort_keys=True) + '\n')
  os.replace(tmp, path)


def _gmm_dict(gmm):
  return {k: float(v) for k, v in gmm.items()}


# ---------------------------------------------------------------------------
# Main loop


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains and evaluates one configuration; returns the result dict.

  Args:
    config: an ``ml_collections.ConfigDict`` like `configs/default.py`.
    workdir: where config, metrics, queues, checkpoints and the result go.
      A workdir with a finished run returns its result without training; an
      unfinished one resumes from its last checkpoint.

  Returns:
    The contents of ``result.json``.
  """
  if config.distributed:
    jax.distributed.initialize()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  _check_workdir_config(config, workdir)
  result_path = os.path.join(workdir, 'result.json')
  if os.path.exists(result_path):
    with open(result_path) as f:
      return json.load(f)
  is_main = jax.process_index() == 0

  method = Method(config)
  dataset, images, given, true, noise = load_data(config)
  num_train = len(given)
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f'batch_size {config.batch_size} exceeds the {num_train} '
                     'training images.')

  devices = jax.devices()
  if config.num_devices:
    devices = devices[:config.num_devices]
  if config.batch_size % len(devices):
    raise ValueError(f'batch_size {config.batch_size} is not divisible by the '
                     f'{len(devices)} devices.')
  mesh = Mesh(np.array(devices), ('data',))
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P('data'))

  def put(x, sharding=replicated):
    """A global array from a host value every process holds in full.

    Unlike ``jax.device_put``, this also works when the mesh spans hosts.
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

  data = tuple(put(a) for a in (images, given, true))
  test_images = np.asarray(dataset.test_images)
  test_labels = np.asarray(dataset.test_labels)
  mean, std = dataset.channel_mean_std

  model = models.create_model(config.model, dataset.num_classes,
                              dtype=jnp.dtype(config.dtype))
  schedule = learning_rate_schedule(config, steps_per_epoch)
  tx = create_optimizer(config, schedule)
  weighting = (ogc_jax.ogc_weights(
      method.fn, schedule, epsilon=config.ogc.epsilon,
      update_period=config.ogc.update_period,
      queue_size=config.ogc.queue_size) if method.is_ogc else None)
  train_step, eval_step = make_steps(config, model, method, weighting, tx,
                                     mean, std, data_sharding, num_train)

  root = jax.random.key(config.seed)
  init_rng, data_rng, aug_rng = jax.random.split(root, 3)

  def init_state():
    variables = model.init(init_rng, jnp.zeros((1,) + images.shape[1:]),
                           train=False)
    params = variables['params']
    ogc_state = weighting.init() if method.is_ogc else {}
    return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(params), ogc_state=ogc_state)

  state = jax.jit(init_state, out_shardings=replicated)()
  jit_train = jax.jit(train_step, donate_argnums=(0, 1),
                      out_shardings=(replicated, replicated))
  jit_eval = jax.jit(eval_step)

  ckpt_dir = os.path.join(workdir, 'checkpoints')
  manager = ocp.CheckpointManager(
      ckpt_dir, options=ocp.CheckpointManagerOptions(
          max_to_keep=2, create=True, enable_async_checkpointing=False))
  start_epoch = 0
  if manager.latest_step() is not None:
    start_epoch = manager.latest_step()
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
    state = manager.restore(start_epoch,
                            args=ocp.args.StandardRestore(abstract))
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  history = _read_metrics(metrics_path, start_epoch)
  if is_main:
    _write_metrics(metrics_path, history)
  wall_start = time.time() - sum(r.get('epoch_time_s', 0.0) for r in history)

  eval_bs = min(config.eval_batch_size, len(test_labels))
  eval_bs -= eval_bs % len(devices)

  def evaluate(state):
    correct = 0.0
    for i in range(0, len(test_labels), eval_bs):
      x = test_images[i:i + eval_bs]
      y = test_labels[i:i + eval_bs]
      mask = np.ones(eval_bs, bool)
      if len(y) < eval_bs:  # pad the last chunk to keep one compiled shape
        pad = eval_bs - len(y)
        mask[len(y):] = False
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
        y = np.concatenate([y, np.zeros(pad, y.dtype)])
      correct += float(jit_eval(state, put(x, data_sharding),
                                put(y, data_sharding), put(mask, data_sharding)))
    return correct / len(test_labels)

  queues_dir = os.path.join(workdir, 'queues')
  progress = None
  if config.progress and is_main:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    progress = tqdm(total=config.num_epochs * steps_per_epoch,
                    initial=start_epoch * steps_per_epoch, unit='step',
                    dynamic_ncols=True, file=sys.stderr)

  for epoch in range(start_epoch + 1, config.num_epochs + 1):
    epoch_start = time.time()
    perm = jax.random.permutation(jax.random.fold_in(data_rng, epoch), num_train)
    perm = put(jax.device_get(perm))
    rng = jax.random.fold_in(aug_rng, epoch)
    sums = jax.tree_util.tree_map(put, zero_sums(method.is_ogc))
    for _ in range(steps_per_epoch):
      state, sums = jit_train(state, sums, data, perm, rng)
      if progress is not None:
        progress.update(1)
    sums = jax.device_get(sums)
    train_time = time.time() - epoch_start
    test_accuracy = evaluate(state)
    lr = float(schedule(int(state.step) - 1))
    row = {
        'epoch': epoch,
        'test_accuracy': test_accuracy,
        'loss': sums['loss'] / sums['count'],
        'learning_rate': lr,
        'train_accuracy_clean': sums['correct_clean'] / max(sums['n_clean'], 1),
        'train_accuracy_noisy': (sums['correct_noisy'] / sums['n_noisy']
                                 if sums['n_noisy'] else None),
        'train_accuracy_noisy_true': (sums['correct_noisy_true'] / sums['n_noisy']
                                      if sums['n_noisy'] else None),
        'true_noise_rate': float(noise.noise_rate),
        'step_time_ms': 1000 * train_time / steps_per_epoch,
        'images_per_second': steps_per_epoch * config.batch_size / train_time,
        'tau': None, 'p_threshold': None, 'gmm': None,
        'estimated_noise_rate': None, 'clipped_fraction': None,
        'grad_clean_before': None, 'grad_clean_after': None,
        'grad_noisy_before': None, 'grad_noisy_after': None,
    }
    if method.is_ogc:
      o = jax.device_get(state.ogc_state)
      fitted = int(o.num_threshold_updates) > 0
      n_clean, n_noisy = max(sums['n_clean'], 1), max(sums['n_noisy'], 1)
      row.update({
          'tau': float(o.tau), 'p_threshold': float(o.p_threshold),
          'gmm': _gmm_dict(o.gmm) if fitted else None,
          'estimated_noise_rate': float(o.gmm.weight_noisy) if fitted else None,
          'noise_to_clean_ratio': float(o.noise_to_clean_ratio),
          'num_threshold_updates': int(o.num_threshold_updates),
          'num_invalid': int(o.num_invalid),
          'clipped_fraction': sums['clipped'] / sums['count'],
          'grad_clean_before': sums['grad_clean_before'] / n_clean,
          'grad_clean_after': sums['grad_clean_after'] / n_clean,
          'grad_noisy_before': sums['grad_noisy_before'] / n_noisy,
          'grad_noisy_after': sums['grad_noisy_after'] / n_noisy,
      })
      if config.save_queues and is_main and int(o.queue_count):
        os.makedirs(queues_dir, exist_ok=True)
        queue = np.roll(np.asarray(o.queue), -int(o.queue_index))
        if int(o.queue_count) < len(queue):
          queue = np.asarray(o.queue)[:int(o.queue_count)]
        np.save(os.path.join(queues_dir, f'epoch_{epoch:04d}.npy'), queue)
    row = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v)
           for k, v in row.items()}
    row['epoch_time_s'] = time.time() - epoch_start
    history.append(row)
    # Metrics first, then the checkpoint: a run killed in between redoes
    # this epoch, and _read_metrics drops the line written for it.
    if is_main:
      _write_metrics(metrics_path, history)
    if epoch % config.checkpoint_every == 0 or epoch == config.num_epochs:
      manager.save(epoch, args=ocp.args.StandardSave(state))
    if progress is not None:
      progress.set_postfix(epoch=epoch, loss=f"{row['loss']:.3f}",
                           test=f'{test_accuracy:.3f}',
                           tau=None if row['tau'] is None else f"{row['tau']:.3g}")
  manager.wait_until_finished()
  if progress is not None:
    progress.close()

  accuracies = [r['test_accuracy'] for r in history]
  result = {
      'final_test_accuracy': float(np.mean(accuracies[-config.final_epochs:])),
      'best_test_accuracy': float(np.max(accuracies)),
      'last_test_accuracy': float(accuracies[-1]),
      'num_epochs': config.num_epochs,
      'true_noise_rate': float(noise.noise_rate),
      'wall_time_s': time.time() - wall_start,
      'devices': len(devices),
      'config': _config_dict(config),
  }
  if is_main:
    _write_json(result_path, result)
  return result


_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), 'configs', 'digits.py'),
    'Training configuration (a Python file with get_config()).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', 'runs/digits_default', 'Where metrics, checkpoints and the '
    'result go; rerunning the same command resumes.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(json.dumps({k: result[k] for k in (
      'final_test_accuracy', 'best_test_accuracy', 'wall_time_s')}, indent=2))


if __name__ == '__main__':
  app.run(main)
