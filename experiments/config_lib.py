"""A run's configuration: the config file, its overrides, its keys and their help.

Both commands build a run's config here, in one way: ``python -m
experiments.train`` from its flags (`experiments.cli`), and a sweep (`sweeps`)
from its config file and ``KEY=VALUE`` overrides, which it checks before it
starts a run, so a sweep refuses what the training command would refuse.

* `parse_flags` defines ``--config`` (ml_collections' ``config_flags``: a
  Python file with ``get_config()``, ``path.py:ARG`` for ``get_config(ARG)``,
  each key overridable as ``--config.KEY=VALUE``) and parses a command line;
  `load` does the same for a file and overrides given as values.
* `check_keys`: every key of a config has its line of help
  (`experiments.configs.default.HELP`), so a typo made in Python
  (``config.num_epoch = 3``) is refused as one on the command line is
  (`unknown_key`, with `did_you_mean`).
* `describe_keys`: every key with its value and help, for ``--help``.
* `one_line_errors`: a ``ValueError`` as one line, ``error: ...``, and exit
  status 1, as both commands end on a bad config.
"""

import contextlib
import difflib
import os
import sys
import textwrap
from typing import Iterable, Mapping, Sequence, Union

from absl import flags
import ml_collections
from ml_collections import config_flags

from experiments.configs import default as default_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), 'configs',
                              'digits.py')
CONFIG_HELP = ('Training configuration (a Python file with get_config()); '
               '--config.KEY=VALUE sets one of the keys listed above.')


def did_you_mean(name, choices) -> str:
  """`` (did you mean 'a', 'b' or 'c'?)`` for the choices close to ``name``.

  Example:
    >>> did_you_mean('cifar11', ['cifar10', 'cifar100', 'digits'])
    " (did you mean 'cifar10' or 'cifar100'?)"
  """
  close = [repr(c) for c in difflib.get_close_matches(name, choices, n=3)]
  if not close:
    return ''
  if len(close) > 1:
    close = [', '.join(close[:-1]), close[-1]]
  return f' (did you mean {" or ".join(close)}?)'


def flat_items(config, prefix=''):
  """``('noise.rate', 0.5)``-style pairs of every leaf of a ConfigDict."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from flat_items(value, f'{prefix}{key}.')
    else:
      yield prefix + key, value


def _known_names() -> list[str]:
  """Every key of `default_config.HELP` and every group of keys (``noise``)."""
  keys = list(default_config.HELP)
  return keys + sorted({key.rsplit('.', 1)[0] for key in keys if '.' in key})


def unknown_key(key: str) -> str:
  """The message for a key no config has, with the keys close to it.

  Example:
    >>> unknown_key('nosie.rate')
    "the configuration has no key 'nosie.rate' (did you mean 'noise.rate' or 'noise.seed'?); `python -m experiments.train --help` lists the keys"
  """
  return (f'the configuration has no key {key!r}'
          f'{did_you_mean(key, _known_names())}; '
          '`python -m experiments.train --help` lists the keys')


def check_keys(config) -> None:
  """Every key of ``config`` is one of `default_config.HELP`, and every one is there.

  Raises:
    ValueError: a key the help lacks (`unknown_key`), or one it has that the
      config lacks.
  """
  values = dict(flat_items(config))
  for key in values:
    if key not in default_config.HELP:
      raise ValueError(unknown_key(key))
  missing = [key for key in default_config.HELP if key not in values]
  if missing:
    raise ValueError(f'The configuration lacks the keys {missing} (see '
                     'experiments/configs/default.py).')


# ----------------------------------------------------------------------------
# Loading: a config file and its overrides.


def _override_keys(argv) -> list[str]:
  """The KEY of every ``--config.KEY[=VALUE]`` of a command line, in order."""
  return [arg.lstrip('-').split('=', 1)[0][len('config.'):] for arg in argv
          if arg.lstrip('-').startswith('config.')]


def _config_file(argv, default) -> str:
  """The ``--config`` a command line names (the last one), or ``default``."""
  files = [arg.split('=', 1)[1] for arg in argv
           if arg.startswith(('--config=', '-config='))]
  for i, arg in enumerate(argv[:-1]):
    if arg in ('--config', '-config'):
      files.append(argv[i + 1])
  return files[-1] if files else default


def _unknown_override(argv, default) -> str | None:
  """`unknown_key` of the first override whose key the config file lacks."""
  flag_values = flags.FlagValues()  # the config file alone, no overrides
  parse_flags(flag_values, ['load', f'--config={_config_file(argv, default)}'])
  known = set()
  for key, _ in flat_items(flag_values.config):
    parts = key.split('.')
    known.update('.'.join(parts[:i]) for i in range(1, len(parts) + 1))
  for key in _override_keys(argv):
    if key not in known:
      return f'--config.{key}: {unknown_key(key)}'
  return None


def parse_flags(flag_values, argv: Sequence[str],
                default: str = DEFAULT_CONFIG) -> list[str]:
  """Defines ``--config`` on ``flag_values`` and parses ``argv`` with it.

  ``argv`` is a whole command line (its first item the program): its
  ``--config`` file (else ``default``) and ``--config.KEY=VALUE`` overrides,
  with the other flags defined on ``flag_values``. The config is then
  ``flag_values.config``, locked: a key it lacks cannot be set.

  Returns:
    The arguments left after the flags (the program first).

  Raises:
    ValueError: in one line: the config file cannot be loaded, an override
      names a key the config lacks (`unknown_key`) or gives a value of the
      wrong type, or a flag is unknown.
  """
  argv = list(argv)
  try:
    config_flags.DEFINE_config_file(
        'config', default, CONFIG_HELP, flag_values=flag_values,
        lock_config=True, sys_argv=argv)
    rest = flag_values(argv)
    config = flag_values.config
    if not isinstance(config, ml_collections.ConfigDict):
      config.lock()  # raises why config_flags could not load the file
      raise ValueError(f'--config: {flag_values["config"].config_filename} '
                       'has no get_config() that returns a ConfigDict')
  except OSError as e:  # the config file cannot be loaded
    raise ValueError(f'--config: {str(e).splitlines()[-1].strip()}') from None
  except (KeyError, AttributeError):
    message = _unknown_override(argv, default)
    if message is None:
      raise  # not an unknown key: a bug worth its traceback
    raise ValueError(message) from None
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    raise ValueError(' '.join(lines[:1] + lines[-1:] if len(lines) > 1
                              else lines)) from None
  return rest


def load(config_file: str,
         overrides: Union[Mapping[str, str], Iterable[str]] = (),
         where: str = '') -> ml_collections.ConfigDict:
  """A run's config from a file and overrides, as the training command builds it.

  Args:
    config_file: a Python file with ``get_config()`` (``path.py:ARG`` calls
      ``get_config(ARG)``).
    overrides: ``{KEY: VALUE}`` or ``KEY=VALUE`` strings, values as written
      on the command line (``--config.KEY=VALUE``).
    where: where the overrides come from, to begin the error message.

  Returns:
    The config, as `parse_flags` gives it for the same command line.

  Raises:
    ValueError: as `parse_flags`, prefixed with ``where``.

  Example:
    >>> config = load('experiments/configs/digits.py',
    ...               {'noise.rate': '0.2', 'method': 'ce'})
    >>> config.noise.rate, config.method
    (0.2, 'ce')
  """
  if isinstance(overrides, Mapping):
    overrides = [f'{key}={value}' for key, value in overrides.items()]
  argv = ['load', f'--config={config_file}'] + [
      f'--config.{override}' for override in overrides]
  flag_values = flags.FlagValues()
  try:
    rest = parse_flags(flag_values, argv, default=config_file)
  except ValueError as e:
    raise ValueError(f'{where}: {e}' if where else str(e)) from None
  if len(rest) > 1:
    raise ValueError(f'{where + ": " if where else ""}not an override: '
                     f'{rest[1:]}')
  return flag_values.config


# ----------------------------------------------------------------------------
# Help and errors.


def _format_value(value):
  return repr(tuple(value) if isinstance(value, list) else value)


def describe_keys(config, config_file: str) -> list[str]:
  """Lines for ``--help``: every key of ``config``, its value and its help."""
  values = dict(flat_items(config))
  lines = [textwrap.fill(
      f'Configuration keys, with their values in {config_file} and the '
      'overrides given; --config.KEY=VALUE sets one:', width=80)]
  for key in list(default_config.HELP) + sorted(set(values) -
                                                set(default_config.HELP)):
    lines.append(textwrap.fill(
        f'--config.{key}: {default_config.HELP.get(key, "")}', width=80,
        initial_indent='  ', subsequent_indent='    '))
    lines.append(f'    (default: {_format_value(values.get(key))})')
  return lines


@contextlib.contextmanager
def one_line_errors(errors=(ValueError,)):
  """Ends the program on ``errors`` with one line, ``error: ...`` (status 1).

  Example:
    >>> with one_line_errors():
    ...   raise ValueError('config.noise.rate=1.5 is not a noise rate;\\n'
    ...                    'expected a number in [0, 1).')
    Traceback (most recent call last):
    ...
    SystemExit: error: config.noise.rate=1.5 is not a noise rate; expected a number in [0, 1).
  """
  try:
    yield
  except errors as e:
    sys.exit(f'error: {" ".join(str(e).split())}')
