"""Which eta to give OGC when the optimizer is adaptive (AdamW).

OGC's target ratio is ``1 + eta * epsilon`` with eta the learning rate of
SGD. An adaptive optimizer's learning rate is not a step size in that sense
(AdamW moves each parameter by about ``lr`` whatever the gradient's scale),
so this measures, on the digits recipe (`experiments/configs/digits.py`:
MLP, 60% symmetric noise, batch 128, 100 epochs, the rate x0.1 at 1/3 and
2/3 of training, global-norm clip 5), the final test accuracy (mean of the
last ``final_epochs`` epochs, as the harness reports) of AdamW at lr 1e-3
with plain cross-entropy and with OGC-CE (the fused route, epsilon 20)
given each eta in ``--etas``: either a constant, or ``lr`` (AdamW's own
scheduled rate). The same loop with SGD (lr 0.1, momentum 0.9, weight decay
5e-4) and eta = its rate is the reference.

Run: ``nice -n 10 python -m benchmarks.adaptive_eta`` (about 5 min on a
loaded 2-core CPU); ``--quick``: 5 epochs, one seed.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ogc_jax
from experiments import augment, models, train
from experiments.configs import digits
from ogc_jax import losses


def run(config, optimizer, lr, eta, seed):
  """Final test accuracy of one run; eta None: plain cross-entropy."""
  config.seed = seed
  data = train.load_data(config)
  dataset, images, given = data.dataset, data.images, data.labels
  mean, std = (jnp.asarray(a) for a in dataset.channel_mean_std)
  steps_per_epoch = len(given) // config.batch_size
  schedule = train.learning_rate_schedule(_with_lr(config, lr), steps_per_epoch)
  if optimizer == 'sgd':
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm),
                     optax.add_decayed_weights(config.weight_decay),
                     optax.sgd(schedule, momentum=config.momentum))
  else:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm),
                     optax.adamw(schedule))
  model = models.create_model('mlp', dataset.num_classes)
  weighting = ogc_jax.ogc_weights(
      losses.cross_entropy, epsilon=config.ogc.epsilon,
      update_period=config.ogc.update_period,
      queue_size=config.ogc.queue_size)
  init_rng, data_rng = jax.random.split(jax.random.key(seed))
  params = model.init(init_rng, jnp.zeros((1,) + images.shape[1:]))['params']
  images = jnp.asarray(images, jnp.float32)
  given = jnp.asarray(given)

  def step(carry, idx):
    params, opt_state, ogc_state, count = carry
    x = augment.normalize(images[idx], mean, std)

    def loss_fn(params, ogc_state):
      p = losses.probability_of_label(model.apply({'params': params}, x),
                                      given[idx])
      if eta is None:
        return jnp.mean(losses.cross_entropy(jnp.maximum(p, 1e-7))), ogc_state
      rate = schedule(count) if eta == 'lr' else eta
      weights, ogc_state = weighting.update(p, ogc_state, learning_rate=rate)
      return ogc_jax.weighted_base_loss(losses.cross_entropy, p,
                                        weights), ogc_state

    grads, ogc_state = jax.grad(loss_fn, has_aux=True)(params, ogc_state)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, ogc_state,
            count + 1), None

  @jax.jit
  def epoch(carry, rng):
    perm = jax.random.permutation(rng, len(given))
    batches = perm[:steps_per_epoch * config.batch_size].reshape(
        steps_per_epoch, config.batch_size)
    carry, _ = jax.lax.scan(step, carry, batches)
    logits = model.apply({'params': carry[0]}, augment.normalize(
        jnp.asarray(dataset.test_images, jnp.float32), mean, std))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == dataset.test_labels)
    return carry, accuracy

  carry = (params, tx.init(params), weighting.init(), jnp.zeros([], jnp.int32))
  accuracies = []
  for e in range(config.num_epochs):
    carry, accuracy = epoch(carry, jax.random.fold_in(data_rng, e))
    accuracies.append(float(accuracy))
  return float(np.mean(accuracies[-config.final_epochs:]))


def _with_lr(config, lr):
  config = config.copy_and_resolve_references()
  config.learning_rate = lr
  return config


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--etas', default='none,0.001,0.01,0.03,0.1,lr')
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--adamw_lr', type=float, default=1e-3)
  parser.add_argument('--quick', action='store_true')
  args = parser.parse_args()
  config = digits.get_config()
  config.progress = False
  seeds = range(1 if args.quick else args.seeds)
  if args.quick:
    config.num_epochs = 5
    config.final_epochs = 2
  rows = [('sgd', 0.1, 'lr')]
  for eta in args.etas.split(','):
    eta = None if eta == 'none' else eta if eta == 'lr' else float(eta)
    rows.append(('adamw', args.adamw_lr, eta))
  print(f'digits, {config.noise.rate:.0%} symmetric noise, '
        f'{config.num_epochs} epochs, seeds {list(seeds)}; final test '
        f'accuracy (mean of the last {config.final_epochs} epochs)\n')
  print('| optimizer | lr | OGC eta | accuracy per seed | mean |')
  print('| --- | --- | --- | --- | --- |')
  for optimizer, lr, eta in rows:
    began = time.monotonic()
    accs = [run(config, optimizer, lr, eta, s) for s in seeds]
    name = 'none (plain CE)' if eta is None else (
        'its lr (scheduled)' if eta == 'lr' else f'{eta:g}')
    print(f'| {optimizer} | {lr:g} | {name} | '
          f'{", ".join(f"{a:.3f}" for a in accs)} | {np.mean(accs):.3f} |'
          f'  <!-- {time.monotonic() - began:.0f} s -->', flush=True)


if __name__ == '__main__':
  main()
