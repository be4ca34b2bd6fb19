"""Float64 references for the OGC numerics, independent of the jnp code.

Used by the tests and the benchmarks: derivatives of the base losses written by
hand, expectations by SciPy's adaptive quadrature over scipy.stats.truncnorm,
the threshold by Brent's root finder, and the authors' original pipeline
(scikit-learn mixture, 1000-point grid, 10 bisection steps) for comparison.
"""

import math

import numpy as np
from scipy import integrate, optimize, stats

MIN_PROB = 1e-7
MAX_PROB = 1 - 1e-7
MIN_H = -math.log1p(-1e-7)
MAX_H = -math.log(1e-7)


def ce_derivative(p):
  return 1.0 / p


def focal_derivative(p, gamma=0.5):
  return np.abs(gamma * np.log(p) * (1 - p) ** (gamma - 1) - (1 - p) ** gamma / p)


def gce_derivative(p, q=0.7):
  return p ** (q - 1)


def ratio(gmm, derivative, p_threshold):
  """Noise-to-clean ratio R at a probability threshold, float64."""
  tau = derivative(p_threshold)
  h_t = -math.log(p_threshold)

  def expect(mean, var):
    clipped = lambda h: min(derivative(math.exp(-h)), tau)
    std = math.sqrt(var)
    dist = stats.truncnorm((MIN_H - mean) / std, (MAX_H - mean) / std, mean, std)
    mode = min(max(mean, MIN_H), MAX_H)  # of the truncated density
    lo = max(MIN_H, mode - 15 * std)
    hi = min(MAX_H, mode + 15 * std)
    total = 0.0
    for a, b in ((lo, min(max(h_t, lo), hi)), (min(max(h_t, lo), hi), hi)):
      if b > a:
        total += integrate.quad(lambda h: clipped(h) * dist.pdf(h), a, b,
                                limit=2000, epsabs=0, epsrel=1e-11)[0]
    mass = integrate.quad(dist.pdf, lo, hi, limit=2000, epsabs=0, epsrel=1e-11)[0]
    return total / mass

  return (expect(gmm["mean_noisy"], gmm["var_noisy"])
          / expect(gmm["mean_clean"], gmm["var_clean"]))


def threshold(gmm, derivative, learning_rate, epsilon=20.0):
  """(p_threshold, tau) in float64: Brent's method on R in log p."""
  target = 1 + learning_rate * epsilon
  f = lambda h: ratio(gmm, derivative, math.exp(-h)) - target
  if f(MAX_H) <= 0:
    p = MIN_PROB
  elif f(MIN_H) > 0:
    p = MAX_PROB
  else:
    p = math.exp(-optimize.brentq(f, MIN_H, MAX_H, xtol=1e-13, rtol=1e-13))
  return p, float(derivative(p))


def authors_threshold(gmm, derivative, learning_rate, epsilon=20.0,
                      grid=1000, steps=10):
  """The authors' numerics: 1000-point grid in H and 10 bisection steps in p."""
  sample_h = np.linspace(MIN_H, MAX_H, grid)
  g = np.abs(derivative(np.exp(-sample_h)))
  dens = {}
  for name in ("clean", "noisy"):
    m, s = gmm["mean_" + name], math.sqrt(gmm["var_" + name])
    dens[name] = stats.truncnorm.pdf(sample_h, (MIN_H - m) / s, (MAX_H - m) / s, m, s)

  def r(p):
    tau = abs(derivative(p))
    c = np.minimum(g, tau)
    return ((dens["noisy"] * c).mean() / (dens["clean"] * c).mean()
            * dens["clean"].mean() / dens["noisy"].mean())

  target = 1 + learning_rate * epsilon
  left, right = MIN_PROB, MAX_PROB
  for _ in range(steps):  # their binary_search with tol 1e-4 on R
    mid = (left + right) / 2
    val = r(mid)
    if abs(val - target) < 1e-4:
      return mid, float(derivative(mid))
    if val > target:
      left = mid
    else:
      right = mid
  mid = (left + right) / 2
  return mid, float(derivative(mid))
