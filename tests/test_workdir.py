"""Tests for experiments/workdir.py: the layout of a run's workdir."""

import json
import os

import numpy as np
import pytest

from experiments import files
from experiments import workdir as workdir_lib
from experiments.errors import ConfigError
from sweeps import run_files
from tests.conftest import full_result


def test_paths_are_the_documented_layout(tmp_path):
  assert workdir_lib.config_path(tmp_path) == tmp_path / 'config.json'
  assert workdir_lib.metrics_path(tmp_path) == tmp_path / 'metrics.jsonl'
  assert workdir_lib.result_path(tmp_path) == tmp_path / 'result.json'
  assert workdir_lib.checkpoints_dir(tmp_path) == tmp_path / 'checkpoints'
  assert workdir_lib.queue_path(tmp_path, 7) == (
      tmp_path / 'queues' / 'epoch_0007.npy')
  assert workdir_lib.queue_path(str(tmp_path), 12345) == (
      tmp_path / 'queues' / 'epoch_12345.npy')
  assert run_files.sweep_args_path(tmp_path) == tmp_path / 'sweep_args.json'
  assert run_files.log_path(tmp_path) == tmp_path / 'log.txt'


def test_check_config_claims_the_workdir_for_one_configuration(tmp_path):
  config = {'seed': 0, 'method': 'ogc_ce', 'progress': True,
            'ogc': {'epsilon': 20.0}}
  workdir_lib.check_config(tmp_path, config)
  assert json.loads((tmp_path / 'config.json').read_text()) == config
  assert not list(tmp_path.glob('*.tmp'))
  # The same run again, and with another progress setting: accepted.
  workdir_lib.check_config(tmp_path, config)
  workdir_lib.check_config(tmp_path, dict(config, progress=False))
  # Once an epoch is trained, another seed, a nested change, a key added:
  # refused, naming the keys.
  workdir_lib.write_metrics(tmp_path, [{'epoch': 1}])
  other = dict(config, seed=1, ogc={'epsilon': 5.0}, dtype='bfloat16')
  with pytest.raises(ValueError, match=(
      r"different configuration \(differs in \['dtype', 'ogc', 'seed'\]\)")):
    workdir_lib.check_config(tmp_path, other)
  assert json.loads((tmp_path / 'config.json').read_text()) == config


def test_read_config_and_read_result(tmp_path):
  assert workdir_lib.read_config(tmp_path) == {}
  assert workdir_lib.read_result(tmp_path) is None
  result = full_result(0.5, config={'seed': 0})
  workdir_lib.write_result(tmp_path, result)
  assert workdir_lib.read_result(tmp_path) == result
  # Written: the fields of RESULT_FIELDS, no fewer, no more.
  with pytest.raises(ValueError, match=r"the result lacks \['devices'\]"):
    workdir_lib.write_result(tmp_path, {k: v for k, v in result.items()
                                        if k != 'devices'})
  with pytest.raises(ValueError, match=r"fields \['packed_runs'\] that"):
    workdir_lib.write_result(tmp_path, dict(result, packed_runs=1))
  # Read: a record of an earlier version with a field no longer written.
  files.write_json(workdir_lib.result_path(tmp_path),
                         dict(result, packed_runs=1))
  assert workdir_lib.read_result(tmp_path)['final_test_accuracy'] == 0.5
  (tmp_path / 'result.json').write_text('{"final_test_accuracy": 0.5')
  with pytest.raises(ValueError, match='result.json is not valid JSON'):
    workdir_lib.read_result(tmp_path)
  (tmp_path / 'result.json').write_text('{"final_test_accuracy": 0.5}')
  with pytest.raises(ValueError, match=(
      r"result.json lacks \['best_test_accuracy', 'last_test_accuracy', "
      r"'num_epochs', 'true_noise_rate', 'transition_matrix', 'wall_time_s', "
      r"'devices', 'config'\]")):
    workdir_lib.read_result(tmp_path)


def test_metrics_round_trip_and_resume_cut(tmp_path):
  assert workdir_lib.read_metrics(tmp_path) == []
  rows = [{'epoch': e, 'test_accuracy': 0.1 * e, 'tau': None}
          for e in (1, 2, 3)]
  workdir_lib.write_metrics(tmp_path, rows)
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(line) for line in lines] == rows
  assert lines[0] == '{"epoch": 1, "tau": null, "test_accuracy": 0.1}'
  assert workdir_lib.read_metrics(tmp_path) == rows
  assert workdir_lib.read_metrics(tmp_path, up_to_epoch=2) == rows[:2]
  assert workdir_lib.read_metrics(tmp_path, up_to_epoch=0) == []


def test_read_metrics_keeps_the_last_record_of_an_epoch(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text(
      '{"epoch": 2, "x": 1}\n\n{"epoch": 1, "x": 2}\n{"epoch": 2, "x": 3}\n'
      '{"epoch": 3, "x"')  # torn last line
  assert workdir_lib.read_metrics(tmp_path) == [
      {'epoch': 1, 'x': 2}, {'epoch': 2, 'x': 3}]
  (tmp_path / 'metrics.jsonl').write_text('{"epoch": 1\n{"epoch": 2}\n')
  with pytest.raises(ValueError, match='line 1: not valid JSON'):
    workdir_lib.read_metrics(tmp_path)
  (tmp_path / 'metrics.jsonl').write_text('{"epoch": 1}\n{"loss": 2}\n')
  with pytest.raises(ValueError, match='line 2: no "epoch" key'):
    workdir_lib.read_metrics(tmp_path)


def test_saved_queues_are_the_ones_save_queue_wrote(tmp_path):
  assert workdir_lib.saved_queues(tmp_path) == {}
  queues = {e: np.arange(e, dtype=np.float32) for e in (10, 2, 1000)}
  for epoch, queue in queues.items():
    workdir_lib.save_queue(tmp_path, epoch, queue)
  # Files that are not queues are left out.
  (tmp_path / 'queues' / 'epoch_3.npy.tmp').write_text('')
  (tmp_path / 'queues' / 'notes.txt').write_text('')
  saved = workdir_lib.saved_queues(tmp_path)
  assert list(saved) == [2, 10, 1000]
  assert [p.name for p in saved.values()] == [
      'epoch_0002.npy', 'epoch_0010.npy', 'epoch_1000.npy']
  for epoch, path in saved.items():
    np.testing.assert_array_equal(np.load(path), queues[epoch])


def test_sweep_args_and_differing_keys(tmp_path):
  assert run_files.read_sweep_args(tmp_path) is None
  args = {'config': 'experiments/configs/digits.py',
          'overrides': {'seed': '0', 'method': 'ce'}}
  run_files.write_sweep_args(tmp_path, args)
  recorded = run_files.read_sweep_args(tmp_path)
  assert recorded == args
  assert workdir_lib.differing_keys(recorded, args) == []
  other = dict(args, overrides={'seed': '1', 'method': 'ce'})
  assert workdir_lib.differing_keys(recorded, other) == ['overrides']
  assert workdir_lib.differing_keys({'a': 1}, {'b': 1}) == ['a', 'b']


def test_write_atomic_replaces_whole_files_or_nothing(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  files.write_atomic(path, 'old\n')
  # A writer that fails midway leaves the old file and no temporary one.
  def fails(f):
    f.write(b'partial')
    raise RuntimeError('killed')
  with pytest.raises(RuntimeError):
    files.write_atomic(path, fails)
  assert path.read_text() == 'old\n'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['metrics.jsonl']
  # The temporary name is unique: a file named like the old fixed one stays.
  (tmp_path / 'metrics.jsonl.tmp').write_text('not mine')
  files.write_atomic(path, lambda f: np.save(f, np.arange(3)))
  assert np.load(path).tolist() == [0, 1, 2]
  assert (tmp_path / 'metrics.jsonl.tmp').read_text() == 'not mine'
  # Permissions as open() gives them, not mkstemp's 0600.
  umask = os.umask(0)
  os.umask(umask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_check_can_hold_and_claim_write_only_when_claiming(tmp_path):
  config = {'method': 'ce', 'progress': True}
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  with pytest.raises(ConfigError, match='is a file, not a folder'):
    workdir_lib.check_can_hold(str(a_file), config)
  with pytest.raises(ConfigError, match='cannot be written: Not a directory'):
    workdir_lib.claim(str(a_file / 'run'), config)
  run = tmp_path / 'run'
  workdir_lib.check_can_hold(str(run), config)  # creates nothing
  assert not run.exists()
  workdir_lib.claim(str(run), config)
  assert workdir_lib.read_config(run) == config
  # Another run's workdir; progress does not change results.
  workdir_lib.write_metrics(run, [{'epoch': 1}])
  workdir_lib.check_can_hold(str(run), dict(config, progress=False))
  with pytest.raises(ConfigError, match=r"differs in \['method'\]"):
    workdir_lib.check_can_hold(str(run), dict(config, method='gce'))


def test_records_made_before_the_label_issues_read_as_before(tmp_path):
  # result.json without the label_issues block (every committed record of
  # results/records before it): read, the block null.
  old = {k: v for k, v in full_result(0.5).items() if k != 'label_issues'}
  files.write_json(workdir_lib.result_path(tmp_path), old)
  assert workdir_lib.read_result(tmp_path) == dict(old, label_issues=None)
  workdir_lib.check_result(old, 'an archived record')  # as a merge checks it
  # A run writes it, null or not.
  with pytest.raises(ValueError, match=r"the result lacks \['label_issues'\]"):
    workdir_lib.write_result(tmp_path, old)
  # Without the classes never predicted (records before the runs counted
  # predictions per class): read, the list null; a run writes it.
  older = {k: v for k, v in old.items() if k != 'classes_never_predicted'}
  files.write_json(workdir_lib.result_path(tmp_path), older)
  assert workdir_lib.read_result(tmp_path) == dict(
      older, label_issues=None, classes_never_predicted=None)
  workdir_lib.check_result(older, 'an archived record')
  with pytest.raises(ValueError, match=(
      r"the result lacks \['classes_never_predicted'\]")):
    workdir_lib.write_result(tmp_path, dict(older, label_issues=None))
  # config.json without the keys added since: the same run as one with
  # them at their defaults (it resumes, or is reused); not with others.
  recorded = {'method': 'ogc_ce', 'seed': 0}
  files.write_json(workdir_lib.config_path(tmp_path), recorded)
  now = dict(recorded, label_issues=None, holdout={'folds': 0, 'fold': 0})
  workdir_lib.check_can_hold(str(tmp_path), now)
  for key, value in (('label_issues', True),
                     ('holdout', {'folds': 5, 'fold': 0})):
    with pytest.raises(ConfigError, match=rf"differs in \['{key}'\]"):
      workdir_lib.check_can_hold(str(tmp_path), dict(now, **{key: value}))
  # A nested one: a run from before `ogc.fit` fitted to convergence.
  nested = tmp_path / 'nested'
  nested.mkdir()
  recorded = {'method': 'ogc_ce', 'ogc': {'epsilon': 20.0}}
  files.write_json(workdir_lib.config_path(nested), recorded)
  workdir_lib.write_metrics(nested, [{'epoch': 1}])
  now = {'method': 'ogc_ce', 'ogc': {'epsilon': 20.0, 'fit': 'converged'}}
  workdir_lib.check_can_hold(str(nested), now)
  with pytest.raises(ConfigError, match=r"differs in \['ogc'\]"):
    workdir_lib.check_can_hold(
        str(nested), {'method': 'ogc_ce',
                      'ogc': {'epsilon': 20.0, 'fit': 'published'}})
  assert files.read_json(workdir_lib.config_path(nested)) == recorded


def test_label_issues_csv_round_trip(tmp_path):
  columns = {'index': [4, 0, 2], 'path': ['train/b/1.png', 'train/a/0.png',
                                          'train/a,b/2.png'],
             'given_label': [1, 0, 0], 'predicted_label': [0, 0, 1],
             'score': np.float32([1.0, 0.7, 1 / 3]),
             'margin': np.float32([-2.0, 0.5, 3.25]),
             'loss': np.float32([5.5, 1.25, 0.1]),
             'flagged': [True, True, False]}
  workdir_lib.write_label_issues(tmp_path, columns)
  lines = (tmp_path / 'label_issues.csv').read_text().splitlines()
  assert lines[:2] == [
      'rank,index,path,given_label,predicted_label,score,margin,loss,flagged',
      '1,4,train/b/1.png,1,0,1,-2,5.5,1']
  assert lines[3] == '3,2,"train/a,b/2.png",0,1,0.333333343,3.25,0.100000001,0'
  table = workdir_lib.read_label_issues(tmp_path)
  assert table['rank'].tolist() == [1, 2, 3]
  assert table['path'].tolist() == columns['path']
  assert table['flagged'].tolist() == [True, True, False]
  np.testing.assert_array_equal(np.float32(table['score']), columns['score'])
  with pytest.raises(ValueError, match='columns of lengths'):
    workdir_lib.write_label_issues(tmp_path, dict(columns, index=[1]))
  with pytest.raises(ValueError, match='has the columns'):
    workdir_lib.write_label_issues(tmp_path, dict(columns, extra=[1, 2, 3]))
  assert workdir_lib.read_label_issues(tmp_path / 'none') is None
  # A list written before the margin column reads it as NaN.
  old = [line.replace(',-2,', ',').replace(',3.25,', ',') for line in lines]
  old[0] = old[0].replace('margin,', '')
  old[2] = '2,0,train/a/0.png,0,0,0.699999988,1.25,1'
  (tmp_path / 'label_issues.csv').write_text('\n'.join(old) + '\n')
  table = workdir_lib.read_label_issues(tmp_path)
  assert np.isnan(table['margin']).all()
  np.testing.assert_array_equal(np.float32(table['score']), columns['score'])


def test_a_workdir_without_a_trained_epoch_takes_a_corrected_config(tmp_path):
  # A run stopped before its first epoch ended (Ctrl-C while compiling):
  # its config.json, an empty metrics.jsonl and checkpoints/ folder.
  config = {'method': 'ogc_ce', 'seed': 0}
  corrected = dict(config, seed=1)
  workdir_lib.claim(str(tmp_path), config)
  workdir_lib.write_metrics(tmp_path, [])
  workdir_lib.checkpoints_dir(tmp_path).mkdir()
  workdir_lib.check_can_hold(str(tmp_path), corrected)  # writes nothing
  assert workdir_lib.read_config(tmp_path) == config
  workdir_lib.claim(str(tmp_path), corrected)
  assert workdir_lib.read_config(tmp_path) == corrected
  # Anything of a trained epoch keeps the workdir to its configuration.
  for trained in (
      lambda w: workdir_lib.write_metrics(w, [{'epoch': 1}]),
      lambda w: workdir_lib.save_queue(w, 1, np.zeros(4, np.float32)),
      lambda w: (workdir_lib.checkpoints_dir(w) / '1').mkdir(parents=True),
      lambda w: files.write_json(workdir_lib.result_path(w),
                                       full_result(0.5))):
    workdir = tmp_path / f'run{len(list(tmp_path.iterdir()))}'
    workdir_lib.claim(str(workdir), config)
    trained(workdir)
    with pytest.raises(ConfigError, match=r"differs in \['seed'\]"):
      workdir_lib.claim(str(workdir), corrected)
    assert workdir_lib.read_config(workdir) == config


def test_an_empty_workdir_and_a_foreign_result_are_one_line(tmp_path):
  with pytest.raises(ConfigError, match='--workdir is empty'):
    workdir_lib.absolute('')
  with pytest.raises(ConfigError, match='--workdir is empty'):
    workdir_lib.absolute('  ')
  assert workdir_lib.absolute('runs/x') == os.path.abspath('runs/x')
  (tmp_path / 'result.json').write_text('{"accuracy": 0.9}')
  with pytest.raises(ConfigError, match=(
      r"result.json lacks \['final_test_accuracy'.*: it is not the result "
      'of a run; use another --workdir')) as error:
    workdir_lib.check_can_hold(str(tmp_path), {'method': 'ce'})
  assert '\n' not in str(error.value)
  (tmp_path / 'result.json').write_text('accuracy 0.9')
  with pytest.raises(ConfigError, match='is not valid JSON.*not the result'):
    workdir_lib.check_can_hold(str(tmp_path), {'method': 'ce'})
  assert (tmp_path / 'result.json').read_text() == 'accuracy 0.9'
