"""Tests of the OGC transformation and its fused route."""

import collections
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import absltest
from absl.testing import parameterized
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import ogc_jax
from ogc_jax import losses
from ogc_jax import testing
from ogc_jax import transform as transform_lib
from ogc_jax.threshold import MAX_PROB, MIN_PROB

NUM_CLASSES = 4
DIM = 5


def linear_probs(params, x, y):
  """p of the given label under a linear softmax model, [batch]."""
  return losses.probability_of_label(x @ params["w"] + params["b"], y)


def example_loss(params, x, y, base_loss):
  p = linear_probs(params, x[None], y[None])[0]
  return base_loss(jnp.clip(p, MIN_PROB, MAX_PROB))


def make_batch(seed, batch, noise=0.4):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, DIM)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0).astype(np.int32)
  flip = rng.random(batch) < noise
  y = np.where(flip, rng.integers(0, NUM_CLASSES, batch), y).astype(np.int32)
  return jnp.asarray(x), jnp.asarray(y)


def init_params(seed=0):
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.normal(size=(DIM, NUM_CLASSES)), jnp.float32),
          "b": jnp.zeros([NUM_CLASSES], jnp.float32)}


def per_example_grads(params, x, y, base_loss):
  grads = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0, None))(
      params, x, y, base_loss)
  return grads, linear_probs(params, x, y)


class RingBufferTest(parameterized.TestCase):

  @parameterized.parameters((8, 3), (8, 8), (5, 12), (16, 5))
  def test_queue_order_matches_deque(self, queue_size, batch):
    weighting = ogc_jax.ogc_weights(losses.cross_entropy,
                                    queue_size=queue_size, update_period=1000)
    update = jax.jit(lambda p, s: weighting.update(p, s, learning_rate=0.1))
    state = weighting.init()
    reference = collections.deque(maxlen=queue_size)
    rng = np.random.default_rng(0)
    for _ in range(7):
      probs = rng.uniform(0.01, 1.0, batch).astype(np.float32)
      probs[rng.random(batch) < 0.2] = np.nan  # invalid: never queued
      _, state = update(jnp.asarray(probs), state)
      reference.extend(-np.log(probs[np.isfinite(probs)]))
      count = int(state.queue_count)
      self.assertEqual(count, len(reference))
      ordered = np.roll(np.asarray(state.queue), -int(state.queue_index))
      if count < queue_size:
        ordered = np.asarray(state.queue)[:count]
      np.testing.assert_allclose(ordered, np.array(reference, np.float32),
                                 rtol=1e-6)


class UpdateScheduleTest(parameterized.TestCase):

  def test_threshold_changes_only_every_update_period_once_full(self):
    period, queue_size, batch = 4, 64, 8  # queue full after 8 steps
    weighting = ogc_jax.ogc_weights(losses.cross_entropy,
                                    update_period=period, queue_size=queue_size)
    update = jax.jit(lambda p, s: weighting.update(p, s, learning_rate=0.01))
    state = weighting.init()
    rng = np.random.default_rng(1)
    history = []
    for step in range(1, 25):
      clean = rng.uniform(0.7, 1.0, batch // 2)
      noisy = rng.uniform(0.001, 0.2, batch // 2)
      probs = jnp.asarray(np.concatenate([clean, noisy]), jnp.float32)
      weights, state = update(probs, state)
      history.append((step, float(state.tau), int(state.num_threshold_updates)))
      if step < 8:  # queue not full: no clipping at all
        np.testing.assert_array_equal(weights, 1.0)
        self.assertEqual(float(state.p_threshold), np.float32(MIN_PROB))
    updates = [s for s, _, n in history if n > (history[s - 2][2] if s > 1 else 0)]
    self.assertEqual(updates, [8, 12, 16, 20, 24])
    taus = {s: t for s, t, _ in history}
    for s in range(9, 25):
      if s not in updates:
        self.assertEqual(taus[s], taus[s - 1])
    self.assertLess(taus[8], 1 / MIN_PROB)

  def test_refit_after_a_noise_jump_finds_the_better_mode(self):
    # Each refit warm-starts EM from the last fit; when the queue's noise
    # level jumps between two refits, the fit must be the one cold starts
    # find (noisy component near 2.6), not the old mode (near 7; see
    # `testing.noise_jump_queues` and tests/test_gmm.py).
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, update_period=1,
                                    queue_size=4096, fit="converged")
    update = jax.jit(weighting.update)
    state = weighting.init()
    for h in testing.noise_jump_queues():
      _, state = update(jnp.exp(-jnp.asarray(h)), state, learning_rate=0.01)
    self.assertEqual(int(state.num_threshold_updates), 2)
    cold = ogc_jax.fit_gmm(state.queue, fit="converged")
    self.assertLess(float(cold.mean_noisy), 3.0)
    chex.assert_trees_all_close(state.gmm, cold, rtol=2e-3, atol=2e-4)
    tau_ref = testing.threshold(cold, testing.ce_derivative, 0.01)[1]
    np.testing.assert_allclose(state.tau, tau_ref, rtol=1e-3)

  @parameterized.parameters("converged", "published", "conservative")
  def test_each_refit_is_the_chosen_fit_of_the_queue(self, fit):
    # The published fit starts cold at every refit: its mixture is that of
    # the queue alone. The converged and conservative ones start warm and
    # end where the cold fit does (the conservative one choosing by OGC's
    # own threshold at the step's rate).
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, update_period=4,
                                    queue_size=256, fit=fit)
    update = jax.jit(weighting.update)
    state = weighting.init()
    for step in range(12):  # refits at steps 8 and 12
      h = testing.realistic_queue(0.4, seed=step, n=32)
      _, state = update(jnp.exp(-jnp.asarray(h)), state, learning_rate=0.01)
    self.assertEqual(int(state.num_threshold_updates), 2)
    threshold_of = None
    if fit == "conservative":
      threshold_of = lambda gmm: ogc_jax.solve_threshold(
          gmm, losses.cross_entropy, 0.01)[0]
    expected = ogc_jax.fit_gmm(state.queue, fit=fit, threshold_of=threshold_of)
    chex.assert_trees_all_close(state.gmm, expected, rtol=1e-5, atol=1e-6)
    tau_ref = testing.threshold(expected, testing.ce_derivative, 0.01)[1]
    np.testing.assert_allclose(state.tau, tau_ref, rtol=1e-3)

  @pytest.mark.slow
  def test_vmap_over_runs_matches_each_run_and_keeps_the_refit_a_cond(self):
    # Three runs stepped together under vmap (as experiments.train packs
    # them). Run 2 sees a NaN in its first batch, so its queue fills one
    # step later and it falls due on other steps than runs 0 and 1.
    period, queue_size, batch, runs = 4, 64, 8, 3
    weighting = ogc_jax.ogc_weights(losses.cross_entropy,
                                    update_period=period, queue_size=queue_size)
    rng = np.random.default_rng(2)
    probs = np.concatenate([rng.uniform(0.7, 1.0, (20, runs, batch // 2)),
                            rng.uniform(0.001, 0.2, (20, runs, batch // 2))],
                           axis=-1).astype(np.float32)
    probs[0, 2, 0] = np.nan
    lrs = jnp.asarray([0.01, 0.02, 0.01])  # one learning rate per run
    by_rate = lambda p, s, lr: weighting.update(p, s, learning_rate=lr)
    batched = jax.jit(jax.vmap(by_rate))
    states = jax.vmap(lambda _: weighting.init())(jnp.arange(runs))
    alone = [weighting.init() for _ in range(runs)]
    update = jax.jit(weighting.update)
    for step in range(20):
      weights, states = batched(jnp.asarray(probs[step]), states, lrs)
      for r in range(runs):
        w, alone[r] = update(jnp.asarray(probs[step, r]), alone[r],
                             learning_rate=lrs[r])
        np.testing.assert_allclose(weights[r], w, rtol=1e-6)
    for r in range(runs):
      run = jax.tree_util.tree_map(lambda x: x[r], states)
      chex.assert_trees_all_close(run, alone[r], rtol=1e-5)
    self.assertEqual([int(n) for n in states.num_threshold_updates],
                     [4, 4, 3])
    # The refit is under a cond in the batched program, not a select that
    # would run it at every step.
    jaxpr = jax.make_jaxpr(jax.vmap(by_rate))(jnp.asarray(probs[0]), states,
                                              lrs)
    self.assertTrue('cond[' in str(jaxpr),
                    'the batched refit is not under a cond')

  def test_learning_rate_of_the_update_sets_the_target_ratio(self):
    schedule = optax.piecewise_constant_schedule(0.1, {12: 0.1})
    weighting = ogc_jax.ogc_weights(losses.cross_entropy,
                                    update_period=4, queue_size=32)
    update = jax.jit(weighting.update)
    state = weighting.init()
    rng = np.random.default_rng(2)
    for step in range(16):
      probs = np.concatenate([rng.uniform(0.6, 1.0, 4), rng.uniform(0.001, 0.3, 4)])
      _, state = update(jnp.asarray(probs, jnp.float32), state,
                        learning_rate=schedule(step))
      if step + 1 in (8, 16):  # refits, at 0.1 and then 0.01
        np.testing.assert_allclose(state.noise_to_clean_ratio,
                                   1 + 20 * schedule(step), rtol=1e-4)


class RoutesTest(chex.TestCase, parameterized.TestCase):

  def _run_both(self, base_loss, steps=12, batch=16, variant=lambda f: f):
    lr = optax.exponential_decay(0.1, 4, 0.5)
    kwargs = dict(update_period=2, queue_size=32)
    transform = ogc_jax.ogc(base_loss, **kwargs)
    weighting = ogc_jax.ogc_weights(base_loss, **kwargs)
    params = init_params()

    @variant
    def per_example_step(state, x, y, step):
      grads, probs = per_example_grads(params, x, y, base_loss)
      return transform.update(grads, state, params, probs=probs,
                              learning_rate=lr(step))

    @variant
    def fused_step(state, x, y, step):
      def loss_fn(params, state):
        probs = linear_probs(params, x, y)
        weights, state = weighting.update(probs, state, learning_rate=lr(step))
        return ogc_jax.weighted_base_loss(base_loss, probs, weights), state
      grads, state = jax.grad(loss_fn, has_aux=True)(params, state)
      return grads, state

    s1, s2 = transform.init(params), weighting.init(params)
    for step in range(steps):
      x, y = make_batch(step, batch)
      g1, s1 = per_example_step(s1, x, y, step)
      g2, s2 = fused_step(s2, x, y, step)
      chex.assert_trees_all_close(g1, g2, rtol=1e-5, atol=1e-7)
      chex.assert_trees_all_close(s1, s2, rtol=1e-5, atol=1e-7)
    return g1, s1

  @chex.variants(with_jit=True)
  def test_fused_route_equals_per_example_route(self):
    _, state = self._run_both(losses.cross_entropy, variant=self.variant)
    self.assertGreater(int(state.num_threshold_updates), 0)
    self.assertGreater(float(state.clipped_fraction), 0.0)

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(('focal', losses.focal),
                                  ('gce', losses.generalized_cross_entropy))
  @pytest.mark.slow
  def test_fused_route_equals_per_example_route_of_other_losses(
      self, base_loss):
    _, state = self._run_both(base_loss, variant=self.variant)
    self.assertGreater(int(state.num_threshold_updates), 0)
    self.assertGreater(float(state.clipped_fraction), 0.0)

  @chex.variants(with_jit=True, without_jit=True)
  @pytest.mark.slow
  def test_fused_route_equals_per_example_route_with_and_without_jit(self):
    # Op by op is slow (the EM loop dispatches each primitive): 4 steps, with
    # one refit, in both variants.
    _, state = self._run_both(losses.cross_entropy, steps=4,
                              variant=self.variant)
    self.assertGreater(int(state.num_threshold_updates), 0)

  def test_update_is_mean_of_scaled_per_example_gradients(self):
    base_loss = losses.cross_entropy
    params = init_params()
    x, y = make_batch(0, 16)
    grads, probs = per_example_grads(params, x, y, base_loss)
    transform = ogc_jax.ogc(base_loss)
    state = transform.init(params)._replace(tau=jnp.float32(1.5))
    out, _ = transform.update(grads, state, params, probs=probs,
                              learning_rate=0.1)
    p = np.clip(np.asarray(probs, np.float64), MIN_PROB, MAX_PROB)
    scale = np.minimum(1.0, 1.5 * p)  # tau / |l'(p)| with |l'(p)| = 1/p
    expected = jax.tree_util.tree_map(
        lambda g: np.tensordot(scale, np.asarray(g, np.float64), axes=1) / 16, grads)
    chex.assert_trees_all_close(out, expected, rtol=1e-5, atol=1e-7)

  def test_chain_with_clip_and_sgd_and_tree_get(self):
    base_loss = losses.cross_entropy
    schedule = optax.piecewise_constant_schedule(0.1, {6: 0.1})
    opt = optax.chain(ogc_jax.ogc(base_loss, update_period=2, queue_size=32),
                      optax.clip_by_global_norm(5.0), optax.sgd(schedule, 0.9))
    params = init_params()
    state = opt.init(params)

    @jax.jit
    def step(params, state, x, y, i):
      grads, probs = per_example_grads(params, x, y, base_loss)
      updates, state = opt.update(grads, state, params, probs=probs,
                                  learning_rate=schedule(i))
      return optax.apply_updates(params, updates), state

    for i in range(10):
      params, state = step(params, state, *make_batch(i, 16), i)
    tau = optax.tree_utils.tree_get(state, "tau")
    ogc_state = state[0]
    self.assertEqual(float(tau), float(ogc_state.tau))
    self.assertEqual(int(ogc_state.count), 10)
    self.assertLess(float(tau), 1 / MIN_PROB)
    np.testing.assert_allclose(ogc_state.noise_to_clean_ratio, 1 + 20 * 0.01,
                               rtol=1e-4)


def two_mode_probs(rng, batch):
  """Half confident (clean-looking), half unlikely (noisy-looking) examples."""
  return jnp.asarray(np.concatenate([rng.uniform(0.6, 1.0, batch // 2),
                                     rng.uniform(0.001, 0.3, batch // 2)]),
                     jnp.float32)


class LearningRateTest(parameterized.TestCase):
  """OGC's eta: the optimizer's rate or schedule given once, or per update."""

  # The rate drops from 0.1 to 0.01 at step 11 (counted from 0), the step of
  # the third refit (update_period 4: refits at the 4th, 8th and 12th
  # update), so the target ratio 1 + lr * 20 of that refit is 1.2, where a
  # rate one step behind would give 3.0.
  SCHEDULE = staticmethod(optax.piecewise_constant_schedule(0.1, {11: 0.1}))
  KWARGS = dict(update_period=4, queue_size=32)

  def test_missing_learning_rate_fails_on_both_routes(self):
    transform = ogc_jax.ogc(losses.cross_entropy)
    weighting = ogc_jax.ogc_weights(losses.cross_entropy)
    grads = {"w": jnp.zeros((4, 3))}
    probs = jnp.full((4,), 0.5)
    message = "needs the optimizer's learning rate: give the same rate or"
    with pytest.raises(ValueError, match=message):
      transform.update(grads, transform.init(None), probs=probs)
    with pytest.raises(ValueError, match=message):
      jax.jit(lambda s, p: weighting.update(p, s))(weighting.init(), probs)

  @parameterized.parameters((-0.1,), (float("nan"),), ("0.1",), (np.ones(2),))
  def test_bad_learning_rate(self, lr):
    weighting = ogc_jax.ogc_weights(losses.cross_entropy)
    message = "`learning_rate` must be a finite scalar"
    with pytest.raises(ValueError, match=message):
      weighting.update(jnp.full((4,), 0.5), weighting.init(), learning_rate=lr)
    for make in (ogc_jax.ogc, ogc_jax.ogc_weights):  # at construction
      with pytest.raises(ValueError, match=message):
        make(losses.cross_entropy, learning_rate=lr)

  def test_bad_value_of_a_schedule_names_the_construction(self):
    weighting = ogc_jax.ogc_weights(losses.cross_entropy,
                                    learning_rate=lambda count: -0.1 * count)
    state = weighting.init()._replace(count=jnp.int32(1))
    with pytest.raises(ValueError, match=r"the construction's, at this step"
                       r"\) must be a finite scalar >= 0"):
      weighting.update(jnp.full((4,), 0.5), state)

  def _ratios(self, update, state, steps=12):
    """R after each of ``steps`` calls of ``update(state, probs, step)``."""
    rng = np.random.default_rng(0)
    ratios = {}
    for step in range(steps):
      state = update(state, two_mode_probs(rng, 8), step)
      ogc_state = state if isinstance(state, ogc_jax.OGCState) else state[0]
      ratios[step + 1] = float(ogc_state.noise_to_clean_ratio)
    return ratios, state

  def _assert_follows_the_drop(self, ratios):
    np.testing.assert_allclose([ratios[4], ratios[8]], 3.0, rtol=1e-4)
    np.testing.assert_allclose(ratios[12], 1.2, rtol=1e-4)

  def test_schedule_given_once_to_the_per_example_route(self):
    schedule = self.SCHEDULE
    opt = optax.chain(ogc_jax.ogc(losses.cross_entropy, learning_rate=schedule,
                                  **self.KWARGS),
                      optax.sgd(schedule))
    params = {"w": jnp.zeros([3])}

    @jax.jit
    def step(state, probs, step):
      del step  # OGC evaluates the schedule at its own count, as SGD does
      return opt.update({"w": jnp.ones((8, 3))}, state, params, probs=probs)[1]

    ratios, state = self._ratios(step, opt.init(params))
    self._assert_follows_the_drop(ratios)
    self.assertEqual(int(state[0].count), int(state[1][1].count))  # SGD's

  def test_schedule_given_once_to_the_fused_route_equals_it_per_update(self):
    schedule = self.SCHEDULE
    once = ogc_jax.ogc_weights(losses.cross_entropy, learning_rate=schedule,
                               **self.KWARGS)
    per_update = ogc_jax.ogc_weights(losses.cross_entropy, **self.KWARGS)
    ratios, state = self._ratios(
        jax.jit(lambda s, p, step: once.update(p, s)[1]), once.init())
    self._assert_follows_the_drop(ratios)
    _, reference = self._ratios(
        jax.jit(lambda s, p, step: per_update.update(p, s, learning_rate=schedule(step))[1]),
        per_update.init())
    chex.assert_trees_all_equal(state, reference)

  def test_a_per_update_rate_overrides_the_schedule(self):
    weighting = ogc_jax.ogc_weights(losses.cross_entropy,
                                    learning_rate=self.SCHEDULE, **self.KWARGS)
    ratios, _ = self._ratios(
        jax.jit(lambda s, p, step: weighting.update(p, s, learning_rate=0.001)[1]),
        weighting.init(), steps=4)
    np.testing.assert_allclose(ratios[4], 1 + 0.001 * 20, rtol=1e-4)

  def test_inject_hyperparams_schedule_given_once_not_read_one_step_behind(self):
    # inject_hyperparams stores the rate its last update applied: read
    # before an update, opt_state[1].hyperparams is one step behind the rate
    # that update applies. The schedule given to OGC is not.
    schedule = self.SCHEDULE
    inject = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
    params = {"w": jnp.zeros([3])}
    grads = {"w": jnp.ones((8, 3))}
    once = optax.chain(ogc_jax.ogc(losses.cross_entropy,
                                   learning_rate=schedule, **self.KWARGS),
                       inject)
    read = optax.chain(ogc_jax.ogc(losses.cross_entropy, **self.KWARGS),
                       inject)
    applied = []

    @jax.jit
    def step_once(state, probs, step):
      del step
      return once.update(grads, state, params, probs=probs)[1]

    @jax.jit
    def read_and_step(state, probs):
      lr = state[1].hyperparams["learning_rate"]  # before the update
      return read.update(grads, state, params, probs=probs,
                         learning_rate=lr)[1], lr

    def step_read(state, probs, step):
      del step
      state, lr = read_and_step(state, probs)
      applied.append((lr, state[1].hyperparams["learning_rate"]))
      return state

    ratios, _ = self._ratios(step_once, once.init(params))
    self._assert_follows_the_drop(ratios)
    ratios, _ = self._ratios(step_read, read.init(params))
    # At step 11 OGC read 0.1, SGD applied 0.01.
    np.testing.assert_allclose(applied[11], [0.1, 0.01], rtol=1e-6)
    np.testing.assert_allclose(ratios[12], 3.0, rtol=1e-4)  # one step behind

  def test_reduce_on_plateau_per_update_rate(self):
    # The rate is lr * the plateau scale, a state, not a schedule of the
    # step: it goes to each update. A constant loss is a plateau from the
    # 2nd update on; with patience 9 the scale falls to 0.1 at the 10th
    # update, so the third refit (12th update) targets 1 + 0.01 * 20.
    lr = 0.1
    opt = optax.chain(ogc_jax.ogc(losses.cross_entropy, **self.KWARGS),
                      optax.sgd(lr),
                      optax.contrib.reduce_on_plateau(patience=9, factor=0.1))
    params = {"w": jnp.zeros([3])}

    @jax.jit
    def step(state, probs, step):
      del step
      rate = lr * optax.tree_utils.tree_get(state, "scale")
      return opt.update({"w": jnp.ones((8, 3))}, state, params, probs=probs,
                        learning_rate=rate, value=jnp.float32(1.0))[1]

    ratios, state = self._ratios(step, opt.init(params))
    self.assertEqual(float(optax.tree_utils.tree_get(state, "scale")),
                     np.float32(0.1))
    self._assert_follows_the_drop(ratios)

  def test_bad_traced_rate_rejects_the_refit(self):
    # Traced, the rate cannot be checked at trace time: the refit it would
    # set is rejected (state kept, counted) instead of clipping everything
    # (a NaN or negative target gave tau = |l'(1 - 1e-7)| = 1).
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, update_period=1,
                                    queue_size=8)
    update = jax.jit(weighting.update)
    probs = two_mode_probs(np.random.default_rng(0), 8)
    _, good = update(probs, weighting.init(), learning_rate=0.1)
    self.assertEqual(int(good.num_threshold_updates), 1)
    expected = np.minimum(1.0, float(good.tau) * np.asarray(probs))
    self.assertLess(np.mean(expected < 1), 1.0)
    for bad in (float("nan"), float("inf"), -0.1):
      weights, state = update(probs, good, learning_rate=bad)
      self.assertEqual(int(state.num_rejected_refits), 1, bad)
      self.assertEqual(int(state.num_threshold_updates), 1)
      for field in ("tau", "p_threshold", "gmm", "noise_to_clean_ratio"):
        chex.assert_trees_all_equal(getattr(state, field), getattr(good, field))
      np.testing.assert_allclose(weights, expected, rtol=1e-6)
    self.assertEqual(update._cache_size(), 1)
    # The same from a schedule given at construction, and from an epsilon
    # that inject_hyperparams made traced.
    scheduled = ogc_jax.ogc_weights(
        losses.cross_entropy, update_period=1, queue_size=8,
        learning_rate=lambda count: jnp.where(count > 0, jnp.nan, 0.1))
    _, state = jax.jit(scheduled.update)(probs, good)
    self.assertEqual(int(state.num_rejected_refits), 1)
    chex.assert_trees_all_equal(state.tau, good.tau)
    make = optax.inject_hyperparams(
        ogc_jax.ogc, static_args=("base_loss", "update_period", "queue_size"))
    transform = make(base_loss=losses.cross_entropy, epsilon=20.0,
                     update_period=1, queue_size=8)
    state = transform.init(None)
    state.hyperparams["epsilon"] = jnp.full_like(state.hyperparams["epsilon"],
                                                 -1.0)  # set by hand
    state = jax.jit(lambda s: transform.update(
        {"w": jnp.ones((8, 3))}, s, probs=probs, learning_rate=0.1)[1])(state)
    self.assertEqual(int(state.inner_state.num_rejected_refits), 1)

  def test_follows_a_lowered_inject_hyperparams_rate(self):
    # The case: the injected rate lowered from 0.1 to 0.001. OGC is
    # given the rate the optimizer holds, so the next refit targets
    # R = 1 + 0.001 * 20 = 1.02 (with a copy of 0.1 it stayed at 3.0).
    opt = optax.chain(ogc_jax.ogc(losses.cross_entropy, update_period=4,
                                  queue_size=32),
                      optax.inject_hyperparams(optax.sgd)(learning_rate=0.1))
    params = {"w": jnp.zeros([3])}
    state = opt.init(params)

    @jax.jit
    def step(state, probs):
      grads = {"w": jnp.ones((8, 3))}
      lr = state[1].hyperparams["learning_rate"]
      return opt.update(grads, state, params, probs=probs, learning_rate=lr)[1]

    rng = np.random.default_rng(0)
    for _ in range(4):
      state = step(state, two_mode_probs(rng, 8))
    np.testing.assert_allclose(state[0].noise_to_clean_ratio, 3.0, rtol=1e-4)
    state[1].hyperparams["learning_rate"] = jnp.asarray(0.001)
    for _ in range(4):
      state = step(state, two_mode_probs(rng, 8))
    self.assertEqual(int(state[0].num_threshold_updates), 2)
    np.testing.assert_allclose(state[0].noise_to_clean_ratio, 1.02, rtol=1e-4)

  def test_under_multisteps_counts_micro_batches_at_the_optimizer_rate(self):
    # OGC goes before optax.MultiSteps (which would average per-example
    # gradients across micro-batches); it then sees every micro-batch, so
    # update_period and count are in micro-batches, and the rate given is
    # the optimizer's at its own step, micro_step // k.
    k = 2
    schedule = optax.piecewise_constant_schedule(0.1, {3: 0.1})
    accumulate = optax.MultiSteps(optax.sgd(schedule), every_k_schedule=k)
    opt = optax.chain(ogc_jax.ogc(losses.cross_entropy, update_period=4,
                                  queue_size=32),
                      accumulate.gradient_transformation())
    params = {"w": jnp.zeros([3])}
    state = opt.init(params)

    @jax.jit
    def step(state, params, probs, micro_step):
      grads = {"w": jnp.ones((8, 3))}
      updates, state = opt.update(grads, state, params, probs=probs,
                                  learning_rate=schedule(micro_step // k))
      return state, optax.apply_updates(params, updates)

    rng = np.random.default_rng(0)
    ratios = {}
    for micro_step in range(12):
      state, params = step(state, params, two_mode_probs(rng, 8), micro_step)
      ratios[micro_step + 1] = float(state[0].noise_to_clean_ratio)
    self.assertEqual(int(state[0].count), 12)  # micro-batches
    self.assertEqual(int(state[0].num_threshold_updates), 3)  # 4, 8 and 12
    self.assertEqual(int(state[1].gradient_step), 6)  # optimizer steps
    # Micro-batch 4 is in optimizer step 1 (rate 0.1), micro-batch 8 in step
    # 3 (0.01): OGC's target follows SGD's own rate.
    np.testing.assert_allclose(ratios[4], 1 + 20 * 0.1, rtol=1e-4)
    np.testing.assert_allclose(ratios[8], 1 + 20 * 0.01, rtol=1e-4)
    np.testing.assert_allclose(ratios[12], 1 + 20 * 0.01, rtol=1e-4)
    # The parameters moved by SGD's rate: 3 steps of 0.1, 3 of 0.01, each on
    # the mean of two micro-batches' clipped updates (all weights <= 1).
    self.assertTrue(np.all(np.asarray(params["w"]) < 0))
    self.assertTrue(np.all(np.asarray(params["w"]) >= -3 * 0.1 - 3 * 0.01 - 1e-6))


class HyperparametersAndStateTest(parameterized.TestCase):
  """epsilon as an array (inject_hyperparams); the state serialises."""

  def test_inject_hyperparams_needs_only_three_static_arguments(self):
    make = optax.inject_hyperparams(
        ogc_jax.ogc, static_args=("base_loss", "update_period", "queue_size"))
    transform = make(base_loss=losses.cross_entropy, epsilon=20.0,
                     update_period=4, queue_size=32)
    state = transform.init(None)

    @jax.jit
    def step(state, probs):
      grads = {"w": jnp.ones((8, 3))}
      return transform.update(grads, state, probs=probs, learning_rate=0.1)[1]

    rng = np.random.default_rng(0)
    for _ in range(4):
      state = step(state, two_mode_probs(rng, 8))
    inner = state.inner_state
    np.testing.assert_allclose(inner.noise_to_clean_ratio, 1 + 0.1 * 20,
                               rtol=1e-4)
    # A new target, of the same dtype so that the step is not retraced.
    state.hyperparams["epsilon"] = jnp.full_like(state.hyperparams["epsilon"], 5.0)
    for _ in range(4):
      state = step(state, two_mode_probs(rng, 8))
    np.testing.assert_allclose(state.inner_state.noise_to_clean_ratio,
                               1 + 0.1 * 5, rtol=1e-4)
    self.assertEqual(step._cache_size(), 1)

  def test_epsilon_array_equals_float(self):
    probs = jnp.linspace(0.01, 0.99, 32)
    out = []
    for epsilon in (20.0, jnp.float32(20.0), np.asarray(20.0)):
      weighting = ogc_jax.ogc_weights(losses.cross_entropy, epsilon=epsilon,
                                      update_period=1, queue_size=32)
      out.append(jax.jit(weighting.update)(probs, weighting.init(),
                                               learning_rate=0.1)[1])
    chex.assert_trees_all_equal(out[0], out[1], out[2])
    self.assertEqual(int(out[0].num_threshold_updates), 1)

  @parameterized.parameters((jnp.ones(2),), (jnp.float32(-1.0),),
                            (np.float32(np.nan),), ("20",), (True,))
  def test_bad_epsilon(self, epsilon):
    with pytest.raises(ValueError, match="`epsilon` must be a finite scalar"):
      ogc_jax.ogc_weights(losses.cross_entropy, epsilon=epsilon)

  def test_state_serialises_and_tree_get_finds_mixture_fields(self):
    from flax import serialization  # pylint: disable=g-import-not-at-top
    opt = optax.chain(ogc_jax.ogc(losses.cross_entropy, update_period=1,
                                  queue_size=8), optax.sgd(0.1))
    params = {"w": jnp.zeros([3])}
    state = opt.init(params)
    _, state = opt.update({"w": jnp.ones((8, 3))}, state, params,
                          probs=jnp.linspace(0.01, 0.99, 8), learning_rate=0.1)
    mean_clean = optax.tree_utils.tree_get(state, "mean_clean")
    self.assertIsNotNone(mean_clean)
    self.assertEqual(float(mean_clean), float(state[0].gmm.mean_clean))
    self.assertNotEqual(float(mean_clean), 0.0)  # fitted
    restored = serialization.from_bytes(opt.init(params),
                                        serialization.to_bytes(state))
    chex.assert_trees_all_equal(restored, state)
    self.assertIsInstance(restored[0].gmm, ogc_jax.GMM)
    self.assertEqual(ogc_jax.GMM._fields, (
        "mean_clean", "var_clean", "mean_noisy", "var_noisy", "weight_noisy"))


class PlacementTest(absltest.TestCase):
  """OGC goes first in a chain, outside MultiSteps and apply_if_finite."""

  def setUp(self):
    super().setUp()
    self.params = {"w": jnp.zeros((3, 2))}
    self.grads = {"w": jnp.ones((8, 3, 2))}
    self.probs = jnp.linspace(0.1, 0.9, 8)

  def test_inside_multisteps_fails_saying_where_ogc_goes(self):
    opt = optax.MultiSteps(optax.chain(ogc_jax.ogc(losses.cross_entropy),
                                       optax.sgd(0.1)), every_k_schedule=2)
    with pytest.raises(ValueError, match="outside optax.MultiSteps"):
      opt.update(self.grads, opt.init(self.params), self.params,
                 probs=self.probs, learning_rate=0.1)

  def test_apply_if_finite_after_ogc_rejects_a_non_finite_update(self):
    opt = optax.chain(ogc_jax.ogc(losses.cross_entropy),
                      optax.apply_if_finite(optax.sgd(0.1), 3))
    state = opt.init(self.params)
    step = jax.jit(lambda g, s: opt.update(g, s, self.params, probs=self.probs,
                                           learning_rate=0.1))
    updates, state = step(self.grads, state)
    # No clipping before the first refit: -lr * the mean gradient.
    np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-6)
    # A NaN gradient of an example with a valid p makes the mean NaN, which
    # apply_if_finite (after OGC) rejects.
    updates, state = step({"w": self.grads["w"].at[0].set(jnp.nan)}, state)
    np.testing.assert_array_equal(updates["w"], 0.0)
    self.assertEqual(int(state[1].notfinite_count), 1)
    self.assertEqual(int(state[0].count), 2)


class BaseLossCheckTest(parameterized.TestCase):
  """|l'(p)| finite and non-increasing on [1e-7, 1 - 1e-7], at construction."""

  @parameterized.parameters(
      # The jnp.where gradient trap: the unused branch's NaN derivative
      # reaches every p (it made tau NaN from init on).
      (lambda p: jnp.where(p < 0, jnp.sqrt(-p), -jnp.log(p)),
       r"at p = 1e-07 it is nan"),
      (lambda p: -jnp.log(p) + 0.0 * jnp.sqrt(0.5 - p), r"at p = 0\.5 it is nan"),
      # |l'(p)| = 2p grows with p.
      (lambda p: p**2, r"rises from 2e-07 at p = 1e-07 to 2\.16\d*e-07 at p = 1\.08"),
      # Increasing above p = 0.9 only: 1/p below, 1/0.9 + 50 (p - 0.9) above;
      # the grid's neighbours of 0.9 give 1/0.893902 and 1/0.9 + 50 * 0.001815.
      (lambda p: jnp.where(p < 0.9, -jnp.log(p),
                           -jnp.log(0.9) - (p - 0.9) / 0.9 - 25 * (p - 0.9)**2),
       r"rises from 1\.1186\d* at p = 0\.8939\d* to 1\.20\d* at p = 0\.9018"),
  )
  def test_bad_loss_names_the_first_failing_p(self, base_loss, message):
    for make in (ogc_jax.ogc, ogc_jax.ogc_weights):
      with pytest.raises(ValueError, match="must be finite and non-increasing"):
        make(base_loss)
      with pytest.raises(ValueError, match=message):
        make(base_loss)

  def test_not_a_scalar_loss(self):
    with pytest.raises(ValueError, match="scalar probability p to a scalar loss"):
      ogc_jax.ogc(lambda p: jnp.stack([p, p]))
    with pytest.raises(ValueError, match="must be a function of p"):
      ogc_jax.ogc(3.0)

  @parameterized.parameters(
      *[(f,) for f in losses.BASE_LOSSES.values()],
      (losses.phuber_cross_entropy,), (losses.phuber_generalized_cross_entropy,),
      (lambda p: losses.focal(p, gamma=2.0),),
      (lambda p: losses.generalized_cross_entropy(p, q=1.0),),
      (lambda p: losses.taylor_cross_entropy(p, order=6),))
  def test_library_losses_pass(self, base_loss):
    ogc_jax.ogc_weights(base_loss)

  def test_check_grid_covers_the_feasible_range(self):
    grid = transform_lib._CHECK_GRID
    self.assertEqual(grid[0], np.float32(MIN_PROB))
    self.assertEqual(grid[-1], np.float32(MAX_PROB))
    self.assertTrue(np.all(np.diff(grid) > 0))


class NoRetraceTest(absltest.TestCase):
  """Each route's jitted step compiles once: refits and rates are traced."""

  def test_both_routes_trace_once_over_many_steps_with_refits(self):
    base_loss = losses.cross_entropy
    schedule = optax.exponential_decay(0.1, 4, 0.5)
    kwargs = dict(update_period=2, queue_size=32)
    opt = optax.chain(ogc_jax.ogc(base_loss, **kwargs), optax.sgd(schedule))
    weighting = ogc_jax.ogc_weights(base_loss, **kwargs)
    sgd = optax.sgd(schedule)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def per_example_step(params, state, x, y, lr):
      grads, probs = per_example_grads(params, x, y, base_loss)
      updates, state = opt.update(grads, state, params, probs=probs,
                                  learning_rate=lr)
      return optax.apply_updates(params, updates), state

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fused_step(params, opt_state, ogc_state, x, y, lr):
      def loss_fn(params, ogc_state):
        probs = linear_probs(params, x, y)
        weights, ogc_state = weighting.update(probs, ogc_state, learning_rate=lr)
        return ogc_jax.weighted_base_loss(base_loss, probs, weights), ogc_state
      grads, ogc_state = jax.grad(loss_fn, has_aux=True)(params, ogc_state)
      updates, opt_state = sgd.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, ogc_state

    p1 = p2 = init_params()
    s1, opt_state, s2 = opt.init(p1), sgd.init(p2), weighting.init()
    for step in range(30):
      x, y = make_batch(step, 16)
      lr = schedule(step)
      p1, s1 = per_example_step(p1, s1, x, y, lr)
      p2, opt_state, s2 = fused_step(p2, opt_state, s2, x, y, lr)
    # The queue (32) is full after 2 batches of 16: refits at 2, 4, ..., 30.
    self.assertEqual(int(s1[0].num_threshold_updates), 15)
    self.assertEqual(int(s2.num_threshold_updates), 15)
    self.assertEqual(per_example_step._cache_size(), 1)
    self.assertEqual(fused_step._cache_size(), 1)
    chex.assert_trees_all_close(p1, p2, rtol=1e-4, atol=1e-6)

  def test_eager_updates_compile_nothing_after_the_first(self):
    # Outside jit (a notebook, a debugger, a docstring) each primitive is
    # compiled once and cached; the refit's cond was compiled again at every
    # call while its `keep` branch was a new lambda per call (3 s a call).
    compiles = []

    def on_event(event, duration_secs, **kwargs):
      del duration_secs, kwargs
      if event == "/jax/core/compile/backend_compile_duration":
        compiles.append(event)

    kwargs = dict(update_period=1, queue_size=8)  # a refit at every call
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, **kwargs)
    transform = ogc_jax.ogc(losses.cross_entropy, **kwargs)
    probs = jnp.linspace(0.01, 0.99, 8)
    grads = {"w": jnp.ones((8, 3))}
    fused = lambda s: weighting.update(probs, s, learning_rate=0.1)[1]
    per_example = lambda s: transform.update(grads, s, probs=probs,
                                             learning_rate=0.1)[1]
    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
      for route, update, state in (("fused", fused, weighting.init()),
                                   ("per-example", per_example,
                                    transform.init(None))):
        counts = []
        for _ in range(3):
          before = len(compiles)
          state = jax.block_until_ready(update(state))
          counts.append(len(compiles) - before)
        self.assertEqual(int(state.num_threshold_updates), 3)
        self.assertEqual(counts[1:], [0, 0], f"{route}: compilations {counts}")
    finally:
      jax.monitoring.unregister_event_duration_listener(on_event)


class BadInputTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.transform = ogc_jax.ogc(losses.cross_entropy)
    self.params = init_params()
    self.state = self.transform.init(self.params)
    self.grads = jax.tree_util.tree_map(lambda p: jnp.zeros((4,) + p.shape),
                                        self.params)

  def test_probs_not_1d(self):
    with pytest.raises(ValueError, match="`probs` to be 1-D"):
      self.transform.update(self.grads, self.state, probs=jnp.ones((4, 1)))

  def test_integer_probs(self):
    with pytest.raises(ValueError, match="`probs` to be floating"):
      self.transform.update(self.grads, self.state, probs=jnp.ones(4, jnp.int32))

  def test_probs_of_another_length_than_the_batch_names_probs(self):
    with pytest.raises(ValueError, match=r"`probs` to hold one probability per"
                       r" example: .* a batch of 4 .* `probs` has shape \(3,\)"):
      self.transform.update(self.grads, self.state, probs=jnp.ones(3),
                            learning_rate=0.1)

  def test_leaves_without_a_common_batch_name_the_leaf(self):
    grads = dict(self.grads, b=jnp.zeros((3, NUM_CLASSES)))
    with pytest.raises(ValueError, match=r"leaf \['b'\] has shape \(3, 4\)"):
      self.transform.update(grads, self.state, probs=jnp.ones(4),
                            learning_rate=0.1)

  def test_averaged_gradients_are_refused_given_params(self):
    # The case: w of shape (64, 4) and a batch of 64. The mean
    # gradient has the shape (64, 4) a per-example gradient of a (4,)
    # parameter would have; apply_updates broadcast the (4,) update onto
    # every row. Given params, OGC sees the shapes do not fit.
    params = {"w": jnp.zeros((64, 4))}
    averaged = {"w": jnp.ones((64, 4))}
    with pytest.raises(ValueError, match=r"leaf \['w'\] has shape \(64, 4\)"
                       r" for a parameter of shape \(64, 4\)\. Gradients"
                       r" already averaged"):
      jax.jit(lambda g: self.transform.update(
          g, self.transform.init(params), params, probs=jnp.full(64, 0.5),
          learning_rate=0.1))(averaged)
    # Per-example gradients of the same parameters pass.
    out, _ = self.transform.update({"w": jnp.ones((64, 64, 4))},
                                   self.transform.init(params), params,
                                   probs=jnp.full(64, 0.5), learning_rate=0.1)
    self.assertEqual(out["w"].shape, (64, 4))

  def test_counters_saturate_instead_of_wrapping(self):
    # As optax.safe_increment: at the int32 maximum a counter stays there
    # (a wrapped count would turn negative and feed a schedule a bad step).
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, update_period=1000,
                                    queue_size=8)
    top = np.iinfo(np.int32).max
    state = weighting.init()._replace(count=jnp.int32(top),
                                      num_invalid=jnp.int32(top - 1))
    _, state = jax.jit(weighting.update)(jnp.array([0.5, jnp.nan, 2.0]), state,
                                         learning_rate=0.1)
    self.assertEqual(int(state.count), top)
    self.assertEqual(int(state.num_invalid), top)

  def test_ogc_weights_in_a_chain_says_to_use_ogc(self):
    opt = optax.chain(ogc_jax.ogc_weights(losses.cross_entropy,
                                          learning_rate=0.1),
                      optax.sgd(0.1))
    with pytest.raises(ValueError, match=r"optax.chain passes \(params\):"
                       r" `ogc_weights\(\.\.\.\)` is not an optax"
                       r" transformation.* use `ogc\(\.\.\.\)`"):
      opt.update(self.grads, opt.init(self.params), self.params)

  def test_missing_probs(self):
    with pytest.raises(ValueError, match="`probs`"):
      self.transform.update(self.grads, self.state)

  def test_errors_at_trace_time_under_jit(self):
    with pytest.raises(ValueError, match="`probs` to be 1-D"):
      jax.jit(lambda g, s, p: self.transform.update(g, s, probs=p))(
          self.grads, self.state, jnp.ones((4, 2)))

  def test_bad_hyperparameters(self):
    with pytest.raises(ValueError, match="update_period"):
      ogc_jax.ogc(losses.cross_entropy, update_period=0)
    with pytest.raises(ValueError, match="queue_size"):
      ogc_jax.ogc(losses.cross_entropy, queue_size=1)

  @parameterized.parameters(
      # 2.5 used to refit every 5 steps, 16.0 to fail inside `init`.
      (dict(update_period=2.5), r"`update_period` must be an integer >= 1, got 2\.5"),
      (dict(update_period=True), r"`update_period` must be an integer >= 1, got True"),
      (dict(queue_size=16.0), r"`queue_size` must be an integer >= 2, got 16\.0"),
      (dict(queue_size=np.float32(64)), r"`queue_size` must be an integer"),
      (dict(epsilon=float("inf")), r"`epsilon` must be a finite scalar >= 0 \(a float or an array\), got inf"),
      (dict(fit="sklearn"), r"`fit` must be one of \('converged', 'published', 'conservative'\), got 'sklearn'"),
  )
  def test_argument_errors_name_the_argument_and_value(self, kwargs, message):
    for make in (ogc_jax.ogc, ogc_jax.ogc_weights):
      with pytest.raises(ValueError, match=message):
        make(losses.cross_entropy, **kwargs)

  def test_valid_arguments_of_other_types(self):
    # NumPy integers are accepted.
    weighting = ogc_jax.ogc_weights(
        losses.cross_entropy, update_period=np.int64(2), queue_size=np.int32(8))
    self.assertEqual(weighting.init().queue.shape, (8,))

  def test_empty_batch_changes_nothing(self):
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, update_period=1,
                                    queue_size=8)
    _, state = weighting.update(jnp.linspace(0.1, 0.9, 8), weighting.init(),
                                learning_rate=0.1)
    empty = jnp.zeros([0], jnp.float32)
    for update in (weighting.update, jax.jit(weighting.update)):
      weights, new_state = update(empty, state, learning_rate=0.1)
      self.assertEqual(weights.shape, (0,))
      chex.assert_trees_all_equal(new_state, state)
    loss, grad = jax.value_and_grad(
        lambda p: ogc_jax.weighted_base_loss(losses.cross_entropy, p, empty))(empty)
    self.assertEqual(float(loss), 0.0)
    self.assertEqual(grad.shape, (0,))
    # The per-example route: a zero update of each parameter's shape.
    grads = jax.tree_util.tree_map(lambda p: jnp.zeros((0,) + p.shape), self.params)
    for update in (self.transform.update, jax.jit(self.transform.update)):
      out, new_state = update(grads, self.state, probs=empty, learning_rate=0.1)
      chex.assert_trees_all_equal(out, jax.tree_util.tree_map(jnp.zeros_like,
                                                              self.params))
      chex.assert_trees_all_equal(new_state, self.state)

  def test_rejected_refit_keeps_the_previous_threshold(self):
    # |l'(p)| is NaN for p > 0.5, where the quadrature of any fit evaluates it.
    # Construction refuses such a loss (BaseLossCheckTest); the refit's own
    # guard, for what a grid of p may miss, is tested past that check.
    nan_above_half = lambda p: -jnp.log(p) + 0.0 * jnp.sqrt(0.5 - p)
    with mock.patch.object(transform_lib, "_check_base_loss"):
      weighting = ogc_jax.ogc_weights(nan_above_half, update_period=2,
                                      queue_size=8)
    good = ogc_jax.GMM(mean_clean=jnp.float32(0.1), var_clean=jnp.float32(0.01),
                       mean_noisy=jnp.float32(3.0), var_noisy=jnp.float32(1.0),
                       weight_noisy=jnp.float32(0.4))
    state = weighting.init()._replace(
        tau=jnp.float32(4.0), p_threshold=jnp.float32(0.25), gmm=good,
        noise_to_clean_ratio=jnp.float32(3.0), num_threshold_updates=jnp.int32(1))
    probs = jnp.linspace(0.01, 0.4, 8)  # |l'| finite on the batch itself
    update = jax.jit(lambda p, s: weighting.update(p, s, learning_rate=0.1))
    weights, state = update(probs, state)  # count 1: no refit due
    weights, state = update(probs, state)  # count 2: the refit is rejected
    self.assertEqual(int(state.num_rejected_refits), 1)
    self.assertEqual(int(state.num_threshold_updates), 1)
    for leaf in jax.tree_util.tree_leaves(state):
      self.assertTrue(np.all(np.isfinite(leaf)))
    self.assertEqual(float(state.tau), 4.0)
    self.assertEqual(float(state.p_threshold), 0.25)
    chex.assert_trees_all_equal(state.gmm, good)
    np.testing.assert_allclose(weights, np.minimum(1.0, 4.0 * np.asarray(probs)),
                               rtol=1e-6)

  @pytest.mark.slow
  def test_invalid_probabilities_do_not_poison_the_state(self):
    base_loss = losses.cross_entropy
    transform = ogc_jax.ogc(base_loss, update_period=1, queue_size=16)
    state = transform.init(self.params)
    params = self.params
    x, y = make_batch(3, 16)
    for _ in range(3):
      grads, probs = per_example_grads(params, x, y, base_loss)
      probs = probs.at[:3].set(jnp.array([jnp.nan, jnp.inf, -0.5]))
      grads = jax.tree_util.tree_map(lambda g: g.at[0].set(jnp.nan), grads)
      out, state = jax.jit(lambda g, s, p: transform.update(
          g, s, probs=p, learning_rate=0.1))(grads, state, probs)
      clean_grads = jax.tree_util.tree_map(lambda g: g.at[:3].set(0.0), grads)
      for leaf in jax.tree_util.tree_leaves(out):
        self.assertTrue(np.all(np.isfinite(leaf)))
    self.assertEqual(int(state.num_invalid), 9)
    self.assertTrue(np.all(np.isfinite(state.queue)))
    self.assertEqual(int(state.queue_count), 16)
    self.assertTrue(np.isfinite(float(state.tau)))
    # The invalid examples contribute nothing: same as dropping them.
    weights = np.minimum(1.0, float(state.tau) * np.clip(np.asarray(probs), MIN_PROB, MAX_PROB))
    weights[:3] = 0.0
    expected = jax.tree_util.tree_map(
        lambda g: np.tensordot(weights, np.nan_to_num(np.asarray(g)), axes=1) / 16,
        clean_grads)
    chex.assert_trees_all_close(out, expected, rtol=1e-5, atol=1e-7)

  def test_degenerate_queues(self):
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, update_period=1,
                                    queue_size=64)
    for probs in (jnp.full(64, 0.9), jnp.full(64, 1.0), jnp.full(64, 0.0)):
      weights, state = jax.jit(weighting.update)(probs, weighting.init(),
                                               learning_rate=0.1)
      self.assertEqual(int(state.num_threshold_updates), 1)
      for leaf in jax.tree_util.tree_leaves(state):
        self.assertTrue(np.all(np.isfinite(leaf)))
      # Identical components: no clipping is needed.
      np.testing.assert_allclose(state.p_threshold, MIN_PROB, rtol=1e-6)
      np.testing.assert_array_equal(weights, 1.0)

  def test_batch_larger_than_queue(self):
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, update_period=1,
                                    queue_size=32)
    probs = jnp.asarray(np.random.default_rng(0).uniform(0.01, 1, 100), jnp.float32)
    _, state = jax.jit(weighting.update)(probs, weighting.init(),
                                               learning_rate=0.1)
    ordered = np.roll(np.asarray(state.queue), -int(state.queue_index))
    np.testing.assert_allclose(ordered, -np.log(np.asarray(probs[-32:])), rtol=1e-6)
    self.assertEqual(int(state.num_threshold_updates), 1)


class LowPrecisionTest(parameterized.TestCase):
  """bfloat16 and float16 probabilities: clamp, loss and weights in float32."""

  @parameterized.product(dtype=[jnp.bfloat16, jnp.float16],
                         loss=["cross_entropy", "focal", "generalized_cross_entropy"])
  def test_fused_route_matches_float32(self, dtype, loss):
    base_loss = getattr(losses, loss)
    rng = np.random.default_rng(0)
    # 0.99999 and 1.0 round to 1 in both dtypes; 1e-9 is below MIN_PROB.
    probs = np.concatenate([[1.0, 0.99999, 1.0, 1e-9],
                            rng.uniform(0.001, 0.999, 124)]).astype(np.float32)
    probs = jnp.asarray(probs, dtype)
    weights = jnp.asarray(rng.uniform(0.1, 1.0, 128), jnp.float32)
    objective = lambda p: ogc_jax.weighted_base_loss(base_loss, p, weights)
    loss_low, grad_low = jax.value_and_grad(objective)(probs)
    loss_32, grad_32 = jax.value_and_grad(objective)(probs.astype(jnp.float32))
    self.assertEqual(loss_low.dtype, jnp.float32)
    self.assertEqual(float(loss_low), float(loss_32))
    self.assertTrue(np.all(np.isfinite(np.asarray(grad_low, np.float32))))
    # p = 1 lies above MAX_PROB: no gradient, as in float32 (focal's
    # derivative is infinite at 1, CE's and GCE's would leak).
    np.testing.assert_array_equal(np.asarray(grad_low[:3], np.float32), 0.0)
    # Otherwise the float32 gradient, rounded once to the input dtype.
    np.testing.assert_allclose(np.asarray(grad_low, np.float32), grad_32,
                               rtol=float(jnp.finfo(dtype).eps), atol=0)

  @parameterized.parameters(jnp.bfloat16, jnp.float16)
  def test_per_example_route_reduces_in_float32(self, dtype):
    # Neighbouring probabilities a < b of the dtype, gradients +1 and -1: the
    # mean is (a - b) tau / 2, a difference of weights that the dtype itself
    # rounds away by 25-50%.
    a = jnp.asarray(0.5, dtype)
    b = jnp.nextafter(a, jnp.asarray(1.0, dtype))
    probs = jnp.tile(jnp.stack([a, b]), 32)
    grads = {"w": jnp.tile(jnp.asarray([[1.0], [-1.0]], dtype), (32, 3))}
    transform = ogc_jax.ogc(losses.cross_entropy)
    tau = 1.0 / 3.0  # weight min(1, tau / |l'(p)|) = p / 3
    state = transform.init(None)._replace(tau=jnp.float32(tau))
    out, _ = jax.jit(lambda g, s, p: transform.update(
        g, s, probs=p, learning_rate=0.1))(grads, state, probs)
    self.assertEqual(out["w"].dtype, dtype)
    expected = (float(a) - float(b)) * tau / 2
    np.testing.assert_allclose(np.asarray(out["w"], np.float64), expected,
                               rtol=float(jnp.finfo(dtype).eps))


class TransferGuardTest(absltest.TestCase):

  def test_state_can_be_donated(self):
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, queue_size=16)
    step = jax.jit(lambda s, p: weighting.update(p, s, learning_rate=0.1)[1], donate_argnums=0)
    state = step(weighting.init(), jnp.full((8,), 0.5))
    self.assertEqual(int(state.count), 1)

  def test_jitted_step_has_no_host_transfers_or_callbacks(self):
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, update_period=1,
                                    queue_size=16)
    update = jax.jit(lambda p, s: weighting.update(p, s, learning_rate=0.1))
    state = weighting.init()
    probs = jax.device_put(jnp.linspace(0.01, 1.0, 16))
    update(probs, state)  # compile outside the guard
    with jax.transfer_guard("disallow"):
      _, state = update(probs, state)
      _, state = update(probs, state)
    text = update.lower(probs, state).as_text()
    self.assertNotIn("callback", text)


@pytest.mark.slow
class ShardingTest(absltest.TestCase):

  def test_sharded_batch_equals_single_device(self):
    if jax.device_count() < 8:
      self.skipTest("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    batch_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    base_loss = losses.cross_entropy
    opt = optax.chain(ogc_jax.ogc(base_loss, update_period=2, queue_size=64),
                      optax.sgd(0.1))
    params = init_params()

    def step(params, state, x, y):
      grads, probs = per_example_grads(params, x, y, base_loss)
      updates, state = opt.update(grads, state, params, probs=probs,
                                  learning_rate=0.1)
      return optax.apply_updates(params, updates), state

    single = jax.jit(step)
    sharded = jax.jit(step, in_shardings=(replicated, replicated, batch_sharding,
                                          batch_sharding),
                      out_shardings=(replicated, replicated))
    p1 = p2 = params
    s1 = s2 = opt.init(params)
    for i in range(8):
      x, y = make_batch(i, 32)
      p1, s1 = single(p1, s1, x, y)
      p2, s2 = sharded(p2, s2, jax.device_put(x, batch_sharding),
                       jax.device_put(y, batch_sharding))
    self.assertEqual(len(p2["w"].sharding.device_set), 8)
    # The sharded matmuls round the last bit of p differently, and EM, which
    # stops at a log-likelihood tolerance, amplifies that to ~1e-4 in tau and
    # ~2e-4 in H after a few refits; a per-device view of the batch would be
    # off by orders of magnitude more.
    np.testing.assert_allclose(s1[0].queue, s2[0].queue, rtol=1e-5, atol=3e-4)
    np.testing.assert_allclose(s1[0].tau, s2[0].tau, rtol=2e-3)
    chex.assert_trees_all_close(p1, p2, rtol=1e-3, atol=1e-5)
    self.assertEqual(int(s1[0].queue_count), int(s2[0].queue_count))
    self.assertGreater(int(s2[0].num_threshold_updates), 0)


class ShardMapTest(absltest.TestCase):
  """OGC inside jax.shard_map: the batch split over 4 devices, one queue."""

  def setUp(self):
    super().setUp()
    if jax.device_count() < 4:
      self.skipTest("needs XLA_FLAGS=--xla_force_host_platform_device_count=4")
    self.mesh = Mesh(np.array(jax.devices()[:4]), ("data",))

  def _shard_map(self, f, in_specs, out_specs):
    return jax.jit(jax.shard_map(f, mesh=self.mesh, in_specs=in_specs,
                                 out_specs=out_specs))

  def _put(self, x, spec):
    return jax.device_put(x, NamedSharding(self.mesh, spec))

  def test_per_example_route_equals_one_device(self):
    base_loss = losses.cross_entropy
    make = lambda **kw: optax.chain(
        ogc_jax.ogc(base_loss, learning_rate=0.1, update_period=2,
                    queue_size=64, **kw), optax.sgd(0.1))
    one, many = make(), make(axis_name="data")

    def step(opt, params, state, x, y, axis_name=None):
      # Per-example gradients of this device's examples: the parameters
      # cast to varying, else their gradient is summed over the devices.
      local = (jax.lax.pcast(params, axis_name, to="varying") if axis_name
               else params)
      grads, probs = per_example_grads(local, x, y, base_loss)
      updates, state = opt.update(grads, state, params, probs=probs)
      return optax.apply_updates(params, updates), state

    single = jax.jit(lambda *a: step(one, *a))
    sharded = self._shard_map(lambda *a: step(many, *a, axis_name="data"),
                              (P(), P(), P("data"), P("data")), (P(), P()))
    p1 = p2 = init_params()
    s1, s2 = one.init(p1), many.init(p2)
    for i in range(8):
      x, y = make_batch(i, 32)
      p1, s1 = single(p1, s1, x, y)
      p2, s2 = sharded(p2, s2, self._put(x, P("data")), self._put(y, P("data")))
    self.assertEqual(int(s2[0].num_threshold_updates),
                     int(s1[0].num_threshold_updates))
    self.assertGreater(int(s2[0].num_threshold_updates), 0)
    # The queue holds the whole batch in order, as on one device; the rest
    # agrees to float rounding (the mean is a sum of four partial sums).
    np.testing.assert_allclose(s1[0].queue, s2[0].queue, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s1[0].tau, s2[0].tau, rtol=1e-5)
    chex.assert_trees_all_close(p1, p2, rtol=1e-5, atol=1e-6)
    self.assertEqual(float(s1[0].clipped_fraction),
                     float(s2[0].clipped_fraction))

  def test_fused_route_equals_one_device(self):
    # The pattern of docs/usage.md: each device weighs its own examples and
    # the loss is their mean over the batch axis (pmean), whose gradient
    # with respect to the replicated parameters is the whole batch's.
    base_loss = losses.cross_entropy
    make = lambda **kw: ogc_jax.ogc_weights(
        base_loss, learning_rate=0.1, update_period=2, queue_size=64, **kw)
    one, many = make(), make(axis_name="data")
    opt = optax.sgd(0.1)

    def step(weighting, params, opt_state, state, x, y, axis_name=None):
      def loss_fn(params, state):
        probs = linear_probs(params, x, y)
        weights, state = weighting.update(probs, state)
        loss = ogc_jax.weighted_base_loss(base_loss, probs, weights)
        if axis_name:
          loss = jax.lax.pmean(loss, axis_name)
        return loss, state
      grads, state = jax.grad(loss_fn, has_aux=True)(params, state)
      updates, opt_state = opt.update(grads, opt_state)
      return optax.apply_updates(params, updates), opt_state, state

    single = jax.jit(lambda *a: step(one, *a))
    sharded = self._shard_map(lambda *a: step(many, *a, axis_name="data"),
                              (P(), P(), P(), P("data"), P("data")),
                              (P(), P(), P()))
    p1 = p2 = init_params()
    o1 = o2 = opt.init(p1)
    s1, s2 = one.init(), many.init()
    for i in range(8):
      x, y = make_batch(i, 32)
      p1, o1, s1 = single(p1, o1, s1, x, y)
      p2, o2, s2 = sharded(p2, o2, s2, self._put(x, P("data")),
                           self._put(y, P("data")))
    self.assertEqual(int(s2.num_threshold_updates),
                     int(s1.num_threshold_updates))
    self.assertGreater(int(s2.num_threshold_updates), 0)
    np.testing.assert_allclose(s1.queue, s2.queue, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s1.tau, s2.tau, rtol=1e-5)
    chex.assert_trees_all_close(p1, p2, rtol=1e-5, atol=1e-6)

  def test_a_queue_per_device_is_refused(self):
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, learning_rate=0.1,
                                    queue_size=64)
    probs = self._put(jnp.linspace(0.1, 0.9, 32), P("data"))
    update = lambda p, s: weighting.update(p, s)
    with pytest.raises(ValueError, match=r"vary over the mesh axes \['data'\]"
                       r".*axis_name='data'"):
      self._shard_map(update, (P("data"), P()), (P("data"), P()))(
          probs, weighting.init())
    wrong_axis = ogc_jax.ogc_weights(losses.cross_entropy, learning_rate=0.1,
                                     queue_size=64, axis_name="batch")
    with pytest.raises(ValueError, match="`axis_name` 'batch' is not an axis"):
      self._shard_map(lambda p, s: wrong_axis.update(p, s),
                      (P("data"), P()), (P("data"), P()))(
                          probs, wrong_axis.init())


class OptaxConventionsTest(absltest.TestCase):

  def test_ogc_weights_in_a_chain_fails_at_the_first_update(self):
    # OGCWeights has init and update; optax.chain takes it, and with one
    # array of parameters returned the weights as the updates.
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, learning_rate=0.1)
    opt = optax.chain(weighting, optax.sgd(0.1))
    params = jnp.zeros([8])
    state = opt.init(params)
    for args in ((jnp.full([8], 0.5), state), (jnp.full([8], 0.5), state,
                                               params)):
      with pytest.raises(ValueError, match=r"optax.chain passes.*use `ogc"):
        opt.update(*args)

  def test_inject_hyperparams_compiles_the_refit_once(self):
    make = optax.inject_hyperparams(
        ogc_jax.ogc, static_args=("base_loss", "update_period", "queue_size"))
    transform = make(base_loss=losses.cross_entropy, epsilon=20.0,
                     update_period=1, queue_size=8, learning_rate=0.1)
    state = transform.init(None)
    grads = {"w": jnp.ones((8, 3))}
    probs = two_mode_probs(np.random.default_rng(0), 8)
    fits = []
    real_fit = transform_lib.fit_gmm
    with mock.patch.object(transform_lib, "fit_gmm",
                           lambda *a, **k: fits.append(1) or real_fit(*a, **k)):
      for _ in range(3):  # eager: a refit is due at each
        _, state = transform.update(grads, state, probs=probs)
    self.assertEqual(int(state.inner_state.num_threshold_updates), 3)
    self.assertLessEqual(len(fits), 1)  # traced once at most, not per update

  def test_inject_hyperparams_without_static_args_names_them(self):
    make = optax.inject_hyperparams(ogc_jax.ogc, static_args=("base_loss",))
    with pytest.raises(ValueError, match=r"`update_period` must be a Python"
                       r" integer.*static_args=\('base_loss', 'update_period',"
                       r" 'queue_size'\)"):
      make(base_loss=losses.cross_entropy, update_period=4,
           queue_size=32).init(None)

  def test_counters_saturate(self):
    top = np.iinfo(np.int32).max
    weighting = ogc_jax.ogc_weights(losses.cross_entropy, update_period=1,
                                    queue_size=8, learning_rate=0.1)
    probs = two_mode_probs(np.random.default_rng(0), 8)
    state = weighting.init()._replace(num_threshold_updates=jnp.int32(top))
    _, state = jax.jit(weighting.update)(probs, state)
    self.assertEqual(int(state.num_threshold_updates), top)
    rejecting = ogc_jax.ogc_weights(losses.cross_entropy, update_period=1,
                                    queue_size=8)
    state = rejecting.init()._replace(num_rejected_refits=jnp.int32(top))
    _, state = jax.jit(rejecting.update)(probs, state,
                                         learning_rate=jnp.float32(jnp.nan))
    self.assertEqual(int(state.num_rejected_refits), top)

  def test_weighted_base_loss_checks_the_weights_shape(self):
    probs = jnp.linspace(0.1, 0.9, 32)
    with pytest.raises(ValueError, match=r"`weights` of the shape of `probs`"
                       r" \(32,\).*got \(32, 1\)"):
      ogc_jax.weighted_base_loss(losses.cross_entropy, probs,
                                 jnp.ones((32, 1)))
    with pytest.raises(ValueError, match="1-D"):
      ogc_jax.weighted_base_loss(losses.cross_entropy, probs[:, None],
                                 jnp.ones((32, 1)))


if __name__ == "__main__":
  absltest.main()
