"""The progress bar of a training run (`experiments.train`)."""

import sys


class ProgressBar:
  """A tqdm bar of train steps on stderr whose ETA leaves out compilation.

  The first epoch a process runs also compiles the train steps and the
  evaluation, which can take longer than many epochs: timed with it, the bar
  would promise hours. So during that epoch the bar shows no rate or ETA, and
  at its end (its first `set_postfix`, after the evaluation) the bar's clock
  starts again: the rate and ETA come from compiled epochs only.

  It takes tqdm's ``update(n)``, ``set_postfix(**kwargs)`` and ``close()``.
  """

  _WARM_UP_FORMAT = ('{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<?, the '
                     'first epoch compiles{postfix}]')

  def __init__(self, total: int, done: int = 0):
    self._total = total
    self._warming_up = True
    self._bar = self._new_bar(done, bar_format=self._WARM_UP_FORMAT,
                              leave=False)

  def _new_bar(self, done, **kwargs):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    return tqdm(total=self._total, initial=done, unit='step',
                dynamic_ncols=True, file=sys.stderr, **kwargs)

  def update(self, num_steps: int) -> None:
    self._bar.update(num_steps)

  def set_postfix(self, **kwargs) -> None:
    if self._warming_up:  # the first epoch is done: time the bar from here
      done = self._bar.n
      self._bar.close()
      self._bar = self._new_bar(done)
      self._warming_up = False
    self._bar.set_postfix(**kwargs)

  def close(self) -> None:
    self._bar.close()
