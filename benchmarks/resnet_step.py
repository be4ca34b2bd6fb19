"""Cost of OGC in a CIFAR ResNet-18 train step, float32 and bfloat16.

The GPU benchmark (run by ``benchmarks/gpu.sh``): one `jax.jit`-compiled train
step of `experiments.models.ResNet18` (batch 128 of random 32x32x3 images, 10
classes, BatchNorm ``batch_stats`` mutable; SGD with momentum 0.9 after
``optax.clip_by_global_norm(5.0)``) in the three variants of
`benchmarks.train_steps` (plain CE, the OGC fused route, the OGC per-example
route), with the model's compute dtype float32 and then bfloat16 (parameters
and logits stay float32).

OGC uses queue_size 4096 and update_period 32; the queue starts full, so every
update period of timed steps includes a refit. Each repeat times a block of
update periods of CE and of the fused route and a shorter block of the
per-example route, dispatched asynchronously, in rotated order; ratios to CE
are taken within a repeat and their median reported. The fused step is also
checked to run under ``jax.transfer_guard("disallow")`` and to have no host
callback, and the fused route's OGC work (`ogc_weights` ``update`` with and
without a refit) is timed apart from the network.

Run from the repository root: ``python -m benchmarks.resnet_step`` on a GPU;
``--quick`` checks that it works on a CPU (batch 16, 2 steps per block).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks import train_steps
from experiments.models import ResNet18

NUM_CLASSES = 10
TARGET_FUSED_OVERHEAD = 0.05
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="CPU smoke run: batch 16, queue 32, period 2, "
                           "blocks of 2 steps, 1 repeat")
  parser.add_argument("--batch", type=int, default=None)
  parser.add_argument("--queue-size", type=int, default=None)
  parser.add_argument("--update-period", type=int, default=None)
  parser.add_argument("--periods", type=int, default=None,
                      help="update periods per timed block of CE and fused")
  parser.add_argument("--per-example-steps", type=int, default=None,
                      help="steps per timed block of the per-example route")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--dtypes", default="float32,bfloat16",
                      help="comma-separated model compute dtypes")
  parser.add_argument("--granularity", choices=("block", "step"),
                      default="block", help="interleave blocks or single steps")
  args = parser.parse_args(argv)
  batch = args.batch or (16 if args.quick else 128)
  queue_size = args.queue_size or (32 if args.quick else 4096)
  update_period = args.update_period or (2 if args.quick else 32)
  periods = args.periods or (1 if args.quick else 2)
  per_example_steps = args.per_example_steps or (2 if args.quick else 16)
  repeats = args.repeats or (1 if args.quick else 5)
  blocks = {"CE": periods * update_period,
            "OGC fused": periods * update_period,
            "OGC per-example": per_example_steps}

  print(f"# Train-step cost of OGC: CIFAR ResNet-18, batch {batch}, 32x32x3, "
        f"{NUM_CLASSES} classes\n")
  print(common.environment() + "\n")
  rng = np.random.default_rng(0)
  x = jax.device_put(rng.normal(size=(batch, 32, 32, 3)).astype(np.float32))
  y = jax.device_put(rng.integers(0, NUM_CLASSES, batch).astype(np.int32))

  rows, summary = [], []
  for dtype_name in args.dtypes.split(","):
    model = ResNet18(num_classes=NUM_CLASSES, dtype=DTYPES[dtype_name])
    variables = model.init(jax.random.key(0), x[:2], train=False)
    steps, states = train_steps.build(model, variables, queue_size=queue_size,
                                      update_period=update_period)
    compile_s = {}
    for name, step in steps.items():  # compile and warm up
      start = time.perf_counter()
      states[name] = jax.block_until_ready(step(states[name], x, y))
      compile_s[name] = time.perf_counter() - start
    print(f"Checks of the compiled fused step, {dtype_name}:\n")
    states["OGC fused"] = train_steps.check_fused_step(
        steps["OGC fused"], states["OGC fused"], x, y)
    print(flush=True)

    per_step, refits = train_steps.time_variants(
        steps, states, x, y, blocks, repeats, granularity=args.granularity)
    ratios = {name: per_step[name] / per_step["CE"] for name in steps}
    for name in steps:
      rows.append((dtype_name, name, f"{blocks[name]} x {repeats}",
                   refits[name], f"{compile_s[name]:.1f}",
                   f"{common.median_ms(per_step[name]):.2f}",
                   f"{np.median(ratios[name]):.3f}",
                   f"{ratios[name].min():.3f} - {ratios[name].max():.3f}"))
    overhead = float(np.median(ratios["OGC fused"])) - 1
    summary.append((
        dtype_name, f"{overhead:+.1%}",
        "met" if overhead <= TARGET_FUSED_OVERHEAD else "NOT MET",
        f"{np.median(ratios['OGC per-example']):.2f}x"))
    ce_ms = common.median_ms(per_step["CE"])
    del steps, states

  print(f"## Median ms per step ({repeats} repeat(s), interleaved by "
        f"{args.granularity}; queue {queue_size}, update period "
        f"{update_period})\n")
  print(common.markdown_table(
      ("dtype", "variant", "steps timed (per repeat x repeats)",
       "refits in timed steps", "first call (compile) s", "ms / step",
       "ratio to CE (median of repeats)", "range over repeats"), rows))
  print("\n## OGC cost vs CE\n")
  print(common.markdown_table(
      ("dtype", "fused overhead",
       f"fused within {TARGET_FUSED_OVERHEAD:.0%}", "per-example / CE"),
      summary))

  plain, refit = train_steps.ogc_update_cost(queue_size, update_period, batch)
  amortised = plain + (refit - plain) / update_period
  print("\n## The fused route's OGC work alone (jitted `ogc_weights` update, "
        f"batch {batch}, full queue of {queue_size})\n")
  print(common.markdown_table(
      ("update, no refit (ms)", "update with refit (ms)",
       f"per step, refit every {update_period} (ms)",
       f"% of the CE step ({summary[-1][0]})"),
      [(f"{plain:.3f}", f"{refit:.3f}", f"{amortised:.3f}",
        f"{amortised / ce_ms:.3%}")]))


if __name__ == "__main__":
  main()
