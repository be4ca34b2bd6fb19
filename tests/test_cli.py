"""The command line as a user meets it: errors in one line, --help, progress.

Errors are checked as `experiments.cli` exits with them (in-process, with
absl's flags as a new process has them) and, in the slow tier, where the user
sees them, by running ``python -m experiments.train`` as a subprocess: a
non-zero exit, at most two lines on stderr, no traceback, the key, the bad
value and a valid choice in the message, and nothing loaded (no data cache)
or written (no workdir).
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from experiments import cli
from experiments import config_lib
from experiments import train
from experiments import workdir as workdir_lib
from experiments.configs import cifar10
from experiments.configs import cifar100
from experiments.configs import cifar10_cpu
from experiments.configs import default
from experiments.configs import digits
from experiments.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, XLA_FLAGS='')  # one device, as a user's laptop


def run_train(*args):
  return subprocess.run([sys.executable, '-m', 'experiments.train', *args],
                        cwd=REPO, env=ENV, capture_output=True, text=True,
                        timeout=300)


def assert_one_line_error(proc, *expected):
  """A non-zero exit with at most two lines on stderr holding ``expected``."""
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode != 0, proc.stdout
  assert 'Traceback' not in proc.stderr, proc.stderr
  assert 1 <= len(lines) <= 2, proc.stderr
  for text in expected:
    assert text in proc.stderr, (text, proc.stderr)


def normalized(text):
  return ' '.join(text.split())


# (override, what the message must name: the key, the bad value, a choice).
BAD_CONFIGS = [
    ('--config.nosie.rate=0.3',
     ['--config.nosie.rate', "no key 'nosie.rate'",
      "did you mean 'noise.rate'"]),
    ('--config.noise.rat=0.3', ["no key 'noise.rat'",
                                "did you mean 'noise.rate'"]),
    ('--config.method=nope', ['config.method', "'nope'", "'gce'", 'ogc_']),
    ('--config.method=ogc_nope', ['config.method', "'ogc_nope'", "'gce'"]),
    ('--config.noise.kind=symetric',
     ['config.noise.kind', "'symetric'", "'symmetric'"]),
    ('--config.noise.rate=1.5', ['config.noise.rate', '1.5', '[0, 1)']),
    ('--config.noise.protocol=theirs',
     ['config.noise.protocol', "'theirs'", "'authors'"]),
    ('--config.noise.seed=-1', ['config.noise.seed', '-1', '>= 0']),
    ('--config.dataset=cifar11',
     ['config.dataset', "'cifar11'", "'digits'", "'cifar10_jpeg'",
      'folder:PATH', 'download_and_prepare()', 'data_dir']),
    ('--config.model=vgg', ['config.model', "'vgg'", "'resnet18'"]),
]


def cli_error(*args):
  """The message `python -m experiments.train ARGS` exits with, in-process."""
  with pytest.raises(SystemExit) as exit_:
    train.main(cli.parse_flags(['experiments.train', *args]))
  message = exit_.value.code
  assert message.startswith('error: ') and '\n' not in message, message
  return message


@pytest.mark.parametrize('override,expected', BAD_CONFIGS,
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_one_line_before_loading_or_writing(
    tmp_path, fresh_flags, override, expected):
  del fresh_flags
  workdir, cache = tmp_path / 'run', tmp_path / 'cache'
  message = cli_error(f'--workdir={workdir}', f'--config.cache_dir={cache}',
                      override)
  for text in expected:
    assert text in message, (text, message)
  assert not cache.exists(), 'the data was loaded'
  assert not workdir.exists()


@pytest.mark.slow
@pytest.mark.parametrize('override,expected', BAD_CONFIGS,
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_one_line_in_a_new_process(tmp_path, override,
                                                  expected):
  workdir, cache = tmp_path / 'run', tmp_path / 'cache'
  proc = run_train(f'--workdir={workdir}', f'--config.cache_dir={cache}',
                   override)
  assert_one_line_error(proc, *expected)
  assert not cache.exists(), 'the data was loaded'
  assert not workdir.exists()


@pytest.mark.slow
def test_batch_larger_than_data_leaves_the_workdir_to_the_corrected_run(
    tmp_path):
  # Digits has 1,437 training images; the size is known once it is loaded,
  # and the check comes before the workdir is created.
  workdir, cache = tmp_path / 'run', tmp_path / 'cache'
  args = [f'--workdir={workdir}', f'--config.cache_dir={cache}',
          '--config.num_epochs=1', '--config.method=ce',
          '--config.progress=False']
  proc = run_train(*args, '--config.batch_size=5000')
  assert_one_line_error(proc, 'config.batch_size=5000', '1437', 'at most')
  assert not workdir.exists()
  # A folder the user had keeps what it held, and gets nothing.
  workdir.mkdir()
  (workdir / 'notes.txt').write_text('mine')
  proc = run_train(*args, '--config.batch_size=5000')
  assert_one_line_error(proc, 'config.batch_size=5000')
  assert [p.name for p in workdir.iterdir()] == ['notes.txt']
  # The corrected command trains in the same workdir.
  proc = run_train(*args)
  assert proc.returncode == 0, proc.stderr
  assert (workdir / 'result.json').exists()


@pytest.mark.parametrize('config,match', [
    ({'noise.mapping': 'cifar11'}, r"config\.noise\.mapping='cifar11'.*'mnist'"),
    ({'noise.kind': 'none'}, r"config\.noise\.rate=0\.6.*'none'"),
    ({'noise.kind': 'asymmetric', 'dataset': 'folder:' + REPO},
     r"'asymmetric'.*config\.noise\.mapping.*'cifar10'"),
    ({'dataset': 'folder:/nonexistent/images'}, r"'/nonexistent/images' is"),
    ({'dataset': 'cifar10_n', 'noise.kind': 'none', 'noise.rate': 0.0,
      'label_key': 'worst_label'}, r"'worst_label'.*'worse_label'"),
    ({'dataset': 'cifar10_n'}, r'own noisy labels.*noise\.kind=none'),
    ({'labels_csv': '/x.csv'}, r"labels_csv='/x\.csv' applies to image"),
    ({'dtype': 'float64'}, r"config\.dtype='float64'.*'bfloat16'"),
    ({'learning_rate': -0.1}, r'config\.learning_rate=-0\.1'),
    ({'num_epochs': 0}, r'config\.num_epochs=0.*>= 1'),
    ({'train_subset': 100}, r'batch_size=128 exceeds config\.train_subset=100'),
    ({'ogc.update_period': 0}, r'config\.ogc.*update_period'),
    ({'loss_hparams.tau': 2.0}, r"\['tau'\].*'ogc_ce'"),
    # A loss hyperparameter out of its range (it would train as another).
    ({'method': 'phuber_ce', 'loss_hparams.tau': -5.0},
     r"loss_hparams\.tau=-5\.0 is out of range for method 'phuber_ce'; "
     r'expected tau > 1\.$'),
    ({'method': 'phuber_ce', 'loss_hparams.tau': 1.0}, r'tau > 1'),
    ({'method': 'gce', 'loss_hparams.q': 0.0}, r'q=0\.0 .*q in \(0, 1\]'),
    ({'method': 'ogc_gce', 'loss_hparams.q': 1.5}, r"'ogc_gce'.*\(0, 1\]"),
    ({'method': 'phuber_gce', 'loss_hparams.q': 1.0}, r'q in \(0, 1\)'),
    ({'method': 'nce_agce', 'loss_hparams.q': -1.0}, r'q > 0'),
    ({'method': 'focal', 'loss_hparams.gamma': -1.0}, r'gamma >= 0'),
    ({'method': 'ogc_focal', 'loss_hparams.gamma': float('nan')},
     r'gamma=nan'),
    ({'method': 'sce', 'loss_hparams.alpha': -0.1}, r'alpha >= 0'),
    ({'method': 'nce_rce', 'loss_hparams.log_zero': 1.0}, r'log_zero < 0'),
    ({'method': 'nce_agce', 'loss_hparams.a': 0.0}, r'a > 0'),
    ({'method': 'js', 'loss_hparams.pi1': 1.0}, r'pi1 in \(0, 1\)'),
    ({'method': 'logit_clip_ce', 'loss_hparams.norm_bound': 0.0},
     r'norm_bound > 0'),
    ({'method': 'anl_ce', 'loss_hparams.min_prob': 0.0}, r'min_prob in'),
    ({'method': 'taylor_ce', 'loss_hparams.order': 0}, r'order an integer'),
])
def test_validate_config_names_key_value_and_choices(config, match):
  c = digits.get_config()
  c.update_from_flattened_dict(config)
  with pytest.raises(ConfigError, match=match):
    train.validate_config(c)


def test_every_loss_default_hyperparameter_is_in_its_range():
  from experiments import methods  # pylint: disable=g-import-not-at-top
  from ogc_jax import baselines, losses  # pylint: disable=g-import-not-at-top
  names = [(n, f) for n, f in baselines.LOSSES.items()] + [
      (f'ogc_{n}', f) for n, f in losses.BASE_LOSSES.items()]
  checked = set()
  for name, fn in names:
    hparams = {k: v for k, v in losses.hyperparameters(fn).items()
               if k in default.get_config().loss_hparams}
    methods.check_hyperparameters(name, hparams)  # raises if out of range
    checked |= set(hparams)
  assert checked == set(default.get_config().loss_hparams)


def test_a_key_the_library_call_adds_is_refused_with_a_hint(tmp_path):
  config = digits.get_config()
  config.num_epoch = 3  # a ConfigDict takes new keys: a typo trains 100 epochs
  with pytest.raises(ValueError, match=r"'num_epoch' \(did you mean "
                     r"'num_epochs'"):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_every_shipped_config_passes_and_every_key_has_help():
  flat = dict(config_lib.flat_items(default.get_config()))
  assert list(flat) and set(flat) == set(default.HELP)
  assert all(text.strip() for text in default.HELP.values())
  for module in (digits, cifar10, cifar100, cifar10_cpu, default):
    train.validate_config(module.get_config())


@pytest.mark.slow
def test_unwritable_workdir_is_one_line(tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  proc = run_train(f'--workdir={a_file}')
  assert_one_line_error(proc, str(a_file), 'is a file')
  proc = run_train(f'--workdir={a_file}/run')
  assert_one_line_error(proc, f'{a_file}/run', 'cannot be written',
                        'Not a directory')
  # A folder this process cannot write. Root writes through permission bits,
  # so as root use sysfs, which refuses new folders to everyone.
  if os.geteuid() != 0:
    read_only = tmp_path / 'read_only'
    read_only.mkdir(mode=0o555)
    unwritable = read_only / 'run'
  elif os.path.ismount('/sys'):
    unwritable = '/sys/ogc_jax_test_run'
  else:
    pytest.skip('no folder here that root cannot write')
  proc = run_train(f'--workdir={unwritable}')
  assert_one_line_error(proc, f'{unwritable}', 'cannot be written')


def test_unknown_config_file_and_stray_argument_are_one_line(tmp_path,
                                                             fresh_flags):
  del fresh_flags
  message = cli_error(f'--workdir={tmp_path}', '--config=no/such/config.py',
                      '--config.noise.rate=0.1')
  assert '--config' in message and 'no/such/config.py' in message
  with pytest.raises(SystemExit) as exit_:
    train.main(['experiments.train', 'experiments/configs/digits.py'])
  assert 'unexpected arguments' in exit_.value.code


def test_a_data_error_is_one_line_and_leaves_no_workdir(tmp_path,
                                                        monkeypatch,
                                                        fresh_flags):
  del fresh_flags

  class DataError(ConfigError):  # as experiments.data raises them
    pass

  def missing(config, plan):
    del plan
    raise DataError(f'{config.dataset!r} is not prepared; run `prepare X`.')

  monkeypatch.setattr(train, 'load_data', missing)
  with pytest.raises(SystemExit) as exit_:
    train.main(cli.parse_flags(['experiments.train',
                                f'--workdir={tmp_path / "run"}']))
  assert exit_.value.code == "error: 'digits' is not prepared; run `prepare X`."
  assert not (tmp_path / 'run').exists()


def test_help_shows_the_docstring_and_every_key_with_value_and_help():
  proc = run_train('--help')
  out = normalized(proc.stdout)
  assert proc.returncode == 0, proc.stderr
  assert 'Traceback' not in proc.stderr
  # The docstring as written: absl %-formats it, which turned "60% symmetric"
  # into "60/.../train.pyymmetric".
  assert normalized(train.__doc__) in out
  assert '60% symmetric' in out and 'train.pyymmetric' not in out
  values = dict(config_lib.flat_items(digits.get_config()))
  for key, text in default.HELP.items():
    entry = normalized(f'--config.{key}: {text} (default: {values[key]!r})')
    assert entry in out, entry
  # The values are those of the config named, with its overrides.
  proc = run_train('--config', 'experiments/configs/cifar10.py',
                   '--config.noise.rate=0.3', '--help')
  out = normalized(proc.stdout)
  assert "(default: 'resnet18')" in out and '(default: 0.3)' in out


@pytest.mark.slow
def test_progress_bar_shows_no_eta_until_the_compiled_steps_are_timed(
    tmp_path, capsys):
  # The first epoch compiles the train steps and the evaluation: an ETA from
  # it promised hours. Digits: 11 steps an epoch, 33 in all.
  config = digits.get_config()
  config.cache_dir = str(tmp_path / 'cache')
  config.num_epochs = 3
  config.num_devices = 1
  config.method = 'ce'
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  bars = re.split(r'[\r\n]', capsys.readouterr().err)
  first_epoch = [b for b in bars if ' 11/33 [' in b]
  assert first_epoch, bars
  for bar in first_epoch:  # no rate, no ETA: '[00:05<?, ...'
    assert re.search(r'\[\d\d:\d\d<\?', bar), bar
  # From the second epoch on, the ETA is timed on compiled epochs alone.
  assert any(re.search(r' 22/33 \[\d\d:\d\d<\d\d:\d\d, [\d.]+step/s', b)
             for b in bars), bars


def test_an_empty_workdir_is_one_line(tmp_path, fresh_flags, monkeypatch):
  del fresh_flags
  monkeypatch.chdir(tmp_path)  # an empty --workdir would be this folder
  message = cli_error('--workdir=')
  assert message.startswith('error: --workdir is empty'), message
  assert not list(tmp_path.iterdir())


def test_a_foreign_result_is_one_line(tmp_path, fresh_flags):
  del fresh_flags
  (tmp_path / 'result.json').write_text('{"accuracy": 0.9}')
  message = cli_error(f'--workdir={tmp_path}')
  assert f'{tmp_path}/result.json lacks' in message
  assert 'not the result of a run' in message
  assert sorted(p.name for p in tmp_path.iterdir()) == ['result.json']


def _interrupt(args, ready):
  """Starts the training, sends Ctrl-C (SIGINT) once ``ready()``."""
  proc = subprocess.Popen(
      [sys.executable, '-m', 'experiments.train', *args], cwd=REPO, env=ENV,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while not ready() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  return proc.returncode, out, err


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_the_same_command_continues(tmp_path,
                                                           tiny_args):
  workdir = tmp_path / 'run'
  metrics = workdir / 'metrics.jsonl'
  # While the first steps compile: the workdir is claimed, no epoch done.
  rc, _, err = _interrupt([f'--workdir={workdir}', *tiny_args()],
                          (workdir / 'config.json').exists)
  assert rc == 130, err
  assert err == ('interrupted at epoch 1; run the same command to continue '
                 'from the start (no epoch was checkpointed yet).\n')
  # Nothing trained: a corrected command takes the workdir.
  args = [f'--workdir={workdir}', *tiny_args(num_epochs=12)]
  rc, _, err = _interrupt(
      args, lambda: metrics.exists() and metrics.read_text().strip())
  assert rc == 130, err
  lines = err.splitlines()
  assert len(lines) == 1, err
  match = re.fullmatch(r'interrupted at epoch (\d+); run the same command to '
                       r'continue from (the last checkpoint \(epoch (\d+)\)|'
                       r'the start .*)\.', lines[0])
  assert match and 1 <= int(match[1]) <= 12, err
  # The same command continues; quietly, though Ctrl-C may have stopped
  # a checkpoint's save.
  proc = run_train(*args)
  assert proc.returncode == 0 and not proc.stderr, proc.stderr
  assert [r['epoch'] for r in workdir_lib.read_metrics(workdir)] == list(
      range(1, 13))
  assert workdir_lib.read_result(workdir)['num_epochs'] == 12


def test_help_says_how_often_a_checkpoint_is_written_and_what_ctrl_c_does():
  text = normalized(cli.usage_text(train.__doc__, ['experiments.train']))
  assert ('an Orbax checkpoint every ``config.checkpoint_every`` epochs and at '
          'the last') in text
  assert 'checkpoint per epoch' not in text
  assert 'Ctrl-C, while compiling or training, is one line' in text


def test_the_interruption_names_the_epoch_and_where_the_rerun_starts(
    tmp_path):
  config = digits.get_config()  # checkpoint_every 1, 100 epochs
  message = lambda: cli.interruption_message(config, tmp_path)
  assert message() == ('interrupted at epoch 1; run the same command to '
                       'continue from the start (no epoch was checkpointed '
                       'yet).')
  workdir_lib.write_metrics(tmp_path, [{'epoch': e} for e in (1, 2, 3)])
  for epoch in (1, 2):
    (tmp_path / 'checkpoints' / str(epoch)).mkdir(parents=True)
  # Epoch 3 logged, its checkpoint unfinished: stopped while saving it.
  (tmp_path / 'checkpoints' / '3.orbax-checkpoint-tmp').mkdir()
  assert message().startswith('interrupted at epoch 3; ')
  assert message().endswith('from the last checkpoint (epoch 2).')
  workdir_lib.remove_unfinished_checkpoints(tmp_path)
  assert workdir_lib.saved_checkpoints(tmp_path) == [1, 2]
  (tmp_path / 'checkpoints' / '3').mkdir()
  assert message() == ('interrupted at epoch 4; run the same command to '
                       'continue from the last checkpoint (epoch 3).')
  # Checkpoints every 10 epochs: epoch 3's is not due, epoch 4 was training.
  config.checkpoint_every = 10
  (tmp_path / 'checkpoints' / '3').rmdir()
  assert message().startswith('interrupted at epoch 4; ')
  assert message().endswith('(epoch 2).')
