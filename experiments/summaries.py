"""TensorBoard summaries of a run, beside its ``metrics.jsonl``.

Each epoch's row of ``metrics.jsonl`` becomes scalars at step = the epoch,
under ``WORKDIR/tensorboard/``: a number under its own name, a nested field
under ``parent/child`` (OGC's mixture: ``gmm/mean_clean``) and a list under
``name/index`` (the per-class test accuracy: ``test_accuracy_per_class/3``);
fields without a value (None) are left out. Written with tensorboardX, which
needs neither TensorFlow nor PyTorch; ``tensorboard --logdir runs`` reads
them.
"""

import numbers
from typing import Iterator

from experiments import workdir as workdir_lib


def scalars(row: dict, prefix: str = '') -> Iterator[tuple[str, float]]:
  """The ``(tag, value)`` of every number in ``row``, nested ones flattened.

  Example:
    >>> sorted(scalars({'epoch': 3, 'tau': None, 'gmm': {'mean_clean': 0.5},
    ...                 'per_class': [0.25, 1.0]}))
    [('epoch', 3.0), ('gmm/mean_clean', 0.5), ('per_class/0', 0.25), ('per_class/1', 1.0)]
  """
  for key, value in row.items():
    tag = f'{prefix}{key}'
    if isinstance(value, dict):
      yield from scalars(value, f'{tag}/')
    elif isinstance(value, (list, tuple)):
      yield from scalars({str(i): v for i, v in enumerate(value)}, f'{tag}/')
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
      yield tag, float(value)


class Summaries:
  """Writes each epoch's row as TensorBoard scalars."""

  def __init__(self, workdir):
    # Imported here: only a run that writes summaries needs tensorboardX.
    import tensorboardX  # pylint: disable=g-import-not-at-top
    self.writer = tensorboardX.SummaryWriter(
        str(workdir_lib.summaries_dir(workdir)))

  def write(self, row: dict) -> None:
    """Writes ``row``'s numbers at step ``row['epoch']`` and flushes."""
    step = int(row['epoch'])
    for tag, value in scalars(row):
      if tag != 'epoch':
        self.writer.add_scalar(tag, value, step)
    self.writer.flush()

  def close(self) -> None:
    self.writer.close()
