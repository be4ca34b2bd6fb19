"""The train steps the step benchmarks compare, and how they are timed.

The steps are the training harness's own: `experiments.train.make_steps`
builds them from a config and a method (`experiments.methods`), as
`experiments.train.train_and_evaluate` does (`learning_rate_schedule`,
`create_optimizer`, `create_train_state`), and they run on a random dataset
held on the device, with the config's on-device augmentation. Three
variants:

* ``CE``: method ``ce`` (`experiments.methods.Baseline`);
* ``OGC fused``: method ``ogc_ce`` (`experiments.methods.OGC`:
  `ogc_weights` and `weighted_base_loss`), the harness's route;
* ``OGC per-example``: `benchmarks.per_example.OGCPerExample`, the per-example
  route (``jax.vmap(jax.grad)`` of the clamped CE, clipped by `ogc_jax.ogc`,
  then the harness's optimizer). With BatchNorm each example is its own
  batch of one and the new running statistics are the mean over the
  examples: the route's cost, not a faithful BatchNorm model, which is why
  the harness trains with the fused route.

Every variant adds the harness's diagnostic sums. Both OGC variants start
with a full queue of realistic H values, so that every ``update_period``
steps of the timed blocks include one refit.
"""

import time
from typing import Any, Callable, NamedTuple

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks import per_example
from ogc_jax.testing import realistic_queue
from experiments import methods
from experiments import models
from experiments import train

VARIANTS = ("CE", "OGC fused", "OGC per-example")
_METHOD = {"CE": "ce", "OGC fused": "ogc_ce", "OGC per-example": "ogc_ce"}
# The random images are uniform on 0..255: mean 1/2, std 1/sqrt(12).
_MEAN, _STD = 0.5, 12**-0.5


class Variants(NamedTuple):
  """The jitted steps, their carries and the inputs they share.

  Attributes:
    steps: variant -> jitted ``step(state, sums, *inputs) -> (state, sums)``,
      state and sums donated.
    carries: variant -> its ``(state, sums)``.
    inputs: ``(data, perm, rng)`` on the device, as the harness passes them.
    fused: the fused route's method (`experiments.methods.OGC`).
  """
  steps: dict[str, Callable[..., Any]]
  carries: dict[str, tuple]
  inputs: tuple
  fused: Any


def _full_queue(ogc_state):
  """The OGC state with a full queue of realistic H values (40% noise)."""
  queue_size = ogc_state.queue.shape[0]
  return ogc_state._replace(
      queue=jnp.asarray(realistic_queue(0.4, seed=0, n=queue_size)),
      queue_count=jnp.asarray(queue_size, jnp.int32))


def build(config, *, num_classes=10, image_shape=(32, 32, 3), num_batches=4):
  """The three variants' jitted steps on one device, and their states.

  Args:
    config: an experiment config (`experiments/configs`); its ``method`` is
      set per variant, its model, dtype, batch size, optimizer, augmentation
      and OGC settings are used as they are.
    num_classes: classes of the random labels and of the model's output.
    image_shape: shape of one random uint8 image.
    num_batches: the random dataset holds this many batches; the steps cycle
      through them in a fixed random order.

  Returns:
    `Variants`. Every variant starts from the same initial parameters, each
    in buffers of its own (the steps donate them).
  """
  batch_size = config.batch_size
  num_train = batch_size * num_batches
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P("data"))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (num_train,) + tuple(image_shape), np.uint8)
  given = rng.integers(0, num_classes, num_train).astype(np.int32)
  true = np.where(rng.random(num_train) < 0.4, (given + 1) % num_classes, given)
  data = tuple(jax.device_put(a, replicated) for a in (images, given, true))
  perm = jax.device_put(rng.permutation(num_train).astype(np.int32), replicated)
  mean = np.full(image_shape[-1], _MEAN, np.float32)
  std = np.full(image_shape[-1], _STD, np.float32)

  model = models.create_model(config.model, num_classes,
                              dtype=jnp.dtype(config.dtype))
  schedule = train.learning_rate_schedule(config, num_batches)
  tx = train.create_optimizer(config, schedule)
  steps, carries = {}, {}
  for name in VARIANTS:
    config.method = _METHOD[name]
    if name == "OGC per-example":
      method = per_example.OGCPerExample(config, schedule)
    else:
      method = methods.create_method(config, schedule)
    if name == "OGC fused":
      fused = method
    step = train.make_steps(config, model, method, tx, mean, std,
                            data_sharding, num_train).train
    # The same initial parameters for every variant.
    state = train.create_train_state(jax.random.key(config.seed), model, tx,
                                     method, tuple(image_shape))
    if name != "CE":
      state = state.replace(method_state=_full_queue(state.method_state))
    # Buffers of its own for every variant: the steps donate them.
    carries[name] = jax.device_put(
        jax.tree_util.tree_map(jnp.array,
                               (state, train.EpochSums.zeros(method))),
        replicated)
    steps[name] = jax.jit(step, donate_argnums=(0, 1),
                          out_shardings=(replicated, replicated))
  return Variants(steps, carries, (data, perm, jax.random.key(1)), fused)


def num_refits(name, carry):
  """Threshold refits so far of a variant's state (0 for CE)."""
  del name
  method_state = carry[0].method_state
  return int(method_state.num_threshold_updates) if method_state else 0


def check_fused_step(variants):
  """Runs the fused step under a transfer guard and looks for host callbacks.

  Prints the two findings and advances the fused variant's carry.
  """
  name = "OGC fused"
  step, carry = variants.steps[name], variants.carries[name]
  callbacks = step.lower(*carry, *variants.inputs).as_text().lower().count(
      "callback")
  try:
    with jax.transfer_guard("disallow"):
      variants.carries[name] = jax.block_until_ready(
          step(*carry, *variants.inputs))
    guard = "ran, no host transfer"
  except Exception as e:  # pylint: disable=broad-except
    guard = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0]}"
  print(f"- fused step under `jax.transfer_guard('disallow')`: {guard}")
  print(f"- 'callback' in the lowered fused step: {callbacks} occurrence(s) "
        f"({'no host callback' if callbacks == 0 else 'HOST CALLBACK FOUND'})")


def warm_up(variants):
  """Compiles and runs each step once; returns variant -> seconds taken."""
  seconds = {}
  for name, step in variants.steps.items():
    start = time.perf_counter()
    variants.carries[name] = jax.block_until_ready(
        step(*variants.carries[name], *variants.inputs))
    seconds[name] = time.perf_counter() - start
  return seconds


def time_variants(variants, blocks, repeats, granularity="block"):
  """Times blocks of steps of each variant, interleaved; advances the carries.

  Args:
    variants: from `build`, already compiled and warmed up (`warm_up`).
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
  steps, carries, inputs = variants.steps, variants.carries, variants.inputs
  before = {name: num_refits(name, c) for name, c in carries.items()}
  if granularity == "block":
    def run_block(name):
      def run():
        carry = carries[name]
        for _ in range(blocks[name]):
          carry = steps[name](*carry, *inputs)
        carries[name] = jax.block_until_ready(carry)
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
          carries[name] = jax.block_until_ready(
              steps[name](*carries[name], *inputs))
          total[name] += time.perf_counter() - start
      for name in steps:
        times[name].append(total[name])
  else:
    raise ValueError(f"granularity must be 'block' or 'step', got {granularity!r}")
  refits = {name: num_refits(name, c) - before[name]
            for name, c in carries.items()}
  return {name: np.asarray(t) / blocks[name] for name, t in times.items()}, refits


def ogc_update_cost(method, update_period, batch, repeats=200):
  """Milliseconds of `ogc_weights` ``update`` alone, without and with a refit.

  The OGC work of the fused route measured apart from the network: the jitted
  ``update(probs, state)`` on a full queue, at a step where no refit is due
  and at one where it is. The median of ``repeats`` interleaved calls each.

  Args:
    method: the fused route's `experiments.methods.OGC` (`Variants.fused`).
    update_period: its refit period.
    batch: the number of probabilities per update.
    repeats: timed calls of each.

  Returns:
    ``(ms_without_refit, ms_with_refit)``.
  """
  full = _full_queue(method.init())
  no_refit = full._replace(count=jnp.asarray(0, jnp.int32))
  refit = full._replace(count=jnp.asarray(update_period - 1, jnp.int32))
  probs = jax.device_put(np.random.default_rng(0).uniform(
      0.01, 1.0, batch).astype(np.float32))
  update = jax.jit(method.update)
  for state in (no_refit, refit):
    new_state = jax.block_until_ready(update(probs, state)[1])
  if int(new_state.num_threshold_updates) != 1:
    raise RuntimeError("the refit step did not refit")
  times = common.interleaved_times({
      "no refit": lambda: jax.block_until_ready(update(probs, no_refit)),
      "refit": lambda: jax.block_until_ready(update(probs, refit)),
  }, repeats)
  return common.median_ms(times["no refit"]), common.median_ms(times["refit"])
