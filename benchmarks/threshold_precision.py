"""Precision of the clipping threshold: float32 `solve_threshold` vs float64.

For each base loss (CE, focal with gamma 0.5, GCE with q 0.7), learning rate
(0.1, 0.01, 0.001) and two-component mixture over H = -log p, from well
separated to overlapping, the gradient threshold tau of

* ours: `ogc_jax.solve_threshold` in float32 under `jax.jit` (Gauss-Legendre
  quadrature; the crossing bracketed by 3 rounds of 16 points at once in
  u = sqrt(-log p - MIN_H), then regula falsi), and
* the authors' numerics: a 1000-point grid in H and 10 bisection steps in p
  (`ogc_jax.testing.authors_threshold`)

is compared with the float64 reference `ogc_jax.testing.threshold` (SciPy
adaptive quadrature over `truncnorm`, Brent's root finder). Target: ours
within 1% of the reference everywhere.

Run from the repository root: ``python -m benchmarks.threshold_precision``
(``--quick`` for a smoke run on two mixtures and one learning rate).
"""

import argparse

import jax
import jax.numpy as jnp

from benchmarks import common
from ogc_jax import GMM, solve_threshold
from ogc_jax import testing

TARGET_RELATIVE_ERROR = 0.01

LEARNING_RATES = (0.1, 0.01, 0.001)

# (mean_clean, var_clean, mean_noisy, var_noisy), from well separated to
# overlapping: the clean mode tight near H = 0 (p near 1), the noisy one wide.
MIXTURES = (
    (0.02, 1e-4, 6.0, 1.0),
    (0.02, 5e-4, 5.0, 1.5),
    (0.05, 3e-3, 4.0, 1.5),
    (0.2, 0.02, 3.0, 1.0),
    (0.5, 0.1, 2.5, 0.8),
    (0.8, 0.3, 1.8, 0.8),
)


def _relative_error(value, ref):
  return abs(value - ref) / abs(ref)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="two mixtures and one learning rate")
  args = parser.parse_args(argv)
  mixtures = (MIXTURES[0], MIXTURES[-1]) if args.quick else MIXTURES
  learning_rates = (0.01,) if args.quick else LEARNING_RATES

  print("# Threshold precision: float32 solve_threshold vs float64 reference\n")
  print(common.environment() + "\n")
  rows, worst = [], {}
  for name, base_loss, derivative in common.BASE_LOSSES:
    # One compilation per loss; the mixture and learning rate are traced.
    solve = jax.jit(lambda gmm, lr, base_loss=base_loss:
                    solve_threshold(gmm, base_loss, lr)[1])
    for mixture in mixtures:
      mean_c, var_c, mean_n, var_n = mixture
      params = dict(mean_clean=mean_c, var_clean=var_c, mean_noisy=mean_n,
                    var_noisy=var_n, weight_noisy=0.4)
      gmm = GMM(**{k: jnp.float32(v) for k, v in params.items()})
      for lr in learning_rates:
        _, tau_ref = testing.threshold(params, derivative, lr)
        _, tau_authors = testing.authors_threshold(params, derivative, lr)
        tau_ours = float(solve(gmm, jnp.float32(lr)))
        err_ours = _relative_error(tau_ours, tau_ref)
        err_authors = _relative_error(tau_authors, tau_ref)
        w = worst.setdefault(name, [0.0, 0.0])
        w[0], w[1] = max(w[0], err_ours), max(w[1], err_authors)
        rows.append((name, lr,
                     f"N({mean_c:g}, {var_c:g}) / N({mean_n:g}, {var_n:g})",
                     f"{tau_ref:.6g}", f"{tau_ours:.6g}", f"{err_ours:.1e}",
                     f"{tau_authors:.6g}", f"{err_authors:.1e}"))

  print("## Per case (mixture: clean / noisy component of H, mean and variance)\n")
  print(common.markdown_table(
      ("loss", "lr", "mixture", "tau float64 ref", "tau ours (f32)",
       "rel. err ours", "tau authors", "rel. err authors"), rows))
  print("\n## Maximum relative error per loss\n")
  print(common.markdown_table(
      ("loss", "ours (f32, jit)", "authors (grid 1000, 10 bisections)",
       f"ours within {TARGET_RELATIVE_ERROR:.0%}"),
      [(name, f"{o:.1e}", f"{a:.1e}",
        "yes" if o <= TARGET_RELATIVE_ERROR else "NO")
       for name, (o, a) in worst.items()]))
  overall = max(o for o, _ in worst.values())
  print(f"\nWorst relative error of ours: {overall:.1e} (target "
        f"{TARGET_RELATIVE_ERROR:.0%}): "
        f"{'met' if overall <= TARGET_RELATIVE_ERROR else 'NOT MET'}.")


if __name__ == "__main__":
  main()
