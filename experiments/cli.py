"""The command lines of `experiments.train` and `experiments.audit`.

Flags only, as the Flax examples' ``main.py``: ``--config`` (a config file,
with ``--config.KEY=VALUE`` overrides; `experiments.config_lib`) and
``--workdir``. A bad flag, key or value, data that cannot be loaded or a
workdir that cannot hold the run is one line, ``error: ...``, and exit
status 1; Ctrl-C is one line, the epoch it stopped and that the same command
continues, and exit status 130 (`interrupted`); ``--help`` lists every key
of the config with its value and meaning, and exits 0.

`experiments.train`'s ``main`` and `experiments.audit`'s use its parts
(`parse_flags`, `interrupted`, `one_line_errors`, `print_result`); the audit
takes one flag of its own (`parse_flags`'s ``define_flags``).
"""

import contextlib
import json
import os
import re
import signal
import sys
import textwrap
import threading

from absl import flags
import jax

from experiments import config_lib
from experiments import workdir as workdir_lib
from experiments.errors import ConfigError

_HELP_FLAGS = re.compile(r'--?(\?|help|helpshort|helpfull)(=.*)?')


def _define_workdir(flag_values):
  flags.DEFINE_string(
      'workdir', 'runs/digits_default', 'Where metrics, checkpoints and the '
      'result go; rerunning the same command resumes.',
      flag_values=flag_values)


def usage_text(doc: str, argv, define_flags=None) -> str:
  """``doc`` (the command's docstring), every configuration key and the flags.

  Each key is listed with its value in the config ``argv`` names (with its
  overrides) and its help (`config_lib.describe_keys`); a bad ``--config``
  or override leaves the docstring alone. ``define_flags(flag_values)``
  defines the command's flags besides ``--config`` and ``--workdir``.
  """
  lines = [doc.rstrip()]
  flag_values = flags.FlagValues()
  _define_workdir(flag_values)
  if define_flags is not None:
    define_flags(flag_values)
  names = ['config'] + list(flag_values)
  argv = [arg for arg in argv if not _HELP_FLAGS.fullmatch(arg)]
  try:
    config_lib.parse_flags(flag_values, argv)
  except Exception:  # pylint: disable=broad-except
    return lines[0] + '\n'
  lines += [''] + config_lib.describe_keys(
      flag_values.config, flag_values['config'].config_filename)
  lines += ['', 'Flags:']
  for name in names:
    flag = flag_values[name]
    lines.append(textwrap.fill(f'--{name}: {flag.help}', width=80,
                               initial_indent='  ', subsequent_indent='    '))
    lines.append(f'    (default: {flag.default_as_str})')
  return '\n'.join(lines) + '\n'


def parse_flags(argv, doc: str = '', define_flags=None):
  """Defines and parses the flags; a bad --config, key or flag is one line.

  ``--help`` prints `usage_text` and exits 0; an error exits with
  ``error: ...`` (status 1). ``define_flags(flag_values)`` defines the
  command's flags besides ``--config`` and ``--workdir``.
  """
  if any(_HELP_FLAGS.fullmatch(arg) for arg in argv[1:]):
    sys.stdout.write(usage_text(doc, argv, define_flags))
    sys.exit(0)
  _define_workdir(flags.FLAGS)
  if define_flags is not None:
    define_flags(flags.FLAGS)
  with config_lib.one_line_errors():
    return config_lib.parse_flags(flags.FLAGS, argv)


def check_no_arguments(argv) -> None:
  """Exits with one line if the command line has arguments besides flags."""
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}; the flags are '
             '--config, --workdir and --config.KEY=VALUE (see --help).')


def interruption_message(config, workdir) -> str:
  """What Ctrl-C prints: the epoch it stopped and where the rerun starts.

  The epoch is the one after the last in ``metrics.jsonl``, or that one if
  its checkpoint was due and is missing (Ctrl-C while saving it); the rerun
  starts after the last checkpoint (`experiments.workdir.saved_checkpoints`).
  """
  logged = workdir_lib.read_metrics(workdir)
  checkpoints = workdir_lib.saved_checkpoints(workdir)
  last = logged[-1]['epoch'] if logged else 0
  saving = last and last not in checkpoints and (
      last % config.checkpoint_every == 0 or last == config.num_epochs)
  epoch = last if saving else min(last + 1, config.num_epochs)
  where = (f'the last checkpoint (epoch {checkpoints[-1]})' if checkpoints
           else 'the start (no epoch was checkpointed yet)')
  return (f'interrupted at epoch {epoch}; run the same command to continue '
          f'from {where}.')


# Seconds from Ctrl-C to the exit when the KeyboardInterrupt does not reach
# `interrupted` (Python drops one raised in a garbage-collector callback,
# which jax installs; a compilation may not return to Python for long).
_INTERRUPT_GRACE_S = 3.0
_exiting = threading.Lock()


def _exit_interrupted(config, workdir) -> None:
  """Prints `interruption_message` and ends the process, with status 130."""
  _exiting.acquire()  # once: a second caller waits for the exit
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C
  try:
    message = interruption_message(config, workdir)
    workdir_lib.remove_unfinished_checkpoints(workdir)
  except Exception:  # pylint: disable=broad-except
    message = ('interrupted; run the same command to continue from the '
               'last checkpoint.')
  sys.stdout.flush()
  if getattr(config, 'progress', False):
    message = '\n' + message  # below the progress bar
  sys.stderr.write(message + '\n')
  sys.stderr.flush()
  os._exit(130)  # pylint: disable=protected-access


@contextlib.contextmanager
def interrupted(config, workdir):
  """Ctrl-C in the body is one line on stderr and exit status 130.

  Nothing is half-written: every file of the workdir is replaced atomically,
  an unfinished checkpoint is removed, and the rerun resumes from the last
  checkpoint. The process ends at once (``os._exit``): jax's and Orbax's
  threads are not waited for, which at the interpreter's shutdown could
  print more or crash. Where the KeyboardInterrupt does not reach this
  function within `_INTERRUPT_GRACE_S`, a timer ends the process the same
  way.
  """
  previous = signal.getsignal(signal.SIGINT)
  timers = []

  def on_interrupt(signum, frame):
    del signum, frame
    timers.append(threading.Timer(_INTERRUPT_GRACE_S, _exit_interrupted,
                                  (config, workdir)))
    timers[-1].daemon = True
    timers[-1].start()
    raise KeyboardInterrupt

  signal.signal(signal.SIGINT, on_interrupt)
  try:
    yield
  except KeyboardInterrupt:
    _exit_interrupted(config, workdir)
  finally:  # the body ended, its result written: nothing left to stop
    for timer in timers:
      timer.cancel()
    signal.signal(signal.SIGINT, previous)


def one_line_errors():
  """A `ConfigError` (a bad config or workdir, data that cannot be loaded)
  in the body is one line on stderr, ``error: ...``, and exit status 1."""
  return config_lib.one_line_errors(ConfigError)


def print_result(result: dict) -> None:
  """Prints a run's accuracies and wall time as JSON (process 0)."""
  if jax.process_index() == 0:
    print(json.dumps({k: result[k] for k in (
        'final_test_accuracy', 'best_test_accuracy', 'wall_time_s')},
                     indent=2))
