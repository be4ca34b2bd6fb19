"""`ConfigError`: what the command line prints as one line, without a traceback."""


class ConfigError(ValueError):
  """A configuration, workdir or dataset that cannot give a run.

  `experiments.train.train_and_evaluate` raises it before it writes a file;
  the command line prints it as one line, ``error: ...``, and exits with
  status 1. The message says what is wrong and how to put it right.
  """
