"""A run's Orbax checkpoints: one per saved epoch, in the workdir's
``checkpoints/`` (`experiments.workdir.checkpoints_dir`)."""

import jax
import orbax.checkpoint as ocp

from experiments import workdir as workdir_lib


def manager(workdir) -> ocp.CheckpointManager:
  """The run's checkpoints: the last two kept, written synchronously."""
  return ocp.CheckpointManager(
      workdir_lib.checkpoints_dir(workdir), options=ocp.CheckpointManagerOptions(
          max_to_keep=2, create=True, enable_async_checkpointing=False))


def restore(checkpoints: ocp.CheckpointManager, epoch: int, state):
  """The checkpoint of ``epoch``, shaped and placed as ``state``."""
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
  return checkpoints.restore(epoch, args=ocp.args.StandardRestore(abstract))
