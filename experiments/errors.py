"""The error of a configuration or workdir that cannot give a run."""


class ConfigError(ValueError):
  """A configuration, data or workdir that cannot give a run; says why.

  `experiments.train.train_and_evaluate` raises it before it writes a file;
  the command line (`experiments.cli`) prints it as one line, without a
  traceback. Data loaders raise subclasses of it.
  """
