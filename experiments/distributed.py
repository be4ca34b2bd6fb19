"""Several processes (hosts): ``jax.distributed`` set up from the config.

`experiments.train.train_and_evaluate` calls `initialize` before any JAX
computation; only process 0 then writes the workdir and prints the result.
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
