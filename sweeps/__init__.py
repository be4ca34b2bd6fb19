"""Sweeps of training runs, apart from the training: a launcher and its records.

A sweep is a grid of methods x noise settings x seeds of one config file
(`grid`); each run is the training command, ``python -m experiments.train``,
in a process of its own, started as a Ray task on this machine or a cluster
(`runner`, `node`). The sweep skips finished runs and writes a
table and a CSV of their results (`tables`); ``python -m sweeps`` (`sweep`) runs
one from flags or a specification file (``sweeps/specs/*.json``).
``python -m sweeps.lease`` runs a spec within a wall-clock budget and packs the
finished runs' records into one archive, which it merges elsewhere
(`records`); ``sweeps/timeboxed_sweep.sh`` drives it on a machine without
network, where its runs are processes of that machine (`processes`).

The committed records and tables are data, in ``results/`` at the repository
root; a sweep writes there only when told to (``--results``, or a merge).
"""

import argparse


def parser_of_module(module: str, doc: str) -> argparse.ArgumentParser:
  """An argument parser for ``python -m MODULE``: its docstring as the help.

  The first paragraph is the description, the rest the epilog, as written.
  """
  return argparse.ArgumentParser(
      prog=f'python -m {module}', description=doc.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=doc.split('\n\n', 1)[1])
