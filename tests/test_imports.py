"""The layering of the packages: what each may import.

The library `ogc_jax` needs jax, optax, chex and numpy alone (`ogc_jax.testing`
adds SciPy and scikit-learn, and is imported only on demand); no library,
experiment or benchmark module imports the tests or edits ``sys.path``.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('ogc_jax', 'experiments', 'benchmarks')


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
