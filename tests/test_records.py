"""Tests for sweeps/records.py: packing, reading and merging records."""

import io
import tarfile

import pytest

from experiments import files
from experiments import workdir as workdir_lib
from sweeps import grid
from sweeps import lease
from sweeps import records
from sweeps import run_files
from sweeps import runner
from sweeps import sweep
from tests.conftest import full_result
from tests.conftest import write_spec
from tests.test_tables import _table_rows

NOISE = grid.parse_noise('symmetric:0.4')


def _finished_run(root, method, final=0.5):
  """A finished run's workdir as `execute` and experiments.train leave it."""
  run = grid.plan_runs(root, [grid.parse_method(method)], [NOISE], [0], {})[0]
  run.workdir.mkdir(parents=True)
  files.write_json(workdir_lib.config_path(run.workdir),
                         {'method': method, 'seed': 0})
  workdir_lib.write_metrics(run.workdir, [{'epoch': 1, 'test_accuracy': final}])
  run_files.write_sweep_args(run.workdir, {
      'config': runner.config_for_record('experiments/configs/digits.py'),
      'overrides': run.overrides})
  workdir_lib.write_result(run.workdir, full_result(final))
  (run.workdir / 'checkpoints').mkdir()
  (run.workdir / 'checkpoints' / 'big').write_bytes(b'0' * 1000)
  return run


@pytest.fixture
def returned(tmp_path):
  """An archive of two finished runs, and a spec of a local root."""
  remote = tmp_path / 'remote'
  runs = [_finished_run(remote, 'ce', 0.5), _finished_run(remote, 'gce', 0.6)]
  archive = tmp_path / 'records.tar.gz'
  records.pack_records(archive, remote, runs, {'spec': 'whatever'})
  local = tmp_path / 'local'
  spec = write_spec(tmp_path / 'spec.json', local, ['ce', 'gce', 'ogc_ce'],
                     sweep.REPO_ROOT / 'experiments/configs/digits.py')
  return archive, spec, local


def test_merge_is_idempotent_and_aggregate_builds_the_table(returned,
                                                            capsys):
  archive, spec, local = returned
  assert lease.main(['merge', str(archive), '--spec', str(spec)]) == 0
  out = capsys.readouterr().out
  assert '2 runs merged into' in out
  assert f'python -m sweeps --spec {spec} --results --aggregate-only' in out
  ce = grid.run_dir(local, grid.parse_method('ce'), NOISE, 0)
  assert sorted(p.name for p in ce.iterdir()) == [
      'config.json', 'metrics.jsonl', 'result.json', 'sweep_args.json']
  assert lease.main(['merge', str(archive), '--spec', str(spec)]) == 0
  assert ('0 runs merged into' in capsys.readouterr().out)
  # The table from records alone, without checkpoints.
  assert sweep.main(['--spec', str(spec), '--results', '--aggregate-only']) == 0
  rows = _table_rows((local / 'results.md').read_text())
  assert rows == {'ce': ['50.0'], 'gce': ['**60.0**'], 'ogc_ce': ['–']}


def test_merge_refuses_a_conflicting_record_and_writes_nothing(returned,
                                                               capsys):
  archive, spec, local = returned
  _finished_run(local, 'gce', 0.7)  # the same run, another result
  with pytest.raises(ValueError, match=r'gce/symmetric_0.4/seed_0: finished in '
                     r'.* with a different record \(metrics.jsonl, '
                     r'result.json differ\)'):
    records.merge(archive, sweep.load_spec(spec))
  assert not grid.run_dir(local, grid.parse_method('ce'), NOISE, 0).exists()
  assert lease.main(['merge', str(archive), '--spec', str(spec)]) == 1
  assert 'nothing merged' in capsys.readouterr().err


def test_merge_refuses_runs_outside_the_spec_or_with_other_settings(
    tmp_path, returned):
  archive, _, local = returned
  only_ce = write_spec(tmp_path / 'ce.json', local, ['ce'],
                        sweep.REPO_ROOT / 'experiments/configs/digits.py')
  with pytest.raises(ValueError, match='gce/symmetric_0.4/seed_0: not a run of '
                     'the spec'):
    records.merge(archive, sweep.load_spec(only_ce))
  other = write_spec(tmp_path / 'o.json', local, ['ce', 'gce'],
                      sweep.REPO_ROOT / 'experiments/configs/digits.py',
                      set=['num_epochs=3'])
  with pytest.raises(ValueError, match='run with other settings'):
    records.merge(archive, sweep.load_spec(other))
  assert not local.exists()


def test_merge_over_an_unfinished_run_of_the_same_config(returned):
  archive, spec, local = returned
  ce = grid.run_dir(local, grid.parse_method('ce'), NOISE, 0)
  ce.mkdir(parents=True)
  files.write_json(workdir_lib.config_path(ce),
                         {'method': 'ce', 'seed': 0, 'progress': False})
  assert records.merge(archive, sweep.load_spec(spec)) == (2, 0)
  assert workdir_lib.read_result(ce)['final_test_accuracy'] == 0.5
  workdir_lib.result_path(ce).unlink()
  files.write_json(workdir_lib.config_path(ce), {'method': 'ce',
                                                       'seed': 1})
  with pytest.raises(ValueError, match='an unfinished run of another '
                     'configuration'):
    records.merge(archive, sweep.load_spec(spec))


@pytest.mark.parametrize('name', [
    '../evil/x/seed_0/result.json', 'ce/symmetric_0.4/seed_0/checkpoints',
    'ce/symmetric_0.4/seed_0/other.txt', 'ce/result.json'])
def test_read_records_refuses_members_that_are_not_records(tmp_path, name):
  archive = tmp_path / 'a.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    for member in (records.MANIFEST_FILE, name):
      info = tarfile.TarInfo(member)
      info.size = 2
      tar.addfile(info, io.BytesIO(b'{}'))
  with pytest.raises(ValueError, match='is not'):
    records.read_records(archive)
