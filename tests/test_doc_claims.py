"""What the README and docs claim, against the code and the committed records.

Fast and without training: each figure the README quotes is read back from a
committed record or table under results/, and each quoted message from the
code that prints it, so a figure or message that goes stale fails here.
"""

import csv
import json
import pathlib
import re
import statistics
import subprocess

import pytest

from experiments import cli
from experiments import workdir as workdir_lib
from experiments.configs import digits
from sweeps import sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / 'README.md').read_text()
DOCS = {path.name: path.read_text()
        for path in [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md'))}


def _flat(text):
  return ' '.join(text.split())


def test_the_main_job_figure_is_a_committed_record_of_the_default():
  # The main job is the README's first command, the default config.
  first = re.search(r'```bash\n(?:#.*\n)*(.*)\n', README)[1]
  assert first.endswith('&& python -m experiments.train'), first
  match = re.search(
      r'prints the final test accuracy, the mean of the last 10 epochs: '
      r'(0\.\d+) on (.+?) \(committed record: `(results/records/[^`]+)`',
      _flat(README))
  assert match, 'the README quotes no main-job figure with its record'
  figure, record = match[1], REPO / match[3]
  result = workdir_lib.read_result(record)
  assert result is not None, f'{record} holds no result'
  digits_after_point = len(figure) - 2
  assert f"{result['final_test_accuracy']:.{digits_after_point}f}" == figure
  # The record is a run of the current default: the same config, but for
  # keys that do not change an uninterrupted run's result.
  default = json.loads(digits.get_config().to_json_best_effort())
  differing = workdir_lib.differing_keys(
      workdir_lib.with_added_keys(result['config'], default), default,
      ignore=workdir_lib.RESULT_NEUTRAL_KEYS + ('checkpoint_every',))
  assert not differing, differing
  assert 'CPU family' in match[2]


def _spec_wall_times(spec):
  loaded = sweep.load_spec(REPO / 'sweeps' / 'specs' / spec)
  times = {}
  for run in loaded.runs():
    result = workdir_lib.read_result(run.workdir)
    assert result is not None, run.workdir
    times.setdefault(run.method.name, []).append(result['wall_time_s'])
  return times


def test_cifar10_cpu_run_times_are_those_of_the_records():
  times = _spec_wall_times('cifar10_cpu.json')
  every = [t for ts in times.values() for t in ts]
  ogc = [t for m, ts in times.items() if m.startswith('ogc_') for t in ts]
  base = [t for m, ts in times.items() if not m.startswith('ogc_') for t in ts]
  low, high, median = (round(x) for x in (min(every), max(every),
                                          statistics.median(every)))
  assert f'{low}–{high} s a run (median {median} s)' in _flat(README)
  assert f'{round(sum(every) / 3600, 1)} hours of runs' in _flat(README)
  results_md = _flat(DOCS['results.md'])
  assert (f'A run took {low}–{high} s (median {median} s; the baselines '
          f'{round(min(base))}–{round(max(base))} s, OGC '
          f'{round(min(ogc))}–{round(max(ogc))} s)') in results_md
  config_doc = _flat((REPO / 'experiments/configs/cifar10_cpu.py').read_text())
  assert f'took {low}-{high} s, median {median} s' in config_doc
  for name, text in list(DOCS.items()) + [('cifar10_cpu.py', config_doc)]:
    assert 'a minute a run' not in text and 'about a minute' not in text, name


def _table(text, after):
  """The markdown table that follows ``after``: header and {row: cells}."""
  start = text.index(after)
  lines = re.search(r'(^\|.*\n)+', text[start:], flags=re.M)[0].splitlines()
  cells = [[c.strip() for c in line.strip('|').split('|')] for line in lines]
  return cells[0], {row[0]: row[1:] for row in cells[2:]}


def _normalised(name):
  """A README name as the committed table writes it ('asym.' too)."""
  return name.replace('τ', 'tau').replace('sym.', 'symmetric')


@pytest.mark.parametrize('heading,committed', [
    ('**Digits**', 'results/digits.md'),
    ('**CIFAR-10 on a CPU**', 'results/cifar10_cpu.md')])
def test_readme_tables_are_the_committed_cells_and_bolds(heading, committed):
  header, rows = _table(README, heading)
  full_header, full = _table((REPO / committed).read_text(), '| Method |')
  assert [_normalised(h) for h in header] == full_header, header
  for method, cells in rows.items():
    # Bold in the README where the full table bolds it: the best of all its
    # methods, not of the rows shown.
    assert cells == full[_normalised(method)], method


def test_the_readme_quotes_no_test_count():
  # A count is stale at the next test; the tiers' times say what to expect.
  assert not re.search(r'\b\d+ tests\b', README)


def test_bad_input_quotes_the_current_unknown_key_message(fresh_flags):
  del fresh_flags
  with pytest.raises(SystemExit) as exit_:
    cli.parse_flags(['experiments.train', '--config.nosie.rate=0.3'])
  message = exit_.value.code
  assert message.startswith('error: ')
  assert f'(`{message[len("error: "):]}`)' in _flat(DOCS['bad_input.md'])


def test_bad_input_says_an_image_folder_ignores_files_that_are_not_images():
  text = _flat(DOCS['bad_input.md'])
  assert 'holds a file that is not an image' not in text
  assert 'are not images and are ignored' in text


def test_each_python_block_importing_experiments_says_where_to_run_it():
  for name, text in DOCS.items():
    for match in re.finditer(r'```python\n(.*?)```', text, flags=re.S):
      if re.search(r'^\s*(from|import) experiments', match[1], flags=re.M):
        before = _flat(text[:match.start()].rstrip().rsplit('\n\n', 1)[-1])
        assert 'repository root' in before, (name, before)


# Tables whose records predate committed records: their runs were made under
# runs/ (not in git) and are to be rerun into results/records/ with specs.
# Every other table must rebuild from what is committed.
RECORDS_NOT_COMMITTED = {'digits.csv', 'digits_baselines.csv',
                         'digits_fixed_vs_optimised.csv',
                         'digits_ogc_hyperparameters.csv'}


@pytest.mark.parametrize('table', sorted(
    path.name for path in (REPO / 'results').glob('*.csv')))
def test_every_run_a_committed_table_cites_is_a_committed_record(table):
  with open(REPO / 'results' / table, newline='') as f:
    rows = list(csv.DictReader(f))
  assert rows, table
  column = 'workdir' if 'workdir' in rows[0] else 'workdirs'
  cited = [w for row in rows for w in row[column].split()]
  missing = [w for w in cited
             if workdir_lib.read_result(REPO / w) is None]
  if table in RECORDS_NOT_COMMITTED:
    assert missing, f'{table} rebuilds now: drop it from RECORDS_NOT_COMMITTED'
    return
  assert not missing, f'{table} cites {len(missing)} runs without a record, ' \
                      f'e.g. {missing[0]}'
  tracked = subprocess.run(
      ['git', 'ls-files', '--', *{str(pathlib.Path(w) / 'result.json')
                                   for w in cited}],
      cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
  assert len(tracked) == len(set(cited)), (
      f'{table}: {len(set(cited)) - len(tracked)} cited records are not in git')
