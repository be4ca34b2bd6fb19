"""Tests for sweeps/plot.py."""

import json
import math

import matplotlib.image
import numpy as np
import pytest
from scipy import integrate, stats

from sweeps import plot

NUM_EPOCHS = 5
DPI = 120  # plot._save's resolution


def _gmm(epoch):
  return {'mean_clean': 0.1 + 0.01 * epoch, 'var_clean': 0.02,
          'mean_noisy': 2.0 + 0.1 * epoch, 'var_noisy': 0.5,
          'weight_noisy': 0.3 + 0.01 * epoch}


def _write_run(workdir, method, *, ogc, metrics_extra=''):
  """A synthetic workdir: config.json, metrics.jsonl, queues for OGC."""
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps({
      'method': method, 'seed': 0,
      'noise': {'kind': 'symmetric', 'rate': 0.4}}))
  rng = np.random.default_rng(0)
  lines = []
  for epoch in range(1, NUM_EPOCHS + 1):
    gmm = _gmm(epoch) if ogc else None
    lines.append(json.dumps({
        'epoch': epoch, 'test_accuracy': 0.5 + 0.05 * epoch,
        'tau': 10.0 / epoch if ogc else None,
        'p_threshold': 0.2 if ogc else None, 'gmm': gmm,
        'estimated_noise_rate': gmm['weight_noisy'] if ogc else None,
        'train_accuracy_noisy': 0.1 * epoch if ogc else 0.15 * epoch,
        'true_noise_rate': 0.4}))
    if ogc:
      (workdir / 'queues').mkdir(exist_ok=True)
      n_noisy = 300
      h = np.concatenate([
          np.abs(rng.normal(gmm['mean_clean'], 0.14, 700)),
          rng.normal(gmm['mean_noisy'], 0.7, n_noisy)]).astype(np.float32)
      h[0] = np.inf  # p = 0 in float32: not a finite H
      np.save(workdir / 'queues' / f'epoch_{epoch:04d}.npy', h)
  (workdir / 'metrics.jsonl').write_text('\n'.join(lines) + '\n'
                                         + metrics_extra)
  return workdir


@pytest.fixture
def runs(tmp_path):
  ogc = _write_run(tmp_path / 'ogc', 'ogc_ce', ogc=True)
  ce = _write_run(tmp_path / 'ce', 'ce', ogc=False)
  return ogc, ce


def _png_shape(path):
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  return matplotlib.image.imread(path).shape


def test_make_plots_writes_valid_pngs_and_skips_non_ogc_runs(runs, tmp_path):
  notes = []
  written = plot.make_plots(runs, tmp_path / 'out', log=notes.append)
  out = tmp_path / 'out'
  name = 'h_histogram_ogc_ce_symmetric_0.4_seed_0.png'
  assert [p.name for p in written] == [
      'test_accuracy.png', 'memorised.png', 'threshold.png', name]
  assert sorted(p.name for p in out.iterdir()) == sorted(
      ['test_accuracy.png', 'memorised.png', 'threshold.png', name])
  # Sizes are figsize x dpi; the histogram has one 4.5-inch panel per epoch
  # (default: first, middle and last of 1..5).
  assert _png_shape(out / 'test_accuracy.png') == (4.5 * DPI, 7 * DPI, 4)
  assert _png_shape(out / 'threshold.png') == (7 * DPI, 7 * DPI, 4)
  assert _png_shape(out / name) == (4 * DPI, 3 * 4.5 * DPI, 4)
  assert len(notes) == 2 and all('ce symmetric 0.4 seed 0' in n for n in notes)
  assert 'left out of threshold.png' in notes[0]
  assert 'no saved queues' in notes[1]


def test_memorised_plots_each_runs_noisy_accuracy_in_percent(runs):
  fig = plot.plot_memorised([plot.load_run(w) for w in runs])
  ogc_line, ce_line = fig.axes[0].lines
  np.testing.assert_allclose(ogc_line.get_ydata(),
                             [10.0, 20.0, 30.0, 40.0, 50.0])
  np.testing.assert_allclose(ce_line.get_ydata(),
                             [15.0, 30.0, 45.0, 60.0, 75.0])
  np.testing.assert_array_equal(ce_line.get_xdata(), [1, 2, 3, 4, 5])


def test_chosen_epochs_and_labels(runs, tmp_path):
  notes = []
  written = plot.make_plots(runs, tmp_path / 'out', epochs=[2, 9],
                            labels=['OGC/CE', 'CE'], log=notes.append)
  assert written[-1].name == 'h_histogram_OGC_CE.png'
  assert _png_shape(written[-1]) == (4 * DPI, 4.5 * DPI, 4)  # epoch 2 only
  assert any('no queue for epochs [9]' in n for n in notes)


def test_default_epochs():
  assert plot.default_epochs([]) == []
  assert plot.default_epochs([7]) == [7]
  assert plot.default_epochs([3, 1]) == [1, 3]
  assert plot.default_epochs(range(1, 151)) == [1, 76, 150]
  assert plot.default_epochs([10, 20, 30, 40]) == [10, 30, 40]


def test_mixture_components_match_scipy_and_integrate_to_one():
  gmm = _gmm(3)
  x = np.linspace(-5.0, 12.0, 20001)
  clean, noisy = plot.mixture_components(x, gmm)
  w = gmm['weight_noisy']
  np.testing.assert_allclose(clean, (1 - w) * stats.norm.pdf(
      x, gmm['mean_clean'], math.sqrt(gmm['var_clean'])),
                             rtol=1e-12, atol=1e-300)  # denormal tails
  np.testing.assert_allclose(noisy, w * stats.norm.pdf(
      x, gmm['mean_noisy'], math.sqrt(gmm['var_noisy'])),
                             rtol=1e-12, atol=1e-300)
  assert integrate.trapezoid(clean + noisy, x) == pytest.approx(1.0, abs=1e-9)
  assert integrate.trapezoid(noisy, x) == pytest.approx(w, abs=1e-9)


def test_histogram_panel_contents(runs):
  run = plot.load_run(runs[0])
  fig = plot.plot_h_histogram(run, [4], bins=60)
  ax, = fig.axes
  h = np.load(run.queues[4]).astype(np.float64)
  finite = h[np.isfinite(h)]
  assert finite.size == h.size - 1
  # Bars: numpy's density histogram of the finite values over [0, 1.05 max].
  upper = 1.05 * finite.max()
  expected, edges = np.histogram(finite, bins=60, range=(0, upper),
                                 density=True)
  heights = np.array([patch.get_height() for patch in ax.patches])
  np.testing.assert_allclose(heights, expected, rtol=1e-12)
  np.testing.assert_allclose([patch.get_x() for patch in ax.patches],
                             edges[:-1], rtol=1e-12)
  lines = {line.get_label(): line for line in ax.get_lines()}
  clean = lines['clean component']
  x = clean.get_xdata()
  gmm = _gmm(4)
  np.testing.assert_allclose(
      clean.get_ydata(), (1 - gmm['weight_noisy']) * stats.norm.pdf(
          x, gmm['mean_clean'], math.sqrt(gmm['var_clean'])), rtol=1e-12)
  np.testing.assert_allclose(
      lines['mixture'].get_ydata(),
      clean.get_ydata() + lines['noisy component'].get_ydata())
  threshold = lines[f'-log p_threshold = {-math.log(0.2):.2f}']
  np.testing.assert_allclose(threshold.get_xdata(), -math.log(0.2))
  assert ax.get_title() == 'epoch 4: est. noise 0.34 (true 0.40)'
  plot.plt.close(fig)


def test_threshold_panels(runs):
  run = plot.load_run(runs[0])
  fig = plot.plot_threshold([run])
  ax_tau, ax_rate = fig.axes
  assert ax_tau.get_yscale() == 'log'
  np.testing.assert_allclose(ax_tau.get_lines()[0].get_ydata(),
                             10.0 / np.arange(1, NUM_EPOCHS + 1))
  estimated, true = ax_rate.get_lines()
  np.testing.assert_allclose(estimated.get_ydata(),
                             0.3 + 0.01 * np.arange(1, NUM_EPOCHS + 1))
  np.testing.assert_allclose(true.get_ydata(), 0.4)
  assert true.get_linestyle() == '--'
  assert true.get_color() == estimated.get_color()
  plot.plt.close(fig)


def test_load_run_keeps_last_record_per_epoch_and_ignores_a_torn_line(tmp_path):
  # A resumed run logs epochs 4 and 5 again; an interrupted write leaves half
  # a line at the end.
  extra = (json.dumps({'epoch': 4, 'test_accuracy': 0.1}) + '\n'
           + json.dumps({'epoch': 5, 'test_accuracy': 0.2}) + '\n'
           + '{"epoch": 6, "test_acc')
  run = plot.load_run(_write_run(tmp_path / 'w', 'ce', ogc=False,
                                 metrics_extra=extra))
  np.testing.assert_array_equal(run.epochs, [1, 2, 3, 4, 5])
  np.testing.assert_allclose(run.series('test_accuracy'),
                             [0.55, 0.6, 0.65, 0.1, 0.2])
  assert np.all(np.isnan(run.series('tau')))
  assert not run.has_threshold
  assert run.label == 'ce symmetric 0.4 seed 0'


def test_errors(runs, tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    plot.make_plots([runs[0], tmp_path / 'missing'], tmp_path / 'out')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='has no metrics.jsonl'):
    plot.load_run(tmp_path / 'empty')
  (tmp_path / 'empty' / 'metrics.jsonl').write_text('')
  with pytest.raises(ValueError, match='holds no epoch'):
    plot.load_run(tmp_path / 'empty')
  bad = tmp_path / 'bad'
  bad.mkdir()
  (bad / 'metrics.jsonl').write_text('{"epoch": 1\n{"epoch": 2}\n')
  with pytest.raises(ValueError, match='line 1: not valid JSON'):
    plot.load_run(bad)
  with pytest.raises(ValueError, match='2 labels for 1 workdirs'):
    plot.make_plots([runs[0]], tmp_path / 'out', labels=['a', 'b'])
  with pytest.raises(ValueError, match=r'no queue for epochs \[7\]'):
    plot.plot_h_histogram(plot.load_run(runs[0]), [7])


def test_main(runs, tmp_path, capsys):
  assert plot.main([str(runs[0]), '--out', str(tmp_path / 'o'),
                    '--epochs', '1,5']) == 0
  assert 'wrote' in capsys.readouterr().out
  histogram = tmp_path / 'o' / 'h_histogram_ogc_ce_symmetric_0.4_seed_0.png'
  assert _png_shape(histogram) == (4 * DPI, 2 * 4.5 * DPI, 4)
  with pytest.raises(SystemExit):
    plot.main([str(tmp_path / 'nope'), '--out', str(tmp_path / 'o')])
  assert 'does not exist' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    plot.main([str(runs[0]), '--out', str(tmp_path / 'o'), '--epochs', 'a'])
