"""The devices of a run: ``jax.distributed`` set up from the config, the mesh's devices.

`experiments.train.train_and_evaluate` calls `initialize` before any JAX
computation (several processes, or hosts: only process 0 then writes the
workdir and prints the result), then trains on `devices`.
"""

import jax

from experiments.errors import ConfigError

_DISTRIBUTED_KEYS = ('coordinator_address', 'num_processes', 'process_id')


def initialize(config) -> None:
  """``jax.distributed.initialize`` for ``config.distributed``, once.

  Passes the keys of `_DISTRIBUTED_KEYS` that are set; JAX detects the
  others on Cloud TPU, SLURM, Open MPI and Kubernetes, and reads
  JAX_COORDINATOR_ADDRESS. A failure is a one-line `ConfigError`.
  """
  if not config.distributed or jax.distributed.is_initialized():
    return
  kwargs = {k: config[k] for k in _DISTRIBUTED_KEYS if config[k] is not None}
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, RuntimeError) as e:
    reason = ' '.join(str(e).split())
    raise ConfigError(
        f'config.distributed: jax.distributed.initialize({kwargs}) failed: '
        f'{reason[:300]}; outside Cloud TPU, SLURM, Open MPI or Kubernetes '
        'set --config.coordinator_address, --config.num_processes and '
        '--config.process_id.') from None


def devices(config) -> list:
  """The devices of the run's data-parallel mesh.

  The first ``config.num_devices`` of ``jax.devices()`` (0: all of them),
  among which the batch divides evenly.

  Raises:
    ConfigError: more devices than JAX sees, or a batch they do not divide.
  """
  available = jax.devices()
  if config.num_devices > len(available):
    raise ConfigError(f'config.num_devices={config.num_devices}, but JAX '
                      f'sees {len(available)} device(s); expected at most '
                      f'{len(available)} (0: all).')
  chosen = available[:config.num_devices or None]
  if config.batch_size % len(chosen):
    raise ConfigError(f'config.batch_size={config.batch_size} is not '
                      f'divisible by the {len(chosen)} devices.')
  return chosen
