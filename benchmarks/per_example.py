"""OGC's per-example route in the training harness, for the step benchmarks.

`OGCPerExample` is a method of `experiments.methods` that runs
`ogc_jax.ogc` (the optax transformation) on per-example gradients, where the
harness's `experiments.methods.OGC` weights the batch loss
(`ogc_jax.ogc_weights`). Without BatchNorm the two give the same update
(tests/test_train.py checks it); the per-example route holds a batch of
gradients. ``config.method`` does not select it: with BatchNorm each example
is its own batch of one, so a run would not be the fused route's.
`benchmarks.train_steps` times it.
"""

import jax
import jax.numpy as jnp

import ogc_jax
from ogc_jax import losses
from experiments import methods


class OGCPerExample(methods.OGC):
  """OGC's per-example route: `ogc_jax.ogc` on per-example gradients.

  Each example's gradient is that of the base loss of its clamped p
  (`ogc_jax.feasible_probability`), one example at a time under
  ``jax.vmap``: with BatchNorm each example is its own batch of one (a
  per-example gradient of a batch-normalised loss is not defined
  otherwise), and the new statistics are the mean over the examples. The
  step's ``loss`` is the mean base loss, before clipping.
  """

  def __init__(self, config, schedule):
    super().__init__(config, schedule)
    self.transform = ogc_jax.ogc(self.fn,
                                 **methods.ogc_arguments(config, schedule))

  def init(self):
    return self.transform.init(None)

  def gradients(self, apply_fn, params, images, labels, state):
    def example_loss(params, image, label):
      logits, batch_stats = apply_fn(params, image[None])
      p = losses.probability_of_label(logits, label[None])[0]
      return (self.fn(ogc_jax.feasible_probability(p)),
              (logits[0], p, batch_stats))

    grads, (logits, p, batch_stats) = jax.vmap(
        jax.grad(example_loss, has_aux=True), in_axes=(None, 0, 0))(
            params, images, labels)
    batch_stats = jax.tree_util.tree_map(lambda s: jnp.mean(s, 0),
                                         batch_stats)
    grads, new_state = self.transform.update(grads, state, params, probs=p)
    loss = jnp.mean(self.fn(ogc_jax.feasible_probability(p)))
    return grads, methods.Step(loss, logits, p, batch_stats, new_state)
