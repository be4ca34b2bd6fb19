"""The command line of `experiments.train` (``python -m experiments.train``).

Flags only, as the Flax examples' ``main.py``: ``--config`` (a config file,
with ``--config.KEY=VALUE`` overrides) and ``--workdir``. A bad flag, key or
value, data that cannot be loaded or a workdir that cannot hold the run is
one line, ``error: ...``, and exit status 1; ``--help`` lists every key of
the config with its value and meaning, and exits 0.
"""

import json
import os
import re
import sys
import textwrap

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from experiments import train
from experiments import validate
from experiments.configs import default as default_config
from experiments.errors import ConfigError

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), 'configs',
                               'digits.py')
_HELP_FLAGS = re.compile(r'--?(\?|help|helpshort|helpfull)(=.*)?')


def _define_flags(flag_values, argv):
  """--config and --workdir.

  Defining --config loads its default file with the ``--config.KEY=VALUE``
  overrides of ``argv``, so a key the file lacks fails here.
  """
  config_flags.DEFINE_config_file(
      'config', _DEFAULT_CONFIG,
      'Training configuration (a Python file with get_config()); '
      '--config.KEY=VALUE sets one of the keys listed above.',
      flag_values=flag_values, lock_config=True, sys_argv=argv)
  flags.DEFINE_string(
      'workdir', 'runs/digits_default', 'Where metrics, checkpoints and the '
      'result go; rerunning the same command resumes.',
      flag_values=flag_values)


def _format_value(value):
  return repr(tuple(value) if isinstance(value, list) else value)


def usage_text(argv) -> str:
  """`experiments.train`'s docstring, every configuration key and the flags.

  Each key is listed with its value in the config ``argv`` names (with its
  overrides) and its line of `experiments.configs.default.HELP`; a bad
  ``--config`` or override leaves the docstring alone.
  """
  lines = [train.__doc__.rstrip()]
  flag_values = flags.FlagValues()
  try:
    _define_flags(flag_values, argv)
    flag_values(argv, known_only=True)
    values = dict(validate.flat_items(flag_values.config))
  except Exception:  # pylint: disable=broad-except
    return lines[0] + '\n'
  config_file = flag_values['config'].config_filename
  lines += ['', textwrap.fill(
      f'Configuration keys, with their values in {config_file} and the '
      'overrides given; --config.KEY=VALUE sets one:', width=80)]
  for key in list(default_config.HELP) + sorted(set(values) -
                                                set(default_config.HELP)):
    lines.append(textwrap.fill(
        f'--config.{key}: {default_config.HELP.get(key, "")}', width=80,
        initial_indent='  ', subsequent_indent='    '))
    lines.append(f'    (default: {_format_value(values.get(key))})')
  lines += ['', 'Flags:']
  for name in ('config', 'workdir'):
    flag = flag_values[name]
    lines.append(textwrap.fill(f'--{name}: {flag.help}', width=80,
                               initial_indent='  ', subsequent_indent='    '))
    lines.append(f'    (default: {flag.default_as_str})')
  return '\n'.join(lines) + '\n'


def _override_error(error, argv) -> str:
  """One line for a ``--config.KEY=VALUE`` whose KEY the config lacks."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]  # ml_collections wraps its KeyError
  text = str(error.args[0]) if error.args else str(error)
  first, _, hint = text.partition('\n')
  if not re.fullmatch(r"'[^']*'", first):
    return ' '.join(text.split())
  # ml_collections: "'nosie'\nDid you mean "noise" instead of "nosie"?"
  name = first[1:-1]
  flag = [arg.split('=')[0] for arg in argv
          if arg.lstrip('-').startswith('config.')
          and name in arg.split('=')[0].split('.')[1:]]
  where = f'{flag[-1]}: ' if flag else ''
  return (f'{where}the configuration has no key {name!r}. '
          f'{hint or "--help lists the keys."}')


def parse_flags(argv):
  """Defines and parses the flags; a bad --config or key is one line.

  ``--help`` prints `usage_text` and exits 0; an error exits with
  ``error: ...`` (status 1).
  """
  if any(_HELP_FLAGS.fullmatch(arg) for arg in argv[1:]):
    sys.stdout.write(usage_text(argv))
    sys.exit(0)
  try:
    _define_flags(flags.FLAGS, argv)
    argv = app.parse_flags_with_usage(argv)
    if not isinstance(flags.FLAGS.config, ml_collections.ConfigDict):
      flags.FLAGS.config.lock()  # raises why config_flags could not load it
  except OSError as e:  # the --config file cannot be loaded
    sys.exit(f'error: --config: {str(e).splitlines()[-1].strip()}')
  except (KeyError, AttributeError) as e:
    if not any(arg.lstrip('-').startswith('config.') for arg in argv):
      raise  # not an override: a bug worth its traceback
    sys.exit(f'error: {_override_error(e, argv)}')
  return argv


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}; the flags are '
             '--config, --workdir and --config.KEY=VALUE (see --help).')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  train_or_exit(flags.FLAGS.config, flags.FLAGS.workdir)


def train_or_exit(config, workdir) -> None:
  """Trains and prints the result's accuracies and wall time as JSON.

  A `ConfigError` (a bad config or workdir, data that cannot be loaded) is
  one line on stderr, ``error: ...``, and exit status 1.
  """
  try:
    result = train.train_and_evaluate(config, workdir)
  except ConfigError as e:
    sys.exit(f'error: {e}')
  if jax.process_index() == 0:
    print(json.dumps({k: result[k] for k in (
        'final_test_accuracy', 'best_test_accuracy', 'wall_time_s')},
                     indent=2))


def run():
  """``python -m experiments.train``."""
  app.run(main, flags_parser=parse_flags)
