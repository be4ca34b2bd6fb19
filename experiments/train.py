r"""Training on noisily labelled data with OGC or a baseline loss.

``train_and_evaluate(config, workdir)`` runs one experiment: it loads the
data, corrupts the training labels (`experiments.noise`), trains data-parallel
over every device of a ``jax.sharding.Mesh``, evaluates each epoch and writes
to ``workdir`` (`experiments.workdir`): the config, a row of metrics per epoch
(``metrics.jsonl``, and as TensorBoard scalars), the OGC queues, an Orbax
checkpoint every ``config.checkpoint_every`` epochs and at the last (the same
command resumes from the last one, to the results of an uninterrupted run),
the list of suspect labels, and last ``result.json``: ``final_test_accuracy``,
the mean test accuracy of the last ``config.final_epochs`` epochs, as the
paper reports. The run's method (`experiments.methods`) is what differs
between OGC and a baseline; this module treats every method alike.

Command line (Flax-examples style, `main`)::

  python -m experiments.train --config experiments/configs/cifar10.py \
      --config.method=ogc_ce --config.noise.rate=0.5 --workdir runs/x

Without flags it trains OGC-CE on scikit-learn's digits, 60% symmetric noise
(`experiments/configs/digits.py`), into ``runs/digits_default``; ``--help``
lists every key of the config with its value and meaning. A bad
key or value, or a workdir that cannot hold the run, is one line, before any
file is written and, but for a batch larger than the data, before any data
is loaded (`validate_config`). Ctrl-C, while compiling or training, is one
line, the epoch it stopped at, and exit status 130: the same command
continues from the last checkpoint.
"""

import functools
import json
import os
import time
from typing import Any, NamedTuple

from absl import app
from absl import flags
from absl import logging
import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import optax
import orbax.checkpoint as ocp

from experiments import augment
from experiments import checkpoints
from experiments import cli
from experiments import distributed
from experiments import evaluation as evaluation_lib
from experiments import input_pipeline
from experiments import suspects
from experiments import methods
from experiments import models
from experiments import progress as progress_lib
from experiments import summaries as summaries_lib
from experiments import workdir as workdir_lib
from experiments.input_pipeline import load_data
from experiments.validate import validate_config


@flax.struct.dataclass
class TrainState:
  """Everything a step changes; what a checkpoint holds."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  method_state: Any  # the method's (`experiments.methods.Method.init`)


class EpochSums(NamedTuple):
  """Sums over an epoch's train steps, from which `epoch_row` averages.

  ``method`` holds the method's own sums (`Method.zero_sums`).
  """
  count: Any
  loss: Any
  n_clean: Any
  n_noisy: Any
  correct_clean: Any
  correct_noisy: Any
  correct_noisy_true: Any
  method: Any

  @classmethod
  def zeros(cls, method):
    return cls(*[np.zeros([], np.float32)] * (len(cls._fields) - 1),
               method=method.zero_sums())


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


def run_keys(seed):
  """The keys of a run: initialisation, batch order and augmentation."""
  return jax.random.split(jax.random.key(seed), 3)


def epoch_permutation(order_key, epoch: int, num_train: int) -> np.ndarray:
  """The order of the training examples in an epoch (1-based), on the host."""
  return np.asarray(jax.device_get(jax.random.permutation(
      jax.random.fold_in(order_key, epoch), num_train)))


def create_train_state(rng, model, tx, method, image_shape) -> TrainState:
  """Initial parameters, batch statistics, optimizer and method states."""
  variables = model.init(rng, jnp.zeros((1,) + image_shape), train=False)
  params = variables['params']
  return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=tx.init(params), method_state=method.init())


class Steps(NamedTuple):
  """The step functions of a configuration (`make_steps`), to be jitted.

  Attributes:
    train: ``train(state, sums, data, perm, rng) -> (state, sums)``, one SGD
      step on the batch ``perm[step % steps_per_epoch]``.
    evaluate: ``evaluate(state, images, labels, mask)``, the batch's
      `experiments.evaluation.Evaluation` counts (the examples where
      ``mask`` is set).
    logits: ``logits(state, images)``, the network in evaluation mode.
  """
  train: Any
  evaluate: Any
  logits: Any


def make_steps(config, model, method, tx, mean, std, data_sharding,
               num_train) -> Steps:
  """The train step and evaluation of one configuration and method."""
  aug = config.augment
  batch_size = config.batch_size
  mean, std = jnp.asarray(mean), jnp.asarray(std)

  def train_step(state, sums, data, perm, rng):
    """One SGD step on the batch perm[step % steps_per_epoch]."""
    images_all, given_all, true_all = data
    start = (state.step % (num_train // batch_size)) * batch_size
    idx = jax.lax.dynamic_slice(perm, (start,), (batch_size,))
    images = jax.lax.with_sharding_constraint(images_all[idx], data_sharding)
    labels = jax.lax.with_sharding_constraint(given_all[idx], data_sharding)
    true = true_all[idx]
    rng = jax.random.fold_in(rng, state.step)
    x = images.astype(jnp.float32)
    if aug.crop_padding or aug.flip or aug.rotation_degrees:
      x = augment.augment(
          rng, x, crop_padding=aug.crop_padding, flip=aug.flip,
          rotation_degrees=aug.rotation_degrees)
    x = augment.normalize(x, mean, std)

    def apply_fn(params, x):
      logits, new_vars = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x, train=True,
          mutable=['batch_stats'])
      return logits, new_vars.get('batch_stats', {})

    grads, step = method.gradients(apply_fn, state.params, x, labels,
                                   state.method_state)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    # Diagnostics from the true labels: never used for training.
    noisy = labels != true
    pred = jnp.argmax(step.logits, -1)
    count = lambda x: jnp.sum(x, dtype=jnp.float32)
    batch = dict(
        count=jnp.float32(batch_size), loss=step.loss * batch_size,
        n_clean=count(~noisy), n_noisy=count(noisy),
        correct_clean=count(~noisy & (pred == labels)),
        correct_noisy=count(noisy & (pred == labels)),
        correct_noisy_true=count(noisy & (pred == true)))
    method_sums = method.step_sums(step, noisy)
    sums = sums._replace(
        **{k: getattr(sums, k) + v for k, v in batch.items()},
        method={k: v + method_sums[k] for k, v in sums.method.items()})
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=step.batch_stats,
                              opt_state=opt_state, method_state=step.state)
    return new_state, sums

  def logits_step(state, images):
    x = augment.normalize(images.astype(jnp.float32), mean, std)
    return model.apply({'params': state.params,
                        'batch_stats': state.batch_stats}, x, train=False)

  def eval_step(state, images, labels, mask):
    logits = logits_step(state, images)
    pred = jnp.argmax(logits, -1)
    # Sums of one-hot rows over the (sharded) batch: per-class counts.
    per_class = lambda classes, where: jnp.sum(
        jax.nn.one_hot(classes, logits.shape[-1], dtype=jnp.int32)
        * where[:, None], 0)
    return evaluation_lib.Evaluation(
        correct=per_class(labels, mask & (pred == labels)),
        total=per_class(labels, mask), predicted=per_class(pred, mask))

  return Steps(train_step, eval_step, logits_step)


def train_steps(train_step, num_steps, state, sums, data, perm, rng):
  """``num_steps`` consecutive train steps as one compiled loop."""
  if num_steps == 1:
    return train_step(state, sums, data, perm, rng)
  return jax.lax.fori_loop(
      0, num_steps, lambda _, carry: train_step(*carry, data, perm, rng),
      (state, sums))


def config_dict(config):
  return json.loads(config.to_json_best_effort())


class Parts(NamedTuple):
  """What a run builds from its config and data (`build`).

  Attributes:
    put: ``put(x, sharding=replicated)``, a global array from a host value
      every process holds in full.
    replicated: a value whole on every device of the mesh.
    data_sharding: the batch axis over the mesh's devices.
    schedule: the learning rate by step.
    tx: the optimizer.
    method: the `experiments.methods.Method`.
    steps: the `Steps`, not yet jitted.
    state: the initial `TrainState`, replicated.
    eval_batch_size: images per evaluation step, a multiple of the devices.
  """
  put: Any
  replicated: Any
  data_sharding: Any
  schedule: Any
  tx: Any
  method: Any
  steps: Steps
  state: TrainState
  eval_batch_size: int


def build(config, data, devices, epoch_steps: int) -> Parts:
  """The mesh, model, optimizer, method, steps and initial state of a run."""
  mesh = Mesh(np.array(devices), ('data',))
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P('data'))

  def put(x, sharding=replicated):
    """A global array from a host value every process holds in full.

    Unlike ``jax.device_put``, this also works when the mesh spans hosts.
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

  dataset = data.dataset
  model = models.from_config(config, dataset.num_classes)
  schedule = learning_rate_schedule(config, epoch_steps)
  tx = create_optimizer(config, schedule)
  method = methods.create_method(config, schedule)
  steps = make_steps(config, model, method, tx, *dataset.channel_mean_std,
                     data_sharding, len(data.labels))
  init_rng = run_keys(config.seed)[0]
  state = jax.jit(functools.partial(
      create_train_state, model=model, tx=tx, method=method,
      image_shape=data.images.shape[1:]), out_shardings=replicated)(init_rng)
  eval_bs = min(config.eval_batch_size, len(dataset.test_labels))
  eval_bs -= eval_bs % len(devices)
  return Parts(put, replicated, data_sharding, schedule, tx, method, steps,
               state, eval_bs)


def run_end(parts: Parts, workdir, is_main, state, data
            ) -> suspects.RunEnd:
  """The `label_issues.RunEnd` of a run's trained ``state``."""
  return suspects.RunEnd(
      workdir=workdir, is_main=is_main,
      state=jax.device_get(state.method_state), data=data,
      # Replicated out: every process of a multi-process run fetches all of
      # the batch's logits (a batch-sharded result spans other processes'
      # devices, which jax.device_get cannot read).
      logits=functools.partial(
          evaluation_lib.predict,
          jax.jit(parts.steps.logits, out_shardings=parts.replicated), state,
          batch_size=parts.eval_batch_size,
          put=functools.partial(parts.put, sharding=parts.data_sharding)))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains and evaluates one configuration; returns the result dict.

  Args:
    config: an ``ml_collections.ConfigDict`` like `configs/default.py`.
    workdir: where config, metrics, queues, checkpoints and the result go.
      A workdir with a finished run returns its result without training; an
      unfinished one resumes from its last checkpoint.

  Returns:
    The contents of ``result.json``.

  Raises:
    ConfigError: the configuration, the data or the workdir cannot give this
      run (`validate_config`; a workdir that is a file, not writable, or
      holds another run; a batch larger than the data). It is raised before
      the workdir is created or a file written, so the corrected call works
      in the same workdir.
  """
  distributed.initialize(config)  # before any JAX computation
  plan = validate_config(config)
  workdir = workdir_lib.absolute(workdir)
  workdir_lib.check_can_hold(workdir, config_dict(config))
  result = workdir_lib.read_result(workdir)
  if result is not None:
    return result
  data = load_data(config, plan)
  num_train = len(data.labels)
  epoch_steps = input_pipeline.steps_per_epoch(
      config, num_train,
      f'the {num_train} training images of {config.dataset!r}')
  devices = plan.devices
  is_main = jax.process_index() == 0
  if is_main:  # process 0 writes every file of the workdir
    workdir_lib.claim(workdir, config_dict(config))
  else:
    os.makedirs(workdir, exist_ok=True)
  parts = build(config, data, devices, epoch_steps)
  put, schedule, method, steps, state, eval_bs = (
      parts.put, parts.schedule, parts.method, parts.steps, parts.state,
      parts.eval_batch_size)
  train_arrays = tuple(put(a) for a in (data.images, data.labels,
                                        data.true_labels))
  dataset = data.dataset
  _, data_rng, aug_rng = run_keys(config.seed)
  # Many steps per dispatch: the data already lives on the devices, so a
  # chunk of steps is one compiled loop and Python is paid once per chunk.
  chunk = min(config.steps_per_dispatch or epoch_steps, epoch_steps)
  replicated = parts.replicated
  run_steps = functools.cache(lambda num_steps: jax.jit(
      functools.partial(train_steps, steps.train, num_steps),
      donate_argnums=(0, 1), out_shardings=(replicated, replicated)))
  jit_eval = jax.jit(steps.evaluate, out_shardings=replicated)

  if is_main:  # a save that Ctrl-C stopped (Orbax would warn of it)
    workdir_lib.remove_unfinished_checkpoints(workdir)
  manager = checkpoints.manager(workdir)
  start_epoch = manager.latest_step() or 0
  if start_epoch:
    state = checkpoints.restore(manager, start_epoch, state)
  history = workdir_lib.read_metrics(workdir, up_to_epoch=start_epoch)
  if is_main:
    workdir_lib.write_metrics(workdir, history)
  wall_start = time.time() - sum(r.get('epoch_time_s', 0.0) for r in history)
  summaries = summaries_lib.Summaries(workdir) if is_main else None
  bar = None
  if config.progress and is_main:
    bar = progress_lib.ProgressBar(total=config.num_epochs * epoch_steps,
                                   done=start_epoch * epoch_steps)

  for epoch in range(start_epoch + 1, config.num_epochs + 1):
    epoch_start = time.time()
    perm = put(epoch_permutation(data_rng, epoch, num_train))
    rng = jax.random.fold_in(aug_rng, epoch)
    sums = jax.tree_util.tree_map(put, EpochSums.zeros(method))
    for first in range(0, epoch_steps, chunk):
      num_steps = min(chunk, epoch_steps - first)
      state, sums = run_steps(num_steps)(state, sums, train_arrays, perm, rng)
      if bar is not None:
        bar.update(num_steps)
    sums = jax.device_get(sums)
    train_time = time.time() - epoch_start
    evaluation = evaluation_lib.evaluate(
        jit_eval, state, dataset.test_images, dataset.test_labels, eval_bs,
        functools.partial(put, sharding=parts.data_sharding))
    lr = float(schedule(int(jax.device_get(state.step)) - 1))
    method_state = jax.device_get(state.method_state)
    row = evaluation_lib.epoch_row(epoch, evaluation, lr, sums, data.noise,
                    method.metrics(method_state, sums), train_time,
                    epoch_steps, config.batch_size)
    row['epoch_time_s'] = time.time() - epoch_start
    history.append(row)
    if is_main:
      queue = method.saved_queue(method_state)
      if queue is not None:
        workdir_lib.save_queue(workdir, epoch, queue)
      # Metrics first, then the checkpoint: a run killed in between redoes
      # this epoch, and read_metrics(up_to_epoch=...) drops its line.
      workdir_lib.write_metrics(workdir, history)
      summaries.write(row)
    if epoch % config.checkpoint_every == 0 or epoch == config.num_epochs:
      manager.save(epoch, args=ocp.args.StandardSave(state))
    if bar is not None:
      bar.set_postfix(epoch=epoch, loss=f"{row['loss']:.3f}",
                      test=f'{row["test_accuracy"]:.3f}',
                      tau=None if row['tau'] is None else f"{row['tau']:.3g}")
  manager.wait_until_finished()
  if bar is not None:
    bar.close()
  if summaries is not None:
    summaries.close()
  # Before result.json, so that a run is finished only with them.
  end = run_end(parts, workdir, is_main, state, data)
  list_measures = suspects.write_run_end(
      end, config, method.queue_mixture(end.state))

  accuracies = [r['test_accuracy'] for r in history]
  result = {
      'final_test_accuracy': float(np.mean(accuracies[-config.final_epochs:])),
      'best_test_accuracy': float(np.max(accuracies)),
      'last_test_accuracy': float(accuracies[-1]),
      'num_epochs': config.num_epochs,
      'true_noise_rate': float(data.noise.noise_rate),
      'transition_matrix': data.noise.transition_matrix.tolist(),
      'wall_time_s': time.time() - wall_start,
      'devices': len(devices),
      'config': config_dict(config),
      'label_issues': list_measures,
      'classes_never_predicted': evaluation_lib.classes_never_predicted(
          history[-1]),
  }
  if is_main:
    workdir_lib.write_result(workdir, result)
  return result


def main(argv):
  """``python -m experiments.train``: trains, prints the result's summary."""
  cli.check_no_arguments(argv)
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  with cli.interrupted(config, workdir), cli.one_line_errors():
    result = train_and_evaluate(config, workdir)
  cli.print_result(result)


if __name__ == '__main__':
  app.run(main, flags_parser=functools.partial(cli.parse_flags, doc=__doc__))
