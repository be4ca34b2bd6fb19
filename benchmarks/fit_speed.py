"""Speed of one threshold refit: ours (jit) vs the authors' pipeline.

A refit fits the two-component mixture to the queue of q = 4096 recent losses
H = -log p and solves for the clipping threshold. On a realistic queue (clean
H skewed near 0, noisy H spread over 1.5-6; `ogc_jax.testing.realistic_queue`)
with 15%, 40% and 80% noise, this times, side by side and interleaved:

* ours: `ogc_jax.fit_gmm` + `ogc_jax.solve_threshold`, compiled together with
  `jax.jit`, the queue already on the device (as inside the train step);
* the authors' pipeline: `sklearn.mixture.GaussianMixture(n_components=2,
  reg_covar=1e-3)` fitted with its defaults (k-means initialisation, one
  init, tol 1e-3, 100 iterations) on the float64 queue, then SciPy `truncnorm`
  densities on a 1000-point grid and 10 bisection steps
  (`ogc_jax.testing.authors_pipeline`).

Both with cross-entropy and learning rate 0.01; the mixture fit alone is timed
too. The authors' pipeline runs twice: with scikit-learn's thread pools as
the environment sets them (OpenMP k-means on every core), and limited to one
thread (`threadpoolctl`, the environment untouched). On a shared machine the
first is erratic, tens of ms, because its OpenMP threads wait on cores that
other processes hold; the second is its best case here. It then reports how far the end-to-end tau of each is from a converged
float64 answer: scikit-learn with ``n_init=5, tol=1e-10``
(`ogc_jax.testing.sklearn_fit`) followed by the float64 reference threshold
(`ogc_jax.testing.threshold`).

Run from the repository root: ``python -m benchmarks.fit_speed`` (``--quick``
for a smoke run).
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl

from benchmarks import common
from ogc_jax import fit_gmm, losses, solve_threshold
from ogc_jax import testing
from ogc_jax.gmm import REG_COVAR

QUEUE_SIZE = 4096
NOISE_RATES = (0.15, 0.4, 0.8)
TIMING_LEARNING_RATE = 0.01
LEARNING_RATES = (0.1, 0.01, 0.001)


OURS_BLOCK = 10  # our calls per timed block (see main)


def converged_fit(h):
  """A converged float64 scikit-learn fit (n_init=5, tol=1e-10), as a dict."""
  gmm = testing.sklearn_fit(h, reg_covar=REG_COVAR)
  return {k: float(v) for k, v in gmm._asdict().items()}


def at_one_thread(controller, fn):
  """``fn`` with every BLAS and OpenMP pool limited to one thread."""
  def run(*args):
    with controller.limit(limits=1):
      return fn(*args)
  return run


def print_threadpools():
  print("BLAS / OpenMP thread pools (threadpoolctl), "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}:\n")
  rows = [(p.get("user_api"), p.get("internal_api"), p.get("prefix"),
           p.get("version"), p.get("architecture", ""), p.get("num_threads"))
          for p in threadpoolctl.threadpool_info()]
  print(common.markdown_table(
      ("user_api", "internal_api", "library", "version", "architecture",
       "threads"), rows))
  print()


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="few repeats, one noise rate, one learning rate")
  parser.add_argument("--repeats", type=int, default=None,
                      help="timed calls of each contender per queue")
  args = parser.parse_args(argv)
  repeats = args.repeats or (5 if args.quick else 60)
  noise_rates = NOISE_RATES[1:2] if args.quick else NOISE_RATES
  learning_rates = (0.01,) if args.quick else LEARNING_RATES

  print(f"# Refit speed: fit_gmm + solve_threshold (jit) vs the authors' "
        f"pipeline, q = {QUEUE_SIZE}\n")
  print(common.environment() + "\n")
  print_threadpools()

  ours_refit = jax.jit(lambda h, lr: solve_threshold(
      fit_gmm(h), losses.cross_entropy, lr))
  ours_fit = jax.jit(fit_gmm)
  controller = threadpoolctl.ThreadpoolController()
  authors_1t = at_one_thread(controller, testing.authors_pipeline)
  authors_fit_1t = at_one_thread(controller, testing.authors_fit)
  lr = jnp.float32(TIMING_LEARNING_RATE)

  speed_rows, precision_rows = [], []
  for noise_rate in noise_rates:
    h = testing.realistic_queue(noise_rate, seed=int(noise_rate * 100),
                                n=QUEUE_SIZE)
    h_device = jax.device_put(h)
    h64 = h.astype(np.float64)
    jax.block_until_ready(ours_refit(h_device, lr))  # compile
    jax.block_until_ready(ours_fit(h_device))
    def ours_block(fn, *args):
      # A block of calls back to back, as refits run inside a busy train
      # step: a lone call after 10 ms of scikit-learn also pays for waking
      # XLA's CPU worker threads, which the train step never does.
      def run():
        for _ in range(OURS_BLOCK):
          jax.block_until_ready(fn(*args))
      return run

    times = common.interleaved_times({
        "ours": ours_block(ours_refit, h_device, lr),
        "ours_fit": ours_block(ours_fit, h_device),
        "authors": lambda: testing.authors_pipeline(
            h64, testing.ce_derivative, TIMING_LEARNING_RATE),
        "authors_fit": lambda: testing.authors_fit(h64),
        "authors_1t": lambda: authors_1t(h64, testing.ce_derivative,
                                         TIMING_LEARNING_RATE),
        "authors_fit_1t": lambda: authors_fit_1t(h64),
    }, repeats)
    times["ours"] = [t / OURS_BLOCK for t in times["ours"]]
    times["ours_fit"] = [t / OURS_BLOCK for t in times["ours_fit"]]
    ms = {k: common.median_ms(v) for k, v in times.items()}
    speed_rows.append((
        f"{noise_rate:.0%}", f"{ms['ours']:.2f}", f"{ms['ours_fit']:.2f}",
        f"{ms['authors']:.1f}", f"{ms['authors_fit']:.1f}",
        f"{ms['authors_1t']:.1f}", f"{ms['authors_fit_1t']:.1f}",
        f"{ms['authors'] / ms['ours']:.1f}x",
        f"{ms['authors_1t'] / ms['ours']:.1f}x"))

    converged = converged_fit(h)
    authors_gmm = testing.authors_fit(h64)
    for name, base_loss, derivative in common.BASE_LOSSES:
      solve = jax.jit(lambda h, lr, base_loss=base_loss: solve_threshold(
          fit_gmm(h), base_loss, lr)[1])
      cells = []
      for learning_rate in learning_rates:
        tau_ref = testing.threshold(converged, derivative, learning_rate)[1]
        tau_ours = float(solve(h_device, jnp.float32(learning_rate)))
        tau_authors = testing.authors_threshold(authors_gmm, derivative,
                                                  learning_rate)[1]
        cells += [f"{abs(tau_ours - tau_ref) / tau_ref:.1e}",
                  f"{abs(tau_authors - tau_ref) / tau_ref:.1e}"]
      precision_rows.append((f"{noise_rate:.0%}", name, *cells))

  print(f"## Median wall time of one refit, ms ({repeats} interleaved timings "
        f"each, ours over blocks of {OURS_BLOCK} calls; CE, lr "
        f"{TIMING_LEARNING_RATE})\n")
  print(common.markdown_table(
      ("noise", "ours: fit + threshold", "ours: fit only",
       "authors: fit + threshold", "authors: fit only",
       "authors, 1 thread: fit + threshold", "authors, 1 thread: fit only",
       "speed-up", "speed-up vs 1 thread"), speed_rows))
  print("\n## End-to-end tau, relative difference from a converged float64 "
        "answer\n")
  print("(scikit-learn n_init=5, tol=1e-10, then the float64 reference "
        "threshold)\n")
  headers = ["noise", "loss"]
  for learning_rate in learning_rates:
    headers += [f"ours, lr {learning_rate:g}", f"authors, lr {learning_rate:g}"]
  print(common.markdown_table(headers, precision_rows))


if __name__ == "__main__":
  main()
