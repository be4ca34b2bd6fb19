"""The layering of the packages: what each may import.

The library `ogc_jax` needs jax, optax, chex and numpy alone (`ogc_jax.testing`
adds SciPy and scikit-learn, and is imported only on demand); the experiments
(`experiments`: the training, its configs, data, models and noise) need the
library and never the launcher of sweeps (`sweeps`); no module imports the
tests or edits ``sys.path``, and no two modules import each other, through
any chain.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('ogc_jax', 'experiments', 'sweeps', 'benchmarks')


def _modules():
  return sorted(path for package in PACKAGES
                for path in (REPO / package).rglob('*.py'))


def _imported(tree):
  """Top-level names of every module an AST imports."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name.split('.')[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      yield node.module.split('.')[0]


def _edits_sys_path(tree):
  return any(isinstance(node, ast.Attribute) and node.attr == 'path'
             and isinstance(node.value, ast.Name) and node.value.id == 'sys'
             for node in ast.walk(tree))


@pytest.mark.parametrize('path', _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_the_tests_or_edits_sys_path(path):
  tree = ast.parse(path.read_text(), str(path))
  assert 'tests' not in set(_imported(tree))
  assert not _edits_sys_path(tree)


def test_library_imports_neither_experiments_nor_benchmarks():
  for path in (REPO / 'ogc_jax').rglob('*.py'):
    imported = set(_imported(ast.parse(path.read_text(), str(path))))
    assert not imported & {'experiments', 'benchmarks', 'tests'}, path


def _module_name(path):
  parts = list(path.relative_to(REPO).with_suffix('').parts)
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imported_modules(path, known):
  """The modules of ours that a module imports, anywhere in it."""
  tree = ast.parse(path.read_text(), str(path))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names = [f'{node.module}.{alias.name}' for alias in node.names]
      names.append(node.module)
    else:
      continue
    for name in names:
      if name in known:
        yield name


@pytest.mark.parametrize('package', ['experiments', 'benchmarks'])
def test_the_harness_and_the_benchmarks_never_import_the_sweeps(package):
  # The sweeps launch the harness; the benchmarks measure it. What both
  # need (the environment of side-by-side training processes) lives in the
  # harness (`experiments.environment`).
  for path in (REPO / package).rglob('*.py'):
    imported = set(_imported(ast.parse(path.read_text(), str(path))))
    assert 'sweeps' not in imported, path


def test_methods_compute_and_the_run_writes():
  # A method computes (its gradients, its metrics, what of its state to
  # keep); the run writes its workdir. Nor does the training package plot
  # many runs: that is the sweeps' (`sweeps.plot`).
  modules = {_module_name(p): p for p in _modules()}
  imported = set(_imported_modules(REPO / 'experiments' / 'methods.py',
                                   modules))
  assert not imported & {'experiments.workdir', 'experiments.files',
                         'experiments.suspects'}, imported
  assert not (REPO / 'experiments' / 'plot.py').exists()


def test_no_import_circle():
  modules = {_module_name(p): p for p in _modules()}
  graph = {name: set(_imported_modules(path, modules)) - {name}
           for name, path in modules.items()}
  # A package's __init__ that its own modules import is not a circle.
  for name in graph:
    graph[name] = {m for m in graph[name] if not name.startswith(m + '.')}
  state = {}

  def visit(name, chain):
    if state.get(name) == 'done':
      return
    assert state.get(name) != 'open', ' -> '.join(chain + [name])
    state[name] = 'open'
    for other in sorted(graph[name]):
      visit(other, chain + [name])
    state[name] = 'done'

  for name in sorted(graph):
    visit(name, [])


def test_import_ogc_jax_loads_only_its_dependencies():
  code = ('import sys, ogc_jax; '
          'print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env,
                       check=True, capture_output=True, text=True).stdout
  loaded = set(out.split())
  assert 'ogc_jax' in loaded
  for heavy in ('scipy', 'sklearn', 'flax', 'tensorflow', 'matplotlib',
                'experiments', 'benchmarks', 'tests'):
    assert heavy not in loaded, heavy


def test_only_the_sweeps_use_ray_and_only_when_they_run():
  for path in _modules():
    imported = set(_imported(ast.parse(path.read_text(), str(path))))
    assert 'ray' not in imported or path.parent.name == 'sweeps', path
  # Planning, tables and records work without Ray: it is imported when runs
  # start (`sweeps.runner.connect`), not with the modules.
  code = ('import sys; import sweeps.sweep, sweeps.lease, sweeps.compare_lists; '
          "print('ray' in sys.modules)")
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == 'False'
