"""OGC in a Flax NNX training loop: both routes, checkpoints, one trace.

The patterns of docs/usage.md ("Flax NNX"), with numbers checked: the
per-example route (`ogc` in the chain of an ``nnx.Optimizer``, whose
``update`` passes ``probs=`` on to it) and the fused route (`ogc_weights`,
its state beside the model), each given SGD's schedule at construction, give
the same parameters and follow the schedule's drop;
a run checkpointed with Orbax and restored continues exactly; and each
route's jitted step is traced once over many steps with refits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
import pytest

import ogc_jax
from ogc_jax import losses

NUM_CLASSES = 4
UPDATE_PERIOD = 4
QUEUE_SIZE = 128
BATCH = 32
SCHEDULE = optax.piecewise_constant_schedule(0.1, {20: 0.1})

# Flax NNX end to end (training, Orbax): the slow tier.
pytestmark = pytest.mark.slow


class MLP(nnx.Module):

  def __init__(self, rngs):
    self.hidden = nnx.Linear(8, 16, rngs=rngs)
    self.out = nnx.Linear(16, NUM_CLASSES, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.hidden(x)))


def batch(step):
  """A learnable task with 40% of the labels replaced at random."""
  rng = np.random.default_rng(step)
  x = rng.normal(size=(BATCH, 8)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0).astype(np.int32)
  flip = rng.random(BATCH) < 0.4
  y = np.where(flip, rng.integers(0, NUM_CLASSES, BATCH), y).astype(np.int32)
  return jnp.asarray(x), jnp.asarray(y)


def per_example_route():
  """Model, optimizer (OGC inside) and the jitted step; traces are counted."""
  model = MLP(nnx.Rngs(0))
  tx = optax.chain(
      ogc_jax.ogc(losses.cross_entropy, learning_rate=SCHEDULE,
                  update_period=UPDATE_PERIOD, queue_size=QUEUE_SIZE),
      optax.sgd(SCHEDULE, momentum=0.9))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  traces = []

  @nnx.jit
  def train_step(model, optimizer, x, y):
    traces.append(1)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def example_loss(params, xi, yi):
      logits = nnx.merge(graphdef, params, rest)(xi[None])
      p = losses.probability_of_label(logits, yi[None])[0]
      p_feasible = jnp.clip(p, ogc_jax.MIN_PROB, ogc_jax.MAX_PROB)
      return losses.cross_entropy(p_feasible), p

    grads, p = jax.vmap(jax.grad(example_loss, has_aux=True),
                        in_axes=(None, 0, 0))(params, x, y)
    optimizer.update(model, grads, probs=p)

  return model, optimizer, train_step, traces


def fused_route():
  """Model, optimizer, the OGC state beside them and the jitted step."""
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.sgd(SCHEDULE, momentum=0.9),
                            wrt=nnx.Param)
  weighting = ogc_jax.ogc_weights(losses.cross_entropy,
                                  learning_rate=SCHEDULE,
                                  update_period=UPDATE_PERIOD,
                                  queue_size=QUEUE_SIZE)
  traces = []

  @nnx.jit
  def train_step(model, optimizer, ogc_state, x, y):
    traces.append(1)

    def loss_fn(model, ogc_state):
      p = losses.probability_of_label(model(x), y)
      weights, ogc_state = weighting.update(p, ogc_state)
      return ogc_jax.weighted_base_loss(losses.cross_entropy, p,
                                        weights), ogc_state

    grads, ogc_state = nnx.grad(loss_fn, has_aux=True)(model, ogc_state)
    optimizer.update(model, grads)
    return ogc_state

  return model, optimizer, weighting.init(), train_step, traces


def test_both_routes_give_the_same_model_with_one_trace_each():
  model_a, optimizer_a, step_a, traces_a = per_example_route()
  model_b, optimizer_b, ogc_state, step_b, traces_b = fused_route()
  for step in range(40):
    x, y = batch(step)
    step_a(model_a, optimizer_a, x, y)
    ogc_state = step_b(model_b, optimizer_b, ogc_state, x, y)
  state_a = optimizer_a.opt_state[0]
  # Refits from step 4 on (queue of 128 = 4 batches), every 4 steps.
  assert int(state_a.num_threshold_updates) == 10
  assert float(state_a.tau) < 1 / ogc_jax.MIN_PROB  # clipping
  assert float(state_a.clipped_fraction) > 0
  # OGC's step, where the schedule is evaluated, is the optimizer's.
  assert int(state_a.count) == int(ogc_state.count) == int(optimizer_a.step[...])
  # Across the rate's drop at step 20, the refits target 1 + 0.01 * 20.
  np.testing.assert_allclose(state_a.noise_to_clean_ratio, 1.2, rtol=1e-4)
  np.testing.assert_allclose(state_a.tau, ogc_state.tau, rtol=1e-4)
  params_a = nnx.state(model_a, nnx.Param)
  params_b = nnx.state(model_b, nnx.Param)
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # No retracing: 40 steps with 10 refits, one trace each.
  assert (len(traces_a), len(traces_b)) == (1, 1)


def test_checkpointed_run_continues_exactly(tmp_path):
  model, optimizer, ogc_state, train_step, _ = fused_route()
  for step in range(12):
    ogc_state = train_step(model, optimizer, ogc_state, *batch(step))
  path = tmp_path / 'step_12'
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, {'model': nnx.state(model),
                           'optimizer': nnx.state(optimizer),
                           'ogc': ogc_state})
  checkpointer.wait_until_finished()
  for step in range(12, 24):
    ogc_state = train_step(model, optimizer, ogc_state, *batch(step))

  # A fresh process would build these from scratch and restore into them.
  model2, optimizer2, ogc_state2, train_step2, _ = fused_route()
  target = {'model': nnx.state(model2), 'optimizer': nnx.state(optimizer2),
            'ogc': ogc_state2}
  restored = checkpointer.restore(path, jax.tree.map(
      ocp.utils.to_shape_dtype_struct, target))
  nnx.update(model2, restored['model'])
  nnx.update(optimizer2, restored['optimizer'])
  ogc_state2 = restored['ogc']
  assert isinstance(ogc_state2, ogc_jax.OGCState)
  assert int(ogc_state2.count) == 12
  assert int(optimizer2.step[...]) == 12
  for step in range(12, 24):
    ogc_state2 = train_step2(model2, optimizer2, ogc_state2, *batch(step))
  assert int(ogc_state2.num_threshold_updates) > 2
  jax.tree.map(np.testing.assert_array_equal, ogc_state2, ogc_state)
  jax.tree.map(np.testing.assert_array_equal,
               nnx.state(model2, nnx.Param), nnx.state(model, nnx.Param))
