"""Throughput of the training harness: per-step dispatch, chunked steps, processes.

Trains the same configuration (`experiments.train`, method OGC-CE) in three
ways, side by side in one call, and prints images per second of training
(the median over the epochs after the first, which compiles), in all:

* ``per-step``: one dispatch from Python per step (``steps_per_dispatch=1``,
  the loop before chunking);
* ``epoch``: one compiled loop per epoch (``steps_per_dispatch=0``, the
  default);
* ``processes xN``: N runs (seeds 0..N-1) as N processes at once, in the
  environment ``sweeps.sweep --jobs N`` gives them (`environment.child_env`:
  0.9 / N of the GPU memory each, one thread each on a CPU, a shared
  compilation cache).

On a GPU, the default is the paper's setting: ResNet-18 on CIFAR-10 (TFDS
``cifar10``; ``--dataset cifar10_jpeg`` or ``folder:PATH`` for an image
folder), batch 128 per run, bfloat16 and float32. Run from the repository
root::

  python -m benchmarks.train_loop                       # the GPU setting
  python -m benchmarks.train_loop --quick               # digits MLP, CPU smoke
  python -m benchmarks.train_loop --dtypes bfloat16 --pack 4 --epochs 3

Each mode trains in a fresh temporary workdir; nothing is kept.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from experiments import environment
from experiments import train
from experiments import workdir as workdir_lib
from experiments.configs import cifar10
from experiments.configs import digits


def _config(args, dtype, seed=0):
  config = digits.get_config() if args.quick else cifar10.get_config()
  if not args.quick:
    config.dataset = args.dataset
  config.method = 'ogc_ce'
  config.dtype = dtype
  config.num_epochs = args.epochs
  config.seed = seed
  config.progress = False
  config.save_queues = False
  config.checkpoint_every = args.epochs  # one checkpoint, at the end
  if args.model:
    config.model = args.model
  if args.train_subset:
    config.train_subset = args.train_subset
  return config


def _images_per_second(workdirs):
  """Median over epochs after the first, summed over the runs."""
  total = 0.0
  for workdir in workdirs:
    rows = workdir_lib.read_metrics(workdir)
    steady = [r['images_per_second'] for r in rows[1:]] or [
        rows[0]['images_per_second']]
    total += float(np.median(steady))
  return total


def _processes(args, dtype, root):
  """N processes at once, in the environment `sweeps.sweep` gives them."""
  env = environment.child_env(root, args.pack)
  procs, workdirs = [], []
  for seed in range(args.pack):
    workdir = os.path.join(root, f'process{seed}')
    workdirs.append(workdir)
    config = _config(args, dtype, seed)
    overrides = [f'--config.{k}={v}' for k, v in (
        ('dataset', config.dataset), ('method', config.method), ('dtype', dtype),
        ('num_epochs', config.num_epochs), ('seed', seed), ('progress', False),
        ('save_queues', False), ('checkpoint_every', config.checkpoint_every),
        ('model', config.model), ('train_subset', config.train_subset))]
    config_file = ('experiments/configs/digits.py' if args.quick
                   else 'experiments/configs/cifar10.py')
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'experiments.train', '--config', config_file,
         '--workdir', workdir] + overrides, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
  for proc in procs:
    _, err = proc.communicate()
    if proc.returncode:
      raise RuntimeError(f'a training process failed:\n{err[-2000:]}')
  return workdirs


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true',
                      help='digits MLP, 2 epochs, 2 runs, float32: a CPU smoke run')
  parser.add_argument('--dtypes', default=None,
                      help='comma-separated (default bfloat16,float32; '
                           'quick: float32)')
  parser.add_argument('--dataset', default='cifar10',
                      help='the CIFAR-10 copy (default: TFDS cifar10; '
                           'cifar10_jpeg, folder:PATH); --quick: digits')
  parser.add_argument('--pack', type=int, default=None,
                      help='runs at once, as processes (default 4; quick: 2)')
  parser.add_argument('--epochs', type=int, default=None,
                      help='epochs per run (default 3)')
  parser.add_argument('--model', default=None, help='override the model')
  parser.add_argument('--train-subset', type=int, default=0,
                      help='train on N images (0: all)')
  parser.add_argument('--modes', default='per-step,epoch,processes')
  args = parser.parse_args(argv)
  args.pack = args.pack or (2 if args.quick else 4)
  args.epochs = args.epochs or (2 if args.quick else 3)
  dtypes = (args.dtypes or ('float32' if args.quick else 'bfloat16,float32')
            ).split(',')
  modes = args.modes.split(',')
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'{"digits MLP" if args.quick else "CIFAR-10 ResNet-18"}, batch 128 '
        f'per run, {args.epochs} epochs, {args.pack} processes at once')
  print('| dtype | mode | runs | images/s in all | vs per-step |')
  print('| --- | --- | ---: | ---: | ---: |')
  summary = []
  for dtype in dtypes:
    baseline = None
    for mode in modes:
      with tempfile.TemporaryDirectory() as root:
        start = time.time()
        if mode == 'per-step':
          config = _config(args, dtype)
          config.steps_per_dispatch = 1
          workdirs = [os.path.join(root, 'run')]
          train.train_and_evaluate(config, workdirs[0])
        elif mode == 'epoch':
          workdirs = [os.path.join(root, 'run')]
          train.train_and_evaluate(_config(args, dtype), workdirs[0])
        elif mode == 'processes':
          workdirs = _processes(args, dtype, root)
        else:
          raise ValueError(f'unknown mode {mode!r}')
        rate = _images_per_second(workdirs)
        wall = time.time() - start
      baseline = baseline or (rate if mode == 'per-step' else None)
      ratio = f'{rate / baseline:.2f}x' if baseline else '-'
      runs = len(workdirs)
      label = mode if runs == 1 else f'{mode} x{runs}'
      print(f'| {dtype} | {label} | {runs} | {rate:,.0f} | {ratio} |', flush=True)
      summary.append({'dtype': dtype, 'mode': mode, 'runs': runs,
                      'images_per_second': rate, 'wall_s': wall})
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
