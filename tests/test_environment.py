"""Tests for experiments/environment.py: the environment of training processes."""

from experiments import environment


def test_child_env(tmp_path, monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--foo')
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  for name in ('XLA_PYTHON_CLIENT_MEM_FRACTION',
               'XLA_PYTHON_CLIENT_PREALLOCATE'):
    monkeypatch.delenv(name, raising=False)
  env = environment.child_env(tmp_path, jobs=1)
  assert env['XLA_FLAGS'] == '--foo'
  assert env['JAX_COMPILATION_CACHE_DIR'] == str(tmp_path / '.jax_cache')
  assert 'XLA_PYTHON_CLIENT_MEM_FRACTION' not in env  # JAX's default, 75%
  env = environment.child_env(tmp_path, jobs=2)
  assert env['XLA_FLAGS'] == '--foo ' + environment.SINGLE_THREAD_XLA_FLAGS
  # Runs sharing a GPU split 90% of its memory.
  assert env['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.450'
  assert environment.child_env(tmp_path, jobs=4)[
      'XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.225'
  # A setting of the user's own is kept.
  monkeypatch.setenv('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  env = environment.child_env(tmp_path, jobs=4)
  assert 'XLA_PYTHON_CLIENT_MEM_FRACTION' not in env
  assert env['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'


def test_a_gpu_share_takes_that_share_of_the_memory(tmp_path, monkeypatch):
  for name in ('XLA_PYTHON_CLIENT_MEM_FRACTION',
               'XLA_PYTHON_CLIENT_PREALLOCATE'):
    monkeypatch.delenv(name, raising=False)
  env = environment.child_env(tmp_path, jobs=1, gpu_share=0.5)
  assert env['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.450'
  assert 'XLA_PYTHON_CLIENT_MEM_FRACTION' not in environment.child_env(
      tmp_path, jobs=1, gpu_share=1.0)
