"""The README's Python examples run as written."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'README.md')


def python_blocks():
  with open(README) as f:
    return re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)


@pytest.mark.parametrize('index', range(len(python_blocks())))
def test_readme_example_runs(index, capsys):
  exec(compile(python_blocks()[index], f'README block {index}', 'exec'), {})
  out = capsys.readouterr().out
  if 'tree_get' in python_blocks()[index]:
    assert float(out.strip()) == 1e7  # no clipping before the first fit


def test_readme_has_examples():
  assert len(python_blocks()) >= 2
