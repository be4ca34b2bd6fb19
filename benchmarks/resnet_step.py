"""Cost of OGC in the harness's CIFAR ResNet-18 train step, float32 and bfloat16.

The GPU benchmark (run by ``benchmarks/gpu.sh``): the train step of
`experiments.train` (built by its `make_steps` from
`experiments/configs/cifar10.py`: ResNet-18 with BatchNorm, SGD momentum 0.9,
weight decay, ``clip_by_global_norm(5.0)``, crop + flip + rotation on the
device), batch 128 of random 32x32x3 images, 10 classes, in the three
variants of `benchmarks.train_steps` (method ``ce``, method ``ogc_ce``, i.e.
the fused route, and the per-example route), with the model's compute dtype
float32 and then bfloat16 (parameters and logits stay float32).

OGC uses the recipe's queue_size 4096 and update_period 32; the queue starts
full, so every update period of timed steps includes a refit. Each repeat
times a block of update periods of CE and of the fused route and a shorter
block of the per-example route, dispatched asynchronously, in rotated order;
ratios to CE are taken within a repeat and their median reported. The fused
step is also checked to run under ``jax.transfer_guard("disallow")`` and to
have no host callback, and the fused route's OGC work (`ogc_weights`
``update`` with and without a refit) is timed apart from the network.

Run from the repository root: ``python -m benchmarks.resnet_step`` on a GPU;
``--quick`` checks that it works on a CPU (bfloat16, batch 16, 2 steps per
block).
"""

import argparse

import numpy as np

from benchmarks import common
from benchmarks import train_steps
from experiments.configs import cifar10

NUM_CLASSES = 10
TARGET_FUSED_OVERHEAD = 0.05
DTYPES = ("float32", "bfloat16")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="CPU smoke run: bfloat16 only, batch 16, queue 32, "
                           "period 2, blocks of 2 steps, 1 repeat")
  parser.add_argument("--batch", type=int, default=None)
  parser.add_argument("--queue-size", type=int, default=None)
  parser.add_argument("--update-period", type=int, default=None)
  parser.add_argument("--periods", type=int, default=None,
                      help="update periods per timed block of CE and fused")
  parser.add_argument("--per-example-steps", type=int, default=None,
                      help="steps per timed block of the per-example route")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--dtypes", default=None,
                      help="comma-separated model compute dtypes (default "
                           f"{','.join(DTYPES)}; --quick: bfloat16)")
  parser.add_argument("--granularity", choices=("block", "step"),
                      default="block", help="interleave blocks or single steps")
  args = parser.parse_args(argv)
  config = cifar10.get_config()
  config.batch_size = batch = args.batch or (16 if args.quick else 128)
  config.ogc.queue_size = args.queue_size or (32 if args.quick else 4096)
  config.ogc.update_period = update_period = args.update_period or (
      2 if args.quick else config.ogc.update_period)
  periods = args.periods or (1 if args.quick else 2)
  per_example_steps = args.per_example_steps or (2 if args.quick else 16)
  repeats = args.repeats or (1 if args.quick else 5)
  blocks = {"CE": periods * update_period,
            "OGC fused": periods * update_period,
            "OGC per-example": per_example_steps}

  print(f"# Train-step cost of OGC: CIFAR ResNet-18, batch {batch}, 32x32x3, "
        f"{NUM_CLASSES} classes\n")
  print(common.environment() + "\n")

  rows, summary = [], []
  dtypes = args.dtypes or ("bfloat16" if args.quick else ",".join(DTYPES))
  for dtype_name in dtypes.split(","):
    if dtype_name not in DTYPES:
      parser.error(f"--dtypes: unknown dtype {dtype_name!r}; expected one of "
                   f"{', '.join(DTYPES)}")
    config.dtype = dtype_name
    variants = train_steps.build(config, num_classes=NUM_CLASSES)
    compile_s = train_steps.warm_up(variants)
    print(f"Checks of the compiled fused step, {dtype_name}:\n")
    train_steps.check_fused_step(variants)
    print(flush=True)

    per_step, refits = train_steps.time_variants(
        variants, blocks, repeats, granularity=args.granularity)
    ratios = {name: per_step[name] / per_step["CE"]
              for name in train_steps.VARIANTS}
    for name in train_steps.VARIANTS:
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
    fused = variants.fused
    del variants

  print(f"## Median ms per step ({repeats} repeat(s), interleaved by "
        f"{args.granularity}; queue {config.ogc.queue_size}, update period "
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

  plain, refit = train_steps.ogc_update_cost(fused, update_period, batch)
  amortised = plain + (refit - plain) / update_period
  print("\n## The fused route's OGC work alone (jitted `ogc_weights` update, "
        f"batch {batch}, full queue of {config.ogc.queue_size})\n")
  print(common.markdown_table(
      ("update, no refit (ms)", "update with refit (ms)",
       f"per step, refit every {update_period} (ms)",
       f"% of the CE step ({summary[-1][0]})"),
      [(f"{plain:.3f}", f"{refit:.3f}", f"{amortised:.3f}",
        f"{amortised / ce_ms:.3%}")]))


if __name__ == "__main__":
  main()
