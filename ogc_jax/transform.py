"""Optimized Gradient Clipping as optax transformations.

Two routes to the same update, sharing one state:

* `ogc` is an ``optax.GradientTransformationExtraArgs`` that takes per-example
  gradients (leading batch axis) and the extra argument ``probs``, and returns
  the mean of the clipped per-example gradients.
* `ogc_weights` is the fused route for large models: it observes ``probs``,
  advances the same state and returns stop-gradient per-example weights, so
  that ``grad(weighted_base_loss(base_loss, probs, weights))`` equals `ogc`'s
  output without per-example gradients ever being materialised.

Clipping |dl/dp| at tau scales each example's parameter gradient by
``min(1, tau / |l'(p)|)``; that factor is the example's weight.

Whatever the dtype of ``probs`` (bfloat16 or float16 included), the clamp to
[MIN_PROB, MAX_PROB], the base loss, the weights and the batch mean are
computed in float32: in bfloat16 MAX_PROB would round to 1, where the
derivative of some base losses is infinite.
"""

import functools
import numbers
from typing import Any, Callable, NamedTuple, Optional, Protocol, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ogc_jax.gmm import (DEFAULT_FIT, FITS, FIXED_POINT_FITS, GMM,
                         THRESHOLD_FITS, Fit, fit_gmm)
from ogc_jax.threshold import (MAX_PROB, MIN_PROB, check_epsilon,
                               check_learning_rate, derivative_magnitude,
                               feasible_probability, noise_to_clean_ratio,
                               solve_threshold)

# Where `ogc` goes in a chain, said by every error that misplacement causes.
PLACEMENT = (
    "OGC goes first in the chain, on the per-example gradients, and outside"
    " optax.MultiSteps and optax.apply_if_finite (which would average or test"
    " the per-example gradients): e.g. optax.chain(ogc(...),"
    " optax.apply_if_finite(optax.sgd(lr), 5)), or with gradient accumulation"
    " optax.chain(ogc(...), optax.MultiSteps(opt, k).gradient_transformation())"
    " (see the docstring of ogc_jax.ogc).")


class OGCState(NamedTuple):
  """State of Optimized Gradient Clipping.

  Attributes:
    count: number of updates so far (batches seen; micro-batches under
      ``optax.MultiSteps``); refits fall on multiples of ``update_period``.
    queue: ring buffer of the last ``queue_size`` values of H = -log p.
    queue_index: where the next H is written.
    queue_count: number of valid entries in the queue (at most its size).
    tau: the current gradient threshold on |l'(p)|.
    p_threshold: the current probability threshold (tau = |l'(p_threshold)|).
    gmm: the last fitted mixture (all zeros before the first fit).
    noise_to_clean_ratio: R(tau) reached at the last fit.
    num_threshold_updates: how many refits have set the threshold.
    clipped_fraction: fraction of the last batch's valid examples clipped.
    num_invalid: non-finite or out-of-range probabilities seen so far; they
      are kept out of the queue and their examples get weight 0.
    num_rejected_refits: refits whose mixture, threshold or ratio was not
      finite (e.g. a base loss whose derivative is NaN for some p); each
      kept the previous tau, p_threshold and mixture.
  """
  count: chex.Array
  queue: chex.Array
  queue_index: chex.Array
  queue_count: chex.Array
  tau: chex.Array
  p_threshold: chex.Array
  gmm: GMM
  noise_to_clean_ratio: chex.Array
  num_threshold_updates: chex.Array
  clipped_fraction: chex.Array
  num_invalid: chex.Array
  num_rejected_refits: chex.Array


class WeightsUpdateFn(Protocol):
  """``update`` of the fused route (`ogc_weights`)."""

  def __call__(
      self, probs: chex.Array, state: OGCState, *,
      learning_rate: Optional[chex.Numeric] = None
  ) -> tuple[chex.Array, OGCState]:
    """Observes ``probs``, advances ``state``; returns ``(weights, state)``."""


class OGCWeights(NamedTuple):
  """The fused route: ``init(params=None) -> state`` and
  ``update(probs, state, *, learning_rate=None) -> (weights, state)``.

  Not an optax transformation: its ``update`` takes the batch's
  probabilities, not gradients, and its rate only by keyword, so that put
  into an ``optax.chain`` (which calls ``update(updates, state, params)``)
  it fails at the first update with an error that says to use `ogc`.
  """
  init: Callable[..., OGCState]
  update: WeightsUpdateFn


def _check_probs(probs, not_an_array_hint=""):
  if not hasattr(probs, "shape") or not hasattr(probs, "dtype"):
    raise ValueError(f"OGC expects `probs` to be an array, got {type(probs)}."
                     + not_an_array_hint)
  if probs.ndim != 1:
    raise ValueError(
        "OGC expects `probs` to be 1-D, the probability of each example's label"
        f" (shape [batch]), got shape {probs.shape}.")
  if not jnp.issubdtype(probs.dtype, jnp.floating):
    raise ValueError(
        f"OGC expects `probs` to be floating point, got dtype {probs.dtype}.")


def _check_positive_integer(name, value, minimum):
  if isinstance(value, (jax.Array, jax.core.Tracer)):
    raise ValueError(
        f"`{name}` must be a Python integer (it sets the shape of the queue"
        f" and the refit schedule), got the array {value!r}. Under"
        " optax.inject_hyperparams name it static: inject_hyperparams(ogc,"
        " static_args=('base_loss', 'update_period', 'queue_size')).")
  # bool is an int in Python, but update_period=True is a mistake.
  if (not isinstance(value, (numbers.Integral, np.integer))
      or isinstance(value, (bool, np.bool_)) or value < minimum):
    raise ValueError(
        f"`{name}` must be an integer >= {minimum}, got {value!r}"
        f" ({type(value).__name__}).")


# Where `_check_base_loss` evaluates |l'(p)|: log-spaced towards both ends
# of the feasible range, where losses break (log 0, a 0 ** negative power).
_CHECK_GRID = np.unique(np.concatenate([
    np.geomspace(MIN_PROB, 0.5, 200), 1.0 - np.geomspace(0.5, 1.0 - MAX_PROB, 200)
]).astype(np.float32))
# |l'| may rise by float32 rounding between neighbouring points, no more.
_CHECK_RTOL = 1e-4


def _per_construction_cache(fn):
  """``fn`` remembered per arguments, where they are hashable.

  ``optax.inject_hyperparams`` builds the transformation anew at every
  update: what a construction derives from its base loss (the check of it,
  the refit's cond branches) is derived once. A call that raises is not
  remembered; unhashable arguments (a callable object without ``__hash__``)
  are derived at every construction.
  """
  cached = functools.lru_cache(maxsize=64)(fn)

  @functools.wraps(fn)
  def remembered(*args):
    try:
      hash(args)
    except TypeError:
      return fn(*args)
    return cached(*args)

  return remembered


@_per_construction_cache
def _check_base_loss(base_loss):
  """|l'(p)| must be finite and non-increasing over [MIN_PROB, MAX_PROB].

  OGC clips |l'(p)| at tau = |l'(p_threshold)| and solves for p_threshold
  by bisection, which holds only if |l'| falls as p grows; a NaN derivative
  (e.g. the gradient of a ``jnp.where`` whose other branch is NaN) would
  make tau NaN from the start.
  """
  if not callable(base_loss):
    raise ValueError(f"`base_loss` must be a function of p, got {base_loss!r}.")
  p = _CHECK_GRID
  try:
    with jax.ensure_compile_time_eval():
      g = derivative_magnitude(base_loss, jnp.asarray(p))
  except (TypeError, ValueError) as e:
    raise ValueError(
        "`base_loss` must map a scalar probability p to a scalar loss,"
        f" differentiably; jax.grad(base_loss) failed: {e}") from None
  if isinstance(g, jax.core.Tracer):
    return  # closes over traced values: nothing concrete to check
  g = np.asarray(g, np.float64)
  rule = ("|l'(p)| of `base_loss` must be finite and non-increasing on"
          f" [{MIN_PROB}, 1 - {1 - MAX_PROB:.0e}] (OGC clips it at"
          " tau = |l'(p_threshold)|)")
  bad = np.flatnonzero(~np.isfinite(g))
  if bad.size:
    i = bad[0]
    raise ValueError(f"{rule}; at p = {p[i]:.6g} it is {g[i]}.")
  rises = np.flatnonzero(g[1:] > g[:-1] * (1 + _CHECK_RTOL))
  if rises.size:
    i = rises[0]
    raise ValueError(
        f"{rule}; it rises from {g[i]:.6g} at p = {p[i]:.6g} to"
        f" {g[i + 1]:.6g} at p = {p[i + 1]:.6g}.")


# Said when neither the construction nor the update gives a rate.
_MISSING_LEARNING_RATE = (
    "OGC needs the optimizer's learning rate: give the same rate or schedule"
    " as the optimizer once, `ogc(base_loss, learning_rate=schedule)` or"
    " `ogc_weights(base_loss, learning_rate=schedule)`, or the rate the"
    " optimizer applies now at every update, `update(..., probs=p,"
    " learning_rate=lr)` (per-example route) or `update(probs, state, learning_rate=lr)`"
    " (fused route).")


def _check_schedule(learning_rate):
  """At construction: None, a schedule (callable), or a scalar rate >= 0."""
  if learning_rate is not None and not callable(learning_rate):
    check_learning_rate(learning_rate)



def _valid(probs):
  """Probabilities OGC accepts: finite and inside [0, 1]."""
  return jnp.isfinite(probs) & (probs >= 0) & (probs <= 1)


def _feasible(probs, valid):
  """Clamps to [MIN_PROB, MAX_PROB]; invalid entries become a harmless 1."""
  return feasible_probability(jnp.where(valid, probs, 1.0))


def _keep(state, learning_rate, epsilon):
  """The branch of a step that does not refit: the state as it is."""
  del learning_rate, epsilon
  return state


def _cond_under_vmap(refit):
  """``lax.cond(due, refit, keep)`` that stays a cond under ``jax.vmap``.

  Under ``vmap`` a cond whose predicate is batched becomes a select that
  runs both branches, so runs trained together along a vmapped axis (e.g.
  several seeds in one program) would refit at every step. Such runs fall
  due on the same steps, so the batched rule refits all of them under one
  cond when any is due, and keeps the previous state of those that are not.
  """
  # One function object for each branch, made once: lax.cond caches its
  # compilation by the branches' identity, so a new lambda per call would
  # compile the cond again at every eager (un-jitted) update.
  batched_refit = jax.vmap(refit)

  @jax.custom_batching.custom_vmap
  def maybe_refit(due, state, lr, epsilon):
    return jax.lax.cond(due, refit, _keep, state, lr, epsilon)

  @maybe_refit.def_vmap
  def batched(axis_size, in_batched, due, state, lr, epsilon):
    def broadcast(x, is_batched):
      return x if is_batched else jnp.broadcast_to(x, (axis_size,) + x.shape)
    due, state, lr, epsilon = jax.tree_util.tree_map(
        broadcast, (due, state, lr, epsilon), tuple(in_batched))
    fitted = jax.lax.cond(jnp.any(due), batched_refit, _keep, state, lr,
                          epsilon)
    out = jax.tree_util.tree_map(
        lambda new, old: jnp.where(
            due.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
        fitted, state)
    return out, jax.tree_util.tree_map(lambda _: True, out)

  return maybe_refit


@_per_construction_cache
def _refit_rule(base_loss, fit):
  """``maybe_refit(due, state, lr, epsilon)``: refits under ``lax.cond``.

  One per base loss and fit: ``lax.cond`` caches its compilation by the
  identity of its branches, so new branches at every construction compiled
  the refit again at every eager update under ``inject_hyperparams``
  (seconds). The rate and epsilon are operands, not constants.
  """

  def refit(state: OGCState, lr, epsilon):
    # The fixed-point fits start warm: the last fit is one more candidate
    # start of EM. The published one starts from the two-means split every
    # time. The conservative fit chooses by OGC's own threshold.
    threshold_of = None
    if fit in THRESHOLD_FITS:
      threshold_of = lambda g: solve_threshold(g, base_loss, lr, epsilon)[0]
    gmm = fit_gmm(state.queue,
                  init=state.gmm if fit in FIXED_POINT_FITS else None,
                  fit=fit, threshold_of=threshold_of)
    p_threshold, tau = solve_threshold(gmm, base_loss, lr, epsilon)
    fitted = dict(gmm=gmm, p_threshold=p_threshold, tau=tau,
                  noise_to_clean_ratio=noise_to_clean_ratio(gmm, base_loss,
                                                            p_threshold))
    # A fit or solve that is not finite keeps the previous threshold; so
    # does a traced rate or epsilon that is NaN, infinite or negative, for
    # which solve_threshold gives NaN.
    accepted = jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(fitted)]))
    previous = {k: getattr(state, k) for k in fitted}
    kept = jax.tree_util.tree_map(
        lambda new, old: jnp.where(accepted, new, old), fitted, previous)
    return state._replace(
        **kept,
        num_threshold_updates=jnp.where(
            accepted, optax.safe_increment(state.num_threshold_updates),
            state.num_threshold_updates),
        num_rejected_refits=jnp.where(
            accepted, state.num_rejected_refits,
            optax.safe_increment(state.num_rejected_refits)))

  return _cond_under_vmap(refit)


def _gather(x, axis_name):
  """``x`` of every device along ``axis_name``, concatenated in their order.

  A psum of each device's block in place, so that the result is the same
  on every device and typed so (invariant) under ``jax.shard_map``'s
  checks, which ``lax.all_gather``'s is not.
  """
  size = jax.lax.psum(1, axis_name)
  blocks = jnp.zeros((size,) + x.shape, x.dtype).at[
      jax.lax.axis_index(axis_name)].set(x)
  return jax.lax.psum(blocks, axis_name).reshape((-1,) + x.shape[1:])


def _varying_axes(x):
  """The mesh axes over which ``x`` varies inside ``jax.shard_map``."""
  manual = getattr(jax.typeof(x), "manual_axis_type", None)
  return sorted(getattr(manual, "varying", ()))


AxisName = Union[str, tuple[str, ...]]


def ogc_weights(base_loss: Callable[[chex.Array], chex.Array],
                *,
                learning_rate: Optional[optax.ScalarOrSchedule] = None,
                epsilon: chex.Numeric = 20.0,
                update_period: int = 32,
                queue_size: int = 4096,
                fit: Fit = DEFAULT_FIT,
                axis_name: Optional[AxisName] = None) -> OGCWeights:
  """Optimized Gradient Clipping as per-example weights (the fused route).

  Each call of ``update(probs, state)`` pushes H = -log p of the batch into
  the queue, and every ``update_period`` calls, once the queue is full,
  refits the two-component mixture and re-solves the threshold (under
  ``lax.cond``, so the other steps pay nothing). It returns the
  stop-gradient weights ``min(1, tau / |l'(p)|)`` (0 for invalid
  probabilities) and the new state. Use them in the loss with
  `weighted_base_loss`: the gradient of that loss is the OGC update, at the
  memory cost of plain training.

  The target ratio is ``1 + learning_rate * epsilon`` with the rate the
  optimizer applies at that step. Give OGC the rate or schedule you give the
  optimizer, once, here: a schedule is evaluated at OGC's step,
  ``state.count`` before the update (the step index ``optax.sgd(schedule)``
  uses: both count from 0 at ``init``). Where OGC's step is not the
  optimizer's (OGC before ``optax.MultiSteps``, which counts micro-batches),
  or the rate is not a schedule of the step (``reduce_on_plateau``, a rate
  set by hand in an ``optax.inject_hyperparams`` state), give the rate the
  optimizer applies now to each update instead:
  ``update(probs, state, learning_rate=lr)``, which overrides the one given
  here. With an adaptive optimizer (Adam) the
  rate is OGC's own eta; under AdamW an eta between 0.001 and 0.03 (AdamW's
  usual 1e-3 included) worked, 0.1 and above clipped too little.

  A refit whose mixture, threshold or ratio is not finite, or whose rate or
  ``epsilon`` is NaN, infinite or negative (possible only when traced: a
  concrete one is refused), keeps the previous ones and counts in
  ``state.num_rejected_refits``, so NaN never enters the state and a bad
  rate never clips everything. An empty batch (``probs`` of shape ``[0]``)
  returns no weights and the state unchanged (``count`` included, so a
  schedule given here lags an optimizer that counted that update).

  Inside ``jax.shard_map`` over a batch split along a mesh axis, give that
  axis as ``axis_name``: each device passes its own examples' ``probs`` and
  gets their weights, while the queue, the refits and the state hold the
  whole batch, in the devices' order, the same on every device, as on one
  device (``docs/usage.md`` shows the pattern). Without it, ``probs`` that
  vary over a mesh axis are refused (under ``check_vma=False`` they cannot
  be told apart, and each device would keep a queue of its own examples).

  Args:
    base_loss: elementwise, differentiable base loss of p, e.g.
      `ogc_jax.losses.cross_entropy`; |l'(p)| must be finite and
      non-increasing in p on [1e-7, 1 - 1e-7], which is checked here on a
      grid of 400 points.
    learning_rate: the optimizer's learning rate, an ``optax.ScalarOrSchedule``
      (the same float or schedule as the optimizer's), or None to give the
      rate to every ``update``.
    epsilon: the method's epsilon, a finite scalar >= 0, a float or an array
      (so that ``optax.inject_hyperparams`` may make it a hyperparameter).
    update_period: refit the threshold every this many updates (s), an
      integer >= 1; updates count the batches OGC sees (micro-batches when
      the optimizer accumulates them with ``optax.MultiSteps``).
    queue_size: number of recent H values the mixture is fitted to (q), an
      integer >= 2.
    fit: how the mixture is fitted at each refit (`ogc_jax.fit_gmm`):
      ``"published"`` (the default), the authors' code: at most 10 EM steps
      from the two-means split of the queue; ``"converged"``, EM to its
      most likely fixed point, warm-started from the previous fit; or
      ``"conservative"``, of the same fixed points the ordered one (noise
      posterior rising with the loss) whose threshold, solved at the step's
      rate and epsilon, is the tightest.
    axis_name: inside ``jax.shard_map`` (or ``pmap``), the mesh axis or
      axes the batch is split along; None outside.

  Returns:
    An `OGCWeights` of pure functions ``init(params=None)`` and
    ``update(probs, state, *, learning_rate=None)``, whose ``learning_rate``,
    a scalar >= 0 (may be traced, keyword only), overrides the one given
    here.

  Raises:
    ValueError: for an argument outside the choices above (at construction;
      for ``base_loss``, naming the first p where |l'(p)| is not finite or
      rises, and its value), and at trace time for ``probs`` that are not a
      1-D floating array or vary over a mesh axis not named in
      ``axis_name``, for a third positional argument of ``update`` (what
      ``optax.chain`` passes: use `ogc` in a chain), for an ``axis_name``
      that is not bound, and for a learning rate that is given nowhere, not
      a scalar, or (when concrete) negative or not finite.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from ogc_jax import losses, ogc_weights, weighted_base_loss
    >>> schedule = optax.cosine_decay_schedule(0.1, decay_steps=100)
    >>> weighting = ogc_weights(losses.cross_entropy, learning_rate=schedule)
    >>> opt = optax.sgd(schedule)  # the same schedule
    >>> params = jnp.zeros((3, 4))
    >>> opt_state, state = opt.init(params), weighting.init()
    >>> x, y = jnp.ones((8, 3)), jnp.arange(8) % 4
    >>> def loss_fn(params, state):
    ...   logits = x @ params
    ...   p = jnp.take_along_axis(jax.nn.softmax(logits), y[:, None], 1)[:, 0]
    ...   weights, state = weighting.update(p, state)  # schedule(state.count)
    ...   return weighted_base_loss(losses.cross_entropy, p, weights), state
    >>> (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    ...     params, state)
    >>> updates, opt_state = opt.update(grads, opt_state)
    >>> print(f"{float(loss):.4f}", int(state.count))
    1.3863 1

  References:
    Ye et al., `Optimized Gradient Clipping for Noisy Label Learning
    <https://arxiv.org/abs/2412.08941>`_, AAAI 2025.
  """
  _check_positive_integer("update_period", update_period, 1)
  _check_positive_integer("queue_size", queue_size, 2)
  if fit not in FITS:
    raise ValueError(f"`fit` must be one of {FITS}, got {fit!r}.")
  check_epsilon(epsilon)
  _check_schedule(learning_rate)
  _check_base_loss(base_loss)
  # Optax's schedules take the step count as it is; a float is a constant.
  schedule = learning_rate if callable(learning_rate) else (
      None if learning_rate is None else lambda count: learning_rate)

  def init(params: Any = None) -> OGCState:
    del params
    # A fresh buffer per field, so that a step may donate the state.
    zero = lambda dtype=jnp.float32: jnp.zeros([], dtype)
    p_threshold = jnp.asarray(MIN_PROB, jnp.float32)  # no clipping yet
    return OGCState(
        count=zero(jnp.int32),
        queue=jnp.zeros([queue_size], jnp.float32),
        queue_index=zero(jnp.int32),
        queue_count=zero(jnp.int32),
        tau=derivative_magnitude(base_loss, p_threshold),
        p_threshold=p_threshold,
        gmm=GMM(mean_clean=zero(), var_clean=zero(), mean_noisy=zero(),
                var_noisy=zero(), weight_noisy=zero()),
        noise_to_clean_ratio=zero(),
        num_threshold_updates=zero(jnp.int32),
        clipped_fraction=zero(),
        num_invalid=zero(jnp.int32),
        num_rejected_refits=zero(jnp.int32))

  def push(state: OGCState, h, valid):
    """Appends the valid H values to the ring buffer, oldest first."""
    n_valid = jnp.sum(valid, dtype=jnp.int32)
    rank = jnp.cumsum(valid, dtype=jnp.int32) - 1  # order among valid entries
    # Of more than queue_size new values only the last queue_size survive;
    # dropping the rest up front keeps the scatter free of duplicate indices.
    keep = valid & (rank >= n_valid - queue_size)
    position = jnp.where(keep, (state.queue_index + rank) % queue_size,
                         queue_size)  # out of bounds: dropped
    queue = state.queue.at[position].set(h, mode="drop")
    return state._replace(
        queue=queue,
        queue_index=(state.queue_index + n_valid) % queue_size,
        queue_count=jnp.minimum(state.queue_count + n_valid, queue_size))

  maybe_refit = _refit_rule(base_loss, fit)

  def current_rate(state: OGCState, learning_rate):
    """The update's own rate, else the construction's at OGC's step."""
    if learning_rate is not None:
      return check_learning_rate(learning_rate)
    if schedule is None:
      raise ValueError(_MISSING_LEARNING_RATE)
    return check_learning_rate(
        schedule(state.count),
        "`learning_rate` (the construction's, at this step)")

  def whole_batch(probs):
    """The probabilities of every device's examples, or ``probs`` itself."""
    if axis_name is None:
      varying = _varying_axes(probs)
      if varying:
        raise ValueError(
            f"OGC got `probs` that vary over the mesh axes {varying} (inside"
            " jax.shard_map): give that axis as `axis_name`, e.g."
            f" ogc_weights(..., axis_name={varying[0]!r}), so that the queue"
            " holds the whole batch rather than each device's part.")
      return probs
    try:
      return _gather(probs, axis_name)
    except NameError as e:
      raise ValueError(
          f"OGC's `axis_name` {axis_name!r} is not an axis of the surrounding"
          " jax.shard_map (or pmap); give the mesh axis the batch is split"
          f" along, or None outside one ({e}).") from None

  def update(probs: chex.Array, state: OGCState, *args,
             learning_rate: Optional[chex.Numeric] = None):
    if args:
      raise ValueError(
          "`ogc_weights(...).update(probs, state, *, learning_rate=None)`"
          f" got {2 + len(args)} positional arguments. The rate is given by"
          " keyword; a third positional argument is what optax.chain passes"
          " (params): `ogc_weights(...)` is not an optax transformation, its"
          " `update` takes the batch's probabilities and gives weights for"
          " the loss (`weighted_base_loss`). In an optax.chain, on"
          " per-example gradients, use `ogc(...)`.")
    _check_probs(probs, not_an_array_hint=(
        " `ogc_weights(...)` is not an optax transformation: its `update`"
        " takes the batch's probabilities and gives weights for the loss"
        " (`weighted_base_loss`). In an optax.chain, on per-example"
        " gradients, use `ogc(...)`."))
    lr = current_rate(state, learning_rate)
    if probs.shape[0] == 0:  # static: an empty batch changes nothing
      return jnp.zeros([0], jnp.float32), state
    probs = jax.lax.stop_gradient(probs).astype(jnp.float32)
    valid = _valid(probs)
    p = _feasible(probs, valid)
    # The queue and the state see the whole batch (over devices).
    all_probs = whole_batch(probs)
    all_valid, all_p = valid, p
    if axis_name is not None:
      all_valid = _valid(all_probs)
      all_p = _feasible(all_probs, all_valid)

    state = push(state, -jnp.log(all_p), all_valid)
    count = optax.safe_increment(state.count)
    due = (count % update_period == 0) & (state.queue_count == queue_size)
    state = maybe_refit(due, state, lr, jnp.asarray(epsilon, jnp.float32))

    g = derivative_magnitude(base_loss, p)
    weights = jnp.where(valid, jnp.minimum(1.0, state.tau / g), 0.0)
    all_g = g if axis_name is None else derivative_magnitude(base_loss, all_p)
    n_valid = jnp.sum(all_valid, dtype=jnp.int32)
    clipped = (jnp.sum(all_valid & (all_g > state.tau))
               / jnp.maximum(n_valid, 1))
    # Saturates at the int32 maximum rather than wrapping round, like
    # optax.safe_increment.
    n_invalid = jnp.minimum(all_probs.shape[0] - n_valid,
                            jnp.iinfo(jnp.int32).max - state.num_invalid)
    state = state._replace(
        count=count, clipped_fraction=clipped.astype(jnp.float32),
        num_invalid=state.num_invalid + n_invalid)
    return jax.lax.stop_gradient(weights), state

  return OGCWeights(init=init, update=update)


def weighted_base_loss(base_loss: Callable[[chex.Array], chex.Array],
                       probs: chex.Array, weights: chex.Array) -> chex.Array:
  """The fused OGC objective: mean over the batch of ``weight * l(p)``.

  Probabilities are cast to float32 and clamped to the feasible range
  [1e-7, 1 - 1e-7] (as the method does), and invalid ones (non-finite or
  outside [0, 1]), whose weight is 0, are replaced before the loss so they
  contribute neither value nor gradient. The loss is float32 whatever the
  dtype of ``probs``; an empty batch gives a loss of 0 (and zero gradients).

  Args:
    base_loss: the elementwise base loss of p.
    probs: ``[batch]`` probabilities of the given labels (differentiable).
    weights: ``[batch]`` weights from `ogc_weights` (stop-gradient).

  Returns:
    The float32 scalar loss whose gradient is the OGC update (inside
    ``jax.shard_map``, the mean over this device's examples: take its
    ``jax.lax.pmean`` over the batch axis before differentiating).

  Raises:
    ValueError: for ``probs`` that are not 1-D, or ``weights`` of another
      shape (which would broadcast into a [batch, batch] mean).
  """
  _check_probs(probs)
  if jnp.shape(weights) != probs.shape:
    raise ValueError(
        f"weighted_base_loss expects `weights` of the shape of `probs`"
        f" {probs.shape}, one per example, got {jnp.shape(weights)}.")
  if probs.shape[0] == 0:
    return jnp.zeros([], jnp.float32)
  probs = probs.astype(jnp.float32)
  valid = _valid(probs)
  weights = weights.astype(jnp.float32)
  return jnp.mean(jnp.where(valid, weights * base_loss(_feasible(probs, valid)), 0.0))


def _check_per_example(updates, params, probs):
  """Every leaf of ``updates`` is (batch,) + its parameter's shape.

  The batch is the leaves' common first axis; ``probs`` must have one entry
  per example. Given ``params`` (of the same tree), a leaf must also have
  its parameter's shape after the batch axis, which tells apart gradients
  already averaged over the batch, even ones whose first axis happens to
  equal the batch size.
  """
  leaves = jax.tree_util.tree_leaves_with_path(updates)
  if (params is not None and jax.tree_util.tree_structure(params)
      == jax.tree_util.tree_structure(updates)):
    for (path, leaf), param in zip(leaves, jax.tree_util.tree_leaves(params)):
      if leaf.shape[1:] != jnp.shape(param):
        raise ValueError(
            "OGC expects `updates` to be per-example gradients, of shape"
            " (batch,) + the parameter's shape; leaf"
            f" {jax.tree_util.keystr(path)} has shape {leaf.shape} for a"
            f" parameter of shape {jnp.shape(param)}. Gradients already"
            " averaged over the batch (jax.grad of the mean loss) cannot be"
            " clipped per example: take jax.vmap(jax.grad(loss of one"
            f" example)). {PLACEMENT}")
  batch = probs.shape[0]
  firsts = {leaf.shape[0] for _, leaf in leaves if leaf.ndim}
  if len(firsts) == 1 and all(leaf.ndim for _, leaf in leaves):
    (first,) = firsts
    if first != batch:
      raise ValueError(
          "OGC expects `probs` to hold one probability per example: the"
          f" per-example gradients `updates` have a batch of {first} (the 0th"
          f" axis of every leaf), `probs` has shape {probs.shape}.")
    return
  for path, leaf in leaves:
    if leaf.ndim == 0 or leaf.shape[0] != batch:
      raise ValueError(
          "OGC expects `updates` to be per-example gradients with the batch"
          f" ({batch}, the length of `probs`) in the 0th axis; leaf"
          f" {jax.tree_util.keystr(path)} has shape {leaf.shape}. {PLACEMENT}")


def ogc(base_loss: Callable[[chex.Array], chex.Array],
        *,
        learning_rate: Optional[optax.ScalarOrSchedule] = None,
        epsilon: chex.Numeric = 20.0,
        update_period: int = 32,
        queue_size: int = 4096,
        fit: Fit = DEFAULT_FIT,
        axis_name: Optional[AxisName] = None
        ) -> optax.GradientTransformationExtraArgs:
  """Optimized Gradient Clipping of per-example gradients.

  .. warning::
    Like ``optax.contrib.differentially_private_aggregate``, this transform
    expects per-example gradients: every leaf of ``updates`` has the batch in
    its 0th axis, and ``update`` needs the keyword argument ``probs`` of shape
    ``[batch]``, the predicted probability of each example's given label. It
    returns the mean over the batch of the clipped gradients. For large
    models use the fused route `ogc_weights`, which gives the same update
    without per-example gradients.

  .. warning::
    OGC goes first in a chain: the transforms before it would see, and
    those that keep state would store, per-example gradients. Put it outside
    ``optax.MultiSteps`` (which would average per-example gradients over
    micro-batches) and outside ``optax.apply_if_finite`` (whose rejected
    branch returns gradients of the per-example shape): wrap the optimizer
    after it instead, ``optax.chain(ogc(...), optax.apply_if_finite(opt, 5))``.
    Inside ``MultiSteps`` OGC fails with a ``ValueError`` that says so; inside
    ``apply_if_finite`` optax's ``lax.cond`` fails on the branches' shapes.

  Every step pushes H = -log p into a queue; every ``update_period`` steps,
  once the queue is full, a two-component Gaussian mixture is refitted to the
  queue (`fit_gmm`) and the threshold re-solved (`solve_threshold`) so that
  the noise-to-clean ratio of expected clipped gradients equals
  ``1 + learning_rate * epsilon``. Each example's gradient is then scaled by
  ``min(1, tau / |l'(p)|)``. Examples with non-finite or out-of-range
  probabilities contribute no gradient and stay out of the queue. The mean is
  accumulated in float32 and returned in the dtype of each gradient leaf. An
  empty batch gives a zero update and leaves the state unchanged.

  Give ``learning_rate`` the optimizer's own rate or schedule, the same
  object: ``optax.chain(ogc(loss, learning_rate=schedule), optax.sgd(schedule))``.
  A schedule is evaluated at OGC's step, ``state.count`` before the update,
  which is ``optax.sgd``'s step. Where the optimizer's rate is not that
  schedule at that step (OGC before ``optax.MultiSteps``, whose step is
  every k-th of OGC's; ``reduce_on_plateau``; a rate set by hand in an
  ``optax.inject_hyperparams`` state), give ``update`` the rate the
  optimizer applies now instead, ``learning_rate=lr``; it overrides the
  construction's. See `ogc_weights` for adaptive optimizers.

  Args:
    base_loss: elementwise, differentiable base loss of p; the per-example
      gradients must be those of ``base_loss(p)``.
    learning_rate: the optimizer's learning rate, an ``optax.ScalarOrSchedule``
      (the same float or schedule as the optimizer's), or None to give the
      rate to every ``update``.
    epsilon: the method's epsilon, a finite scalar >= 0 (float or array).
    update_period: refit every this many updates (s), an integer >= 1
      (micro-batches under ``optax.MultiSteps``).
    queue_size: queue length (q), an integer >= 2.
    fit: the mixture fit at each refit, ``"published"`` (the default),
      ``"converged"`` or ``"conservative"`` (see `ogc_weights`).
    axis_name: inside ``jax.shard_map``, the mesh axis or axes the batch is
      split along (see `ogc_weights`); the update is then the mean over
      every device's examples, the same on every device.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is `OGCState`
    and whose ``update(updates, state, params=None, *, probs,
    learning_rate=None)`` takes the batch's probabilities and, optionally,
    the rate the optimizer applies now;
    ``optax.tree_utils.tree_get(state, "tau")`` finds the threshold.

  Raises:
    ValueError: as `ogc_weights`, and at trace time when ``probs`` is
      missing or its length is not the batch of the per-example gradients,
      when the leaves of ``updates`` have no common batch axis, or, given
      ``params``, when a leaf is not ``(batch,) + param.shape`` (gradients
      averaged over the batch, or OGC inside ``optax.MultiSteps``).

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from ogc_jax import losses, ogc
    >>> schedule = optax.cosine_decay_schedule(0.1, decay_steps=100)
    >>> opt = optax.chain(ogc(losses.cross_entropy, learning_rate=schedule),
    ...                   optax.clip_by_global_norm(5.0), optax.sgd(schedule))
    >>> params = jnp.zeros((3, 4))
    >>> x, y = jnp.ones((8, 3)), jnp.arange(8) % 4
    >>> def example_loss(params, x, y):
    ...   p = jax.nn.softmax(x @ params)[y]
    ...   return losses.cross_entropy(p), p
    >>> grads, p = jax.vmap(jax.grad(example_loss, has_aux=True),
    ...                     in_axes=(None, 0, 0))(params, x, y)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grads, state, params, probs=p)
    >>> float(optax.tree_utils.tree_get(state, "tau"))
    10000000.0

  References:
    Ye et al., `Optimized Gradient Clipping for Noisy Label Learning
    <https://arxiv.org/abs/2412.08941>`_, AAAI 2025.
  """
  weighting = ogc_weights(base_loss, learning_rate=learning_rate,
                          epsilon=epsilon, update_period=update_period,
                          queue_size=queue_size, fit=fit, axis_name=axis_name)

  def update_fn(updates, state, params=None, *, probs=None, learning_rate=None,
                **extra_args):
    del extra_args
    if probs is None:
      raise ValueError("OGC needs the extra argument `probs` (shape [batch]).")
    _check_probs(probs)
    _check_per_example(updates, params, probs)
    weights, state = weighting.update(probs, state,
                                      learning_rate=learning_rate)
    batch = probs.shape[0]
    if batch == 0:  # weights and state as they were
      zeros = lambda g: jnp.zeros(g.shape[1:], g.dtype)
      return jax.tree_util.tree_map(zeros, updates), state
    valid = _valid(probs)

    def aggregate(g):
      # where, not multiply: an invalid example's gradient may be NaN.
      g = jnp.where(valid.reshape((-1,) + (1,) * (g.ndim - 1)), g, 0)
      total = jnp.tensordot(weights, g.astype(jnp.float32), axes=1)
      if axis_name is not None:  # the mean over every device's examples
        total = jax.lax.psum(total, axis_name)
        return (total / (batch * jax.lax.psum(1, axis_name))).astype(g.dtype)
      return (total / batch).astype(g.dtype)

    return jax.tree_util.tree_map(aggregate, updates), state

  return optax.GradientTransformationExtraArgs(weighting.init, update_fn)
