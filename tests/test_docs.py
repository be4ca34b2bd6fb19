"""Every code block of README.md and docs/*.md runs as written.

Each ```python block runs in a fresh interpreter, from an empty temporary folder
(so that it depends on nothing beside it), with the repository on PYTHONPATH
(the experiments run from a checkout) and the temporary folder as TMPDIR; it
must exit 0 within its timeout and print something that shows it worked. Each
```bash block runs the same way under bash, unless `NOT_RUN` names it with the
reason; a block that is neither run nor named fails the test, so a new block
must be either.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

# Each block runs in a fresh interpreter (a subprocess importing JAX): the
# end-to-end tier.
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md'))
TIMEOUT_S = 300  # ~20 s on an idle 2-core machine; far longer when loaded

# Bash blocks that are not run, by a line they contain, with the reason.
NOT_RUN = {
    'python -m pip install -r requirements.txt': 'installs packages and runs '
        'the whole suite (the CI command itself)',
    '--config experiments/configs/cifar10.py --workdir': 'a 150-epoch ResNet '
        'training on CIFAR-10',
    'pip install tensorflow importlib_resources': 'needs TensorFlow and '
        'internet (tests/test_data.py checks the call on the pinned tfds)',
    "tfds.builder('cifar10_n'": 'needs TensorFlow, internet and the CIFAR-N '
        'files',
    'make_image_folder --source python-batches': 'needs the CIFAR-10 download '
        '(tests/test_data.py runs it on generated batches)',
    'bash sweeps/timeboxed_sweep.sh': 'trains; tests/test_lease.py runs '
        'the script on digits',
    'python -m sweeps.plot RUN1': 'needs finished runs '
        '(tests/test_plot.py)',
    'python -m sweeps': 'a sweep: minutes to hours of training',
    'ray start --head --port 6379': 'needs a cluster; tests/test_ray_cluster.py '
        'starts two Ray nodes on this machine and sweeps on them',
    'python -m benchmarks.parity --authors PATH': "needs PyTorch, the authors' "
        "checkout and CIFAR-10 (.ci/run runs the benchmark's --quick smoke run)",
    '--config.labels_csv=../shared/data/cifar10n/aggre.csv': 'trains on '
        'CIFAR-10 with CIFAR-10N labels (tests/test_suspects.py audits a '
        'generated folder with a labels CSV)',
}

# Blocks that are run although a line of NOT_RUN is in them, by a line of
# theirs: a sweep small enough for the suite.
RUN_ANYWAY = ('--root "$TMPDIR/many"',)

# What a block's output must contain, by a line of the block; by default any
# non-empty output.
EXPECTED_OUTPUT = {
    'print("tau:"': r'tau: 1e\+07',
    'estimated noise rate': r'tau \d',
    'R {float(ratio)': r'R 3\.0000 \(target',
    'num_invalid': r'ValueError: `epsilon`.*\n.*num_invalid 2',
    'train.train_and_evaluate': r'test accuracy after 3 epochs: 0\.\d+',
    '--root "$TMPDIR/many"': r'Ray: 1 node[^\n]*\n(.*\n)*  2 done, 0 running, '
        r'0 failed, 0 waiting',
    '--config.noise.rate=0.2 --help':
        r"--config\.noise\.rate: [^\n]*\n +\(default: 0\.2\)",
}


def code_blocks(language):
  """(file name, index, code) of every ```language block of the docs."""
  blocks = []
  for path in DOCS:
    found = re.findall(rf'^ *```{language}\n(.*?)^ *```', path.read_text(),
                       flags=re.S | re.M)
    for index, code in enumerate(found):
      # Blocks in list items are indented: dedent by the first line's indent.
      indent = len(code) - len(code.lstrip(' '))
      lines = [line[indent:] if line.startswith(' ' * indent) else line
               for line in code.splitlines()]
      blocks.append((path.name, index, '\n'.join(lines) + '\n'))
  return blocks


def _not_run_reason(code):
  if any(line in code for line in RUN_ANYWAY):
    return None
  for line, reason in NOT_RUN.items():
    if line in code:
      return reason
  return None


def _expected(code):
  for line, pattern in EXPECTED_OUTPUT.items():
    if line in code:
      return pattern
  return None


def _run(command, tmp_path):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO)] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
             TMPDIR=str(tmp_path), XLA_FLAGS='')
  return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=TIMEOUT_S, check=False)


def _check(proc, code):
  assert proc.returncode == 0, proc.stdout + proc.stderr
  out = proc.stdout
  assert out.strip(), f'printed nothing:\n{code}'
  pattern = _expected(code)
  if pattern:
    assert re.search(pattern, out), out


PYTHON_BLOCKS = code_blocks('python')
BASH_BLOCKS = code_blocks('bash')


@pytest.mark.parametrize('name,index,code', PYTHON_BLOCKS,
                         ids=[f'{n}-{i}' for n, i, _ in PYTHON_BLOCKS])
def test_python_block(tmp_path, name, index, code):
  del name, index
  (tmp_path / 'block.py').write_text(code)
  work = tmp_path / 'work'
  work.mkdir()
  _check(_run([sys.executable, str(tmp_path / 'block.py')], work), code)


@pytest.mark.parametrize('name,index,code', BASH_BLOCKS,
                         ids=[f'{n}-{i}' for n, i, _ in BASH_BLOCKS])
def test_bash_block(tmp_path, name, index, code):
  del name, index
  if _not_run_reason(code):
    pytest.skip(_not_run_reason(code))
  # The commands are written for the repository root; the temporary folder
  # stands in for it, with the checkout's code reached through PYTHONPATH and
  # its configs through a link.
  (tmp_path / 'experiments').symlink_to(REPO / 'experiments')
  _check(_run(['bash', '-euo', 'pipefail', '-c', code], tmp_path), code)


def test_every_doc_has_runnable_code_and_every_block_is_classified():
  assert len(PYTHON_BLOCKS) >= 5
  names = {name for name, _, _ in PYTHON_BLOCKS}
  assert {'README.md', 'method.md', 'bad_input.md', 'experiments.md'} <= names
  run = [code for _, _, code in BASH_BLOCKS if not _not_run_reason(code)]
  assert run, 'no bash block is run'
  # Every expected output names a block that exists.
  every = ''.join(code for _, _, code in PYTHON_BLOCKS + BASH_BLOCKS)
  for line in list(EXPECTED_OUTPUT) + list(NOT_RUN) + list(RUN_ANYWAY):
    assert line in every, line
