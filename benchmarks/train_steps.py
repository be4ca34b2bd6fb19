"""The three train steps the step benchmarks compare, and how they are timed.

For a Flax classifier (with or without BatchNorm ``batch_stats``), one
`jax.jit`-compiled step of SGD with momentum 0.9 after
``optax.clip_by_global_norm(5.0)``, in three variants:

* ``CE``: the mean of ``-log_softmax`` at the labels;
* ``OGC fused``: ``p = softmax(logits)[label]``, `ogc_jax.ogc_weights` (its
  state carried by the step) and `ogc_jax.weighted_base_loss` with
  `ogc_jax.losses.cross_entropy`;
* ``OGC per-example``: per-example gradients by ``jax.vmap(jax.grad)``, then
  ``optax.chain(ogc(...), clip_by_global_norm(5.0), sgd)``. With BatchNorm
  each example is its own batch of one (per-example gradients of a
  batch-normalised loss are not defined otherwise) and the new running
  statistics are the mean over the examples: the route's cost, not a
  faithful BatchNorm model, which is why BatchNorm models use the fused route.

Both OGC variants start with a full queue of realistic H values, so that
every ``update_period`` steps of the timed blocks include one refit.
"""

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from ogc_jax import losses, ogc, ogc_weights, weighted_base_loss
from ogc_jax.testing import realistic_queue

LEARNING_RATE = 0.01
MOMENTUM = 0.9
MAX_GLOBAL_NORM = 5.0
VARIANTS = ("CE", "OGC fused", "OGC per-example")


class TrainState(NamedTuple):
  params: Any
  batch_stats: Any  # BatchNorm running statistics; {} for a model without
  opt_state: Any
  ogc_state: Any = None  # the fused route's `OGCState`


def _probability_of_label(logits, labels):
  return jnp.take_along_axis(jax.nn.softmax(logits), labels[:, None], 1)[:, 0]


def _full_queue(ogc_state, queue_size):
  """The OGC state with a full queue of realistic H values (40% noise)."""
  return ogc_state._replace(
      queue=jnp.asarray(realistic_queue(0.4, seed=0, n=queue_size)),
      queue_count=jnp.asarray(queue_size, jnp.int32))


def build(model, variables, *, queue_size, update_period):
  """The three jitted train steps (state donated) and their initial states.

  Args:
    model: a Flax module called as ``model.apply(variables, x, train=True)``.
    variables: its initial variables, ``params`` and maybe ``batch_stats``.
    queue_size: OGC's queue length q.
    update_period: OGC's refit period s.

  Returns:
    ``(steps, states)``: dicts from the names in `VARIANTS` to a jitted
    ``step(state, x, y) -> state`` and to its initial `TrainState`.
  """
  has_batch_stats = "batch_stats" in variables

  def logits_fn(params, batch_stats, x):
    if not has_batch_stats:
      return model.apply({"params": params}, x, train=True), batch_stats
    logits, new = model.apply({"params": params, "batch_stats": batch_stats},
                              x, train=True, mutable=["batch_stats"])
    return logits, new["batch_stats"]

  tx = optax.chain(optax.clip_by_global_norm(MAX_GLOBAL_NORM),
                   optax.sgd(LEARNING_RATE, momentum=MOMENTUM))

  def ce_step(state, x, y):
    def loss_fn(p):
      logits, batch_stats = logits_fn(p, state.batch_stats, x)
      log_probs = jax.nn.log_softmax(logits)
      return (-jnp.mean(jnp.take_along_axis(log_probs, y[:, None], 1)),
              batch_stats)
    grads, batch_stats = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), batch_stats,
                      opt_state)

  weighting = ogc_weights(losses.cross_entropy, LEARNING_RATE,
                          update_period=update_period, queue_size=queue_size)

  def fused_step(state, x, y):
    def loss_fn(p):
      logits, batch_stats = logits_fn(p, state.batch_stats, x)
      probs = _probability_of_label(logits, y)
      weights, ogc_state = weighting.update(probs, state.ogc_state)
      loss = weighted_base_loss(losses.cross_entropy, probs, weights)
      return loss, (batch_stats, ogc_state)
    grads, (batch_stats, ogc_state) = jax.grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), batch_stats,
                      opt_state, ogc_state)

  tx_per_example = optax.chain(
      ogc(losses.cross_entropy, LEARNING_RATE, update_period=update_period,
          queue_size=queue_size),
      optax.clip_by_global_norm(MAX_GLOBAL_NORM),
      optax.sgd(LEARNING_RATE, momentum=MOMENTUM))

  def per_example_step(state, x, y):
    def example_loss(p, xi, yi):
      logits, batch_stats = logits_fn(p, state.batch_stats, xi[None])
      prob = _probability_of_label(logits, yi[None])[0]
      return losses.cross_entropy(prob), (prob, batch_stats)
    grads, (probs, batch_stats) = jax.vmap(
        jax.grad(example_loss, has_aux=True), in_axes=(None, 0, 0))(
            state.params, x, y)
    batch_stats = jax.tree_util.tree_map(lambda s: jnp.mean(s, 0), batch_stats)
    updates, opt_state = tx_per_example.update(
        grads, state.opt_state, state.params, probs=probs)
    return TrainState(optax.apply_updates(state.params, updates), batch_stats,
                      opt_state)

  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  per_example_opt = tx_per_example.init(params)
  per_example_opt = (_full_queue(per_example_opt[0], queue_size),
                     *per_example_opt[1:])
  states = {
      "CE": TrainState(params, batch_stats, tx.init(params)),
      "OGC fused": TrainState(params, batch_stats, tx.init(params),
                              _full_queue(weighting.init(), queue_size)),
      "OGC per-example": TrainState(params, batch_stats, per_example_opt),
  }
  # The variants start from the same parameter arrays and their states are
  # donated: every state gets buffers of its own.
  states = {name: jax.tree_util.tree_map(jnp.array, s)
            for name, s in states.items()}
  steps = {
      "CE": jax.jit(ce_step, donate_argnums=0),
      "OGC fused": jax.jit(fused_step, donate_argnums=0),
      "OGC per-example": jax.jit(per_example_step, donate_argnums=0),
  }
  return steps, states


def num_refits(name, state):
  """Threshold refits so far of a variant's state (0 for CE)."""
  if name == "OGC fused":
    return int(state.ogc_state.num_threshold_updates)
  if name == "OGC per-example":
    return int(state.opt_state[0].num_threshold_updates)
  return 0


def check_fused_step(step, state, x, y):
  """Runs the fused step under a transfer guard and looks for host callbacks.

  Prints the two findings and returns the advanced state.
  """
  callbacks = step.lower(state, x, y).as_text().lower().count("callback")
  try:
    with jax.transfer_guard("disallow"):
      state = jax.block_until_ready(step(state, x, y))
    guard = "ran, no host transfer"
  except Exception as e:  # pylint: disable=broad-except
    guard = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0]}"
  print(f"- fused step under `jax.transfer_guard('disallow')`: {guard}")
  print(f"- 'callback' in the lowered fused step: {callbacks} occurrence(s) "
        f"({'no host callback' if callbacks == 0 else 'HOST CALLBACK FOUND'})")
  return state


def time_variants(steps, states, x, y, blocks, repeats, granularity="block"):
  """Times blocks of steps of each variant, interleaved; updates ``states``.

  Args:
    steps, states: from `build`, already compiled and warmed up.
    x, y: one batch on the device, reused at every step.
    blocks: variant -> number of steps per repeat.
    repeats: number of repeats.
    granularity: ``"block"``: each repeat runs each variant's block of steps
      back to back, dispatched asynchronously and synchronised at the end of
      the block (for an accelerator); the variants' order rotates from repeat
      to repeat. ``"step"``: each step is synchronised and timed alone, and
      the variants alternate step by step (in rotating order) within a
      repeat, so that a shared machine's varying load falls on all of them
      alike (for a CPU, where a step lasts far longer than a dispatch).

  Returns:
    ``(seconds_per_step, refits)``: variant -> array of ``repeats`` mean times
    per step, one per repeat, and variant -> refits during the timed steps.
  """
  before = {name: num_refits(name, s) for name, s in states.items()}
  if granularity == "block":
    def run_block(name):
      def run():
        state = states[name]
        for _ in range(blocks[name]):
          state = steps[name](state, x, y)
        states[name] = jax.block_until_ready(state)
      return run
    times = common.interleaved_times({name: run_block(name) for name in steps},
                                     repeats)
  elif granularity == "step":
    times = {name: [] for name in steps}
    for _ in range(repeats):
      total = {name: 0.0 for name in steps}
      for i in range(max(blocks.values())):
        names = [name for name in steps if i < blocks[name]]
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
          start = time.perf_counter()
          states[name] = jax.block_until_ready(steps[name](states[name], x, y))
          total[name] += time.perf_counter() - start
      for name in steps:
        times[name].append(total[name])
  else:
    raise ValueError(f"granularity must be 'block' or 'step', got {granularity!r}")
  refits = {name: num_refits(name, s) - before[name]
            for name, s in states.items()}
  return {name: np.asarray(t) / blocks[name] for name, t in times.items()}, refits


def ogc_update_cost(queue_size, update_period, batch, repeats=200):
  """Milliseconds of `ogc_weights` ``update`` alone, without and with a refit.

  The OGC work of the fused route measured apart from the network: the jitted
  ``update(probs, state)`` on a full queue, at a step where no refit is due
  and at one where it is. The median of ``repeats`` interleaved calls each.

  Returns:
    ``(ms_without_refit, ms_with_refit)``.
  """
  weighting = ogc_weights(losses.cross_entropy, LEARNING_RATE,
                          update_period=update_period, queue_size=queue_size)
  full = _full_queue(weighting.init(), queue_size)
  no_refit = full._replace(count=jnp.asarray(0, jnp.int32))
  refit = full._replace(count=jnp.asarray(update_period - 1, jnp.int32))
  probs = jax.device_put(np.random.default_rng(0).uniform(
      0.01, 1.0, batch).astype(np.float32))
  update = jax.jit(weighting.update)
  for state in (no_refit, refit):
    new_state = jax.block_until_ready(update(probs, state)[1])
  if int(new_state.num_threshold_updates) != 1:
    raise RuntimeError("the refit step did not refit")
  times = common.interleaved_times({
      "no refit": lambda: jax.block_until_ready(update(probs, no_refit)),
      "refit": lambda: jax.block_until_ready(update(probs, refit)),
  }, repeats)
  return common.median_ms(times["no refit"]), common.median_ms(times["refit"])

