"""Shared helpers of the benchmark scripts: timing, tables, the environment,
and the base losses they measure.

Every script measures its contenders side by side in one process, interleaved
(each repeat runs every contender once, in a rotated order) and reports the
median over repeats, so that a noisy, shared machine slows all contenders
alike.
"""

import os
import platform
import time
from typing import Callable, Mapping, Sequence

import numpy as np

from ogc_jax import losses
from ogc_jax import testing


def _label(name, base_loss):
  hparams = ", ".join(f"{k}={v}" for k, v in
                      losses.hyperparameters(base_loss).items())
  return f"{name} ({hparams})" if hparams else name


# (label, base loss of p, its float64 |l'(p)|) for each base loss of
# `ogc_jax.losses.BASE_LOSSES` that has a reference derivative.
BASE_LOSSES = tuple(
    (_label(name, losses.BASE_LOSSES[name]), losses.BASE_LOSSES[name],
     derivative) for name, derivative in testing.DERIVATIVES.items())


def interleaved_times(contenders: Mapping[str, Callable[[], object]],
                      repeats: int) -> dict:
  """Seconds per call of each contender, measured ``repeats`` times each.

  Each repeat calls every contender once; the order rotates from one repeat
  to the next so that no contender always follows the same one. A contender
  must block until its work is done (``jax.block_until_ready``).

  Args:
    contenders: name -> function of no arguments.
    repeats: number of timed calls of each contender.

  Returns:
    name -> list of ``repeats`` wall-clock durations in seconds.
  """
  names = list(contenders)
  times = {name: [] for name in names}
  for r in range(repeats):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      start = time.perf_counter()
      contenders[name]()
      times[name].append(time.perf_counter() - start)
  return times


def median_ms(seconds: Sequence[float]) -> float:
  return 1e3 * float(np.median(seconds))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
  """A GitHub markdown table; cells are printed with ``str``."""
  lines = ["| " + " | ".join(headers) + " |",
           "| " + " | ".join("---" for _ in headers) + " |"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def environment() -> str:
  """One line on the software and machine the numbers come from."""
  import jax  # pylint: disable=import-outside-toplevel
  devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
  load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
  return (f"jax {jax.__version__} on {jax.default_backend()} ({devices}); "
          f"python {platform.python_version()}; {os.cpu_count()} CPU cores "
          f"({_cpu_model()}); load average at start {load}")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()
