"""A sweep on a two-node Ray cluster on this machine, with a node lost mid-run.

Two nodes, each `ray start` with its own temporary folder and 1 CPU, run a
tiny digits sweep of two runs, one on each; once the second node's run has a
checkpoint, that node's raylet is killed. The run it held is retried by Ray on the
first node and resumes from its checkpoint; every run ends once, and the
table equals the one the same sweep gives on a local Ray instance.
"""

import csv
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from experiments import workdir as workdir_lib
from sweeps import grid
from sweeps import run_files

REPO = pathlib.Path(__file__).resolve().parents[1]
DIGITS = REPO / 'experiments' / 'configs' / 'digits.py'
# Two runs of one method, so that all but the first reuse its compiled
# programs (a compilation cache shared by every run of the test).
METHOD = 'ce'
SEEDS = (0, 1)
NOISE = 'symmetric:0.4'
NUM_EPOCHS = 6
# The `ray` command of this interpreter's Ray, wherever pip put the script.
RAY = [sys.executable, '-m', 'ray.scripts.scripts']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _pids_of(text: str) -> list[int]:
  """The processes whose command line holds ``text``."""
  pids = []
  for proc in pathlib.Path('/proc').iterdir():
    if proc.name.isdigit():
      try:
        if text.encode() in (proc / 'cmdline').read_bytes():
          pids.append(int(proc.name))
      except OSError:
        pass
  return pids


def _descendants(pids) -> set[int]:
  children = {}
  for proc in pathlib.Path('/proc').iterdir():
    if proc.name.isdigit():
      try:
        ppid = int((proc / 'stat').read_text().rsplit(')', 1)[1].split()[1])
      except (OSError, IndexError, ValueError):
        continue
      children.setdefault(ppid, []).append(int(proc.name))
  found, todo = set(), list(pids)
  while todo:
    pid = todo.pop()
    if pid not in found:
      found.add(pid)
      todo.extend(children.get(pid, []))
  return found


def _kill(pids) -> None:
  for pid in pids:
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


def _sweep_argv(root, cache_dir, *more):
  return [sys.executable, '-m', 'sweeps', '--config', str(DIGITS),
          '--methods', METHOD, '--noise', NOISE, '--seeds',
          ','.join(map(str, SEEDS)),
          '--root', str(root), '--set', f'num_epochs={NUM_EPOCHS}',
          '--set', 'checkpoint_every=1', '--set', 'ogc.queue_size=256',
          '--set', 'ogc.update_period=2', '--set', 'progress=False',
          '--set', f'cache_dir={cache_dir}', *more]


def _table(root) -> list[dict]:
  with open(pathlib.Path(root) / 'results.csv') as f:
    return [{k: v for k, v in row.items() if k not in ('workdir', 'wall_time_s')}
            for row in csv.DictReader(f)]


@pytest.mark.slow
def test_a_sweep_survives_a_lost_node_and_equals_a_local_sweep(tmp_path):
  env = dict(os.environ, XLA_FLAGS='', RAY_USAGE_STATS_ENABLED='0',
             RAY_AUTH_MODE='token', RAY_AUTH_TOKEN=secrets.token_hex(32),
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'jax_cache'))
  env.pop('RAY_ADDRESS', None)
  # Ray's sockets live in the temporary folders, whose paths must be short
  # (a socket's path has at most 107 bytes): not under pytest's tmp_path.
  short = pathlib.Path(tempfile.mkdtemp(prefix='ray', dir='/tmp'))
  heads, second = short / 'head', short / 'second'
  address = f'127.0.0.1:{_free_port()}'
  try:
    for command in (
        ['--head', '--port', address.split(':')[1], '--temp-dir', str(heads),
         '--include-dashboard', 'false', '--disable-usage-stats'],
        ['--address', address, '--temp-dir', str(second)]):
      started = subprocess.run([*RAY, 'start', '--num-cpus', '1', *command],
                               env=env, capture_output=True, text=True,
                               timeout=120, check=False)
      assert started.returncode == 0, started.stdout + started.stderr
    raylets = {p: pathlib.Path(f'/proc/{p}/cmdline').read_bytes().split(b'\0')
               for p in _pids_of(f'temp_dir={second}')}
    raylets = {p: args for p, args in raylets.items() if b'raylet' in args[0]}
    assert len(raylets) == 1, raylets
    [second_id] = [a.split(b'=')[1].decode()[:12]
                   for a in next(iter(raylets.values()))
                   if a.startswith(b'--node_id=')]

    root = tmp_path / 'cluster'
    log = open(tmp_path / 'sweep.log', 'w')
    sweep = subprocess.Popen(
        _sweep_argv(root, tmp_path / 'data', '--address', address), cwd=REPO,
        env=env, stdout=log, stderr=subprocess.STDOUT)
    workdirs = [grid.run_dir(root, grid.parse_method(METHOD),
                             grid.parse_noise(NOISE), seed) for seed in SEEDS]
    deadline = time.monotonic() + 300
    killed = False
    while time.monotonic() < deadline and sweep.poll() is None:
      # Once the run on the second node has a checkpoint, that node is lost.
      on_second = [w for w in workdirs if run_files.log_path(w).exists()
                   and f'# on Ray node {second_id}' in
                   run_files.log_path(w).read_text()]
      if on_second and workdir_lib.saved_checkpoints(on_second[0]):
        assert not workdir_lib.result_path(on_second[0]).exists()
        # The node is lost: its raylet and what runs under it, at once.
        _kill(_descendants(raylets))
        killed = True
        break
      time.sleep(0.05)
    assert killed, (tmp_path / 'sweep.log').read_text()
    assert sweep.wait(timeout=400) == 0, (tmp_path / 'sweep.log').read_text()
    out = (tmp_path / 'sweep.log').read_text()
    assert 'Ray: 2 nodes, 2 CPUs, 0 GPUs' in out
    assert '2 done, 0 running, 0 failed, 0 waiting' in out

    logs = [run_files.log_path(w).read_text() for w in workdirs]
    # Three starts in all: the lost run's second is on another node and
    # resumes from its checkpoint.
    starts = [text.count('$ python -m experiments.train') for text in logs]
    assert sorted(starts) == [1, 2], logs
    lost = logs[starts.index(2)]
    nodes = [line.split()[4] for line in lost.splitlines()
             if line.startswith('# on Ray node')]
    assert len(set(nodes)) == 2 and '(resuming)' in lost.splitlines()[
        [i for i, l in enumerate(lost.splitlines())
         if l.startswith('# on Ray node')][1]], lost
    # Each run ended once: every epoch is recorded once.
    for w in workdirs:
      epochs = [row['epoch'] for row in workdir_lib.read_metrics(w)]
      assert epochs == list(range(1, NUM_EPOCHS + 1)), (w, epochs)
  finally:
    _kill(_descendants(_pids_of(str(short))))
    shutil.rmtree(short, ignore_errors=True)

  # The same sweep on a local Ray instance gives the same table.
  local = tmp_path / 'local'
  subprocess.run(_sweep_argv(local, tmp_path / 'data', '--jobs', '2'),
                 cwd=REPO, env=env, check=True, capture_output=True,
                 timeout=400)
  assert _table(local) == _table(root)
