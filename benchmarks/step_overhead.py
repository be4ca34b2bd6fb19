"""Cost of OGC in the harness's train step: a small CNN, CE vs the OGC routes.

The train step of `experiments.train` (built by its `make_steps`, with the
paper's recipe of `experiments/configs/default.py`: SGD momentum 0.9, weight
decay, ``clip_by_global_norm(5.0)``, crop + flip + rotation on the device)
for `experiments.models.SmallCNN`, batch 128 of random 32x32x3 images, 10
classes, in the three variants of `benchmarks.train_steps`: method ``ce``,
method ``ogc_ce`` (the fused route) and the per-example route
(``vmap(grad)`` + `ogc`).

OGC uses the recipe's queue_size 4096 and update_period 32, and the queue
starts full, so each update period of timed steps includes one refit
(counted and printed). Each repeat runs whole update periods of CE and of the
fused route and a shorter block of the per-example route (several times
slower; its refit costs milliseconds against seconds of steps). By default
the variants alternate step by step, each step synchronised and timed alone,
so that the varying load of a shared machine falls on all of them alike;
ratios to CE are taken within a repeat and their median reported. The OGC
work of the fused route is also timed apart from the network (`ogc_weights`
``update`` with and without a refit), which bounds its overhead without the
noise of whole steps.

Once, the script also checks that the compiled fused step runs under
``jax.transfer_guard("disallow")`` with its inputs on the device, and that its
lowered program has no host callback.

Run from the repository root: ``python -m benchmarks.step_overhead``
(``--quick`` for a smoke run: batch 16, queue 64, period 2, 2 steps a block).
"""

import argparse

import numpy as np

from benchmarks import common
from benchmarks import train_steps
from experiments.configs import default

NUM_CLASSES = 10
TARGET_FUSED_OVERHEAD = 0.05


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="batch 16, queue 64, period 2, blocks of 2 steps, "
                           "1 repeat")
  parser.add_argument("--batch", type=int, default=None)
  parser.add_argument("--queue-size", type=int, default=None)
  parser.add_argument("--update-period", type=int, default=None)
  parser.add_argument("--periods", type=int, default=1,
                      help="update periods per timed block of CE and fused")
  parser.add_argument("--per-example-steps", type=int, default=None,
                      help="steps per timed block of the per-example route")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--granularity", choices=("step", "block"),
                      default="step", help="interleave single steps or blocks")
  args = parser.parse_args(argv)
  config = default.get_config()
  config.model = "small_cnn"
  config.batch_size = args.batch or (16 if args.quick else 128)
  config.ogc.queue_size = args.queue_size or (64 if args.quick else 4096)
  config.ogc.update_period = args.update_period or (
      2 if args.quick else config.ogc.update_period)
  repeats = args.repeats or (1 if args.quick else 5)
  per_example_steps = args.per_example_steps or (2 if args.quick else 8)
  update_period = config.ogc.update_period
  blocks = {"CE": args.periods * update_period,
            "OGC fused": args.periods * update_period,
            "OGC per-example": per_example_steps}

  print(f"# Train-step cost of OGC: SmallCNN, batch {config.batch_size}, "
        f"32x32x3, {NUM_CLASSES} classes\n")
  print(common.environment() + "\n")
  variants = train_steps.build(config, num_classes=NUM_CLASSES)
  train_steps.warm_up(variants)
  print("Checks of the compiled fused step (inputs already on the device):\n")
  train_steps.check_fused_step(variants)
  print()

  per_step, refits = train_steps.time_variants(
      variants, blocks, repeats, granularity=args.granularity)
  names = train_steps.VARIANTS
  ms = {name: common.median_ms(t) for name, t in per_step.items()}
  ratios = {name: per_step[name] / per_step["CE"] for name in names}
  print(f"## Median ms per step ({repeats} repeat(s), interleaved by "
        f"{args.granularity}; queue {config.ogc.queue_size}, update period "
        f"{update_period})\n")
  print(common.markdown_table(
      ("variant", "steps timed (per repeat x repeats)", "refits in timed steps",
       "ms / step", "ratio to CE (median of repeats)", "range over repeats"),
      [(name, f"{blocks[name]} x {repeats}", refits[name], f"{ms[name]:.1f}",
        f"{np.median(ratios[name]):.3f}",
        f"{ratios[name].min():.3f} - {ratios[name].max():.3f}")
       for name in names]))
  overhead = float(np.median(ratios["OGC fused"])) - 1
  met = overhead <= TARGET_FUSED_OVERHEAD
  print(f"\nFused route overhead vs CE: {overhead:+.1%} (target <= "
        f"{TARGET_FUSED_OVERHEAD:.0%}: {'met' if met else 'NOT MET'}).")
  print(f"Per-example route: {np.median(ratios['OGC per-example']):.2f}x the "
        "CE step.\n")

  plain, refit = train_steps.ogc_update_cost(
      variants.fused, update_period, config.batch_size)
  amortised = plain + (refit - plain) / update_period
  print("## The fused route's OGC work alone (jitted `ogc_weights` update, "
        f"batch {config.batch_size}, full queue of {config.ogc.queue_size})\n")
  print(common.markdown_table(
      ("update, no refit (ms)", "update with refit (ms)",
       f"per step, refit every {update_period} (ms)", "% of the CE step"),
      [(f"{plain:.3f}", f"{refit:.3f}", f"{amortised:.3f}",
        f"{amortised / ms['CE']:.3%}")]))


if __name__ == "__main__":
  main()
