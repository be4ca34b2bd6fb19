"""Tests for experiments/progress.py: no ETA until compiled steps are timed."""

import re

from experiments import progress


def _shown(bar, capsys):
  """What the bar shows now (tqdm redraws at most every 0.1 s by itself)."""
  bar._bar.refresh()  # pylint: disable=protected-access
  return re.split(r'[\r\n]', capsys.readouterr().err)[-1]


def test_the_first_epoch_has_no_rate_and_the_next_ones_do(capsys):
  bar = progress.ProgressBar(total=30, done=0)
  bar.update(10)  # the first epoch: compiling
  assert re.search(r' 10/30 \[\d\d:\d\d<\?, the first epoch compiles\]',
                   _shown(bar, capsys))
  bar.set_postfix(epoch=1, loss='2.000')
  bar.update(10)
  # Timed again from the end of the first epoch: a rate and an ETA.
  line = _shown(bar, capsys)
  assert re.search(r' 20/30 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(step/s|s/step), '
                   r'epoch=1, loss=2.000\]', line), line
  bar.close()


def test_a_resumed_run_starts_the_bar_where_it_stopped(capsys):
  bar = progress.ProgressBar(total=30, done=20)
  bar.update(5)
  assert ' 25/30 [' in _shown(bar, capsys)
  bar.close()
