"""The environment of training processes that share a machine.

A sweep (``python -m sweeps``) and the throughput benchmark
(``benchmarks/train_loop.py``) both start ``python -m experiments.train``
processes side by side; `child_env` is the environment both give them.
"""

import os
import pathlib
from typing import Optional

# When runs share the CPU, each keeps to one thread (XLA's default is one per
# core per process, which oversubscribes the machine).
SINGLE_THREAD_XLA_FLAGS = (
    '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
# When runs share a GPU, together they take this fraction of its memory (JAX
# preallocates 75% of it per process by default, so a second one fails).
GPU_MEMORY_FRACTION = 0.9


def child_env(root, jobs: int, gpu_share: Optional[float] = None
              ) -> dict[str, str]:
  """The environment of the training processes.

  All runs share a persistent compilation cache under ROOT (unless
  ``JAX_COMPILATION_CACHE_DIR`` is set), so a process reuses what an earlier
  one compiled. With ``jobs > 1`` the processes share the machine: on a CPU
  each keeps to one thread, and on a GPU each takes ``0.9 / jobs`` of its
  memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``, unless it or
  ``XLA_PYTHON_CLIENT_PREALLOCATE`` is set already). A run given a share of
  one GPU by Ray (``gpu_share`` < 1) takes ``0.9 * gpu_share`` of its memory
  instead. Each setting is read by its own backend only, so both are set
  whatever the machine.
  """
  env = dict(os.environ)
  env.setdefault('JAX_COMPILATION_CACHE_DIR',
                 str((pathlib.Path(root) / '.jax_cache').resolve()))
  # Cache every compilation, not only those over JAX's 1 s default: a digits
  # run compiles a dozen sub-second programs.
  env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  env['PYTHONUNBUFFERED'] = '1'  # the log shows progress as it happens
  if jobs > 1:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' '
                        + SINGLE_THREAD_XLA_FLAGS).strip()
  share = gpu_share if gpu_share and gpu_share < 1 else (
      1 / jobs if jobs > 1 else None)
  if share and not {'XLA_PYTHON_CLIENT_MEM_FRACTION',
                    'XLA_PYTHON_CLIENT_PREALLOCATE'} & set(env):
    env['XLA_PYTHON_CLIENT_MEM_FRACTION'] = (
        f'{GPU_MEMORY_FRACTION * share:.3f}')
  return env
