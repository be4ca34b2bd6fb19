"""Tests for experiments/models.py.

Parameter counts are checked against a formula written from the layer shapes of
kuangliu/pytorch-cifar's ResNet and against the published totals; a tiny ResNet
is checked against a float64 NumPy forward pass written from the PyTorch
definition (padding, strides, shortcut, BatchNorm in train and eval mode).

On CPU, compiling is what costs: shapes and counts come from ``jax.eval_shape``,
numbers from a tiny ResNet, and ResNet-34 runs one batch of 2. Keys use the
'rbg' PRNG, which compiles faster than threefry; the models do not depend on it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import models


def _key(seed=0):
  return jax.random.key(seed, impl='rbg')


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _init_shapes(model, x_shape):
  """Variables' shapes without computing them (tracing only, no compile)."""
  return jax.eval_shape(
      lambda: model.init(_key(), jnp.zeros(x_shape), train=False))


def _kuangliu_resnet_counts(stage_sizes, num_classes, in_channels=3,
                            width=64):
  """(params, batch_stats) of kuangliu's CIFAR ResNet, from its layer shapes.

  Convolutions have no bias; each BatchNorm has weight and bias (params) and
  running_mean and running_var (batch_stats); the Linear layer has a bias.
  """
  conv = 3 * 3 * in_channels * width          # conv1
  bn_channels = width                         # bn1
  in_planes = width
  for stage, num_blocks in enumerate(stage_sizes):
    planes = width * 2 ** stage
    for block in range(num_blocks):
      stride = 2 if stage > 0 and block == 0 else 1
      conv += 3 * 3 * in_planes * planes + 3 * 3 * planes * planes
      bn_channels += 2 * planes
      if stride != 1 or in_planes != planes:  # 1x1 conv + BN shortcut
        conv += in_planes * planes
        bn_channels += planes
      in_planes = planes
  linear = in_planes * num_classes + num_classes
  return conv + 2 * bn_channels + linear, 2 * bn_channels


@pytest.mark.parametrize('name,stage_sizes,num_classes,expected', [
    ('resnet18', [2, 2, 2, 2], 10, 11_173_962),
    ('resnet34', [3, 4, 6, 3], 10, 21_282_122),
    ('resnet18', [2, 2, 2, 2], 100, 11_220_132),
])
def test_resnet_parameter_counts(name, stage_sizes, num_classes, expected):
  variables = _init_shapes(models.create_model(name, num_classes),
                           (2, 32, 32, 3))
  params, batch_stats = _kuangliu_resnet_counts(stage_sizes, num_classes)
  assert params == expected
  assert _count(variables['params']) == expected
  assert _count(variables['batch_stats']) == batch_stats
  assert set(variables) == {'params', 'batch_stats'}


def test_resnet18_layer_shapes():
  variables = _init_shapes(models.ResNet18(num_classes=10), (2, 32, 32, 3))
  params = variables['params']
  assert params['conv1']['kernel'].shape == (3, 3, 3, 64)
  # Projection shortcuts only in the first block of stages 2-4.
  shortcuts = {name: p['shortcut_conv']['kernel'].shape
               for name, p in params.items() if 'shortcut_conv' in p}
  assert shortcuts == {'layer2_0': (1, 1, 64, 128),
                       'layer3_0': (1, 1, 128, 256),
                       'layer4_0': (1, 1, 256, 512)}
  assert params['layer4_1']['conv2']['kernel'].shape == (3, 3, 512, 512)
  assert params['classifier']['kernel'].shape == (512, 10)


@pytest.mark.parametrize('x_shape,expected', [
    # conv 3->32, 32->32, 32->64, 64->64 (3x3, bias); dense 8*8*64->256->10.
    ((2, 32, 32, 3), (27 * 32 + 32) + (288 * 32 + 32) + (288 * 64 + 64)
     + (576 * 64 + 64) + (4096 * 256 + 256) + (256 * 10 + 10)),
    ((2, 8, 8, 1), (9 * 32 + 32) + (288 * 32 + 32) + (288 * 64 + 64)
     + (576 * 64 + 64) + (256 * 256 + 256) + (256 * 10 + 10)),
])
def test_small_cnn_parameter_count(x_shape, expected):
  variables = _init_shapes(models.SmallCNN(num_classes=10), x_shape)
  assert set(variables) == {'params'}
  assert _count(variables) == expected


def test_mlp_parameter_count():
  variables = _init_shapes(models.MLP(num_classes=10), (2, 8, 8, 1))
  assert _count(variables) == (64 * 256 + 256) + (256 * 256 + 256) + (
      256 * 10 + 10)
  variables = _init_shapes(models.MLP(num_classes=3, hidden=(5,)), (2, 7))
  assert _count(variables) == (7 * 5 + 5) + (5 * 3 + 3)


@pytest.mark.parametrize('name', ['resnet18', 'resnet34', 'small_cnn', 'mlp'])
@pytest.mark.parametrize('x_shape', [(2, 32, 32, 3), (2, 8, 8, 1)])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_output_shape_and_dtype(name, x_shape, dtype):
  model = models.create_model(name, num_classes=7, dtype=dtype)
  variables = _init_shapes(model, x_shape)
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == jnp.float32  # Parameters and statistics stay float32.
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  for train in (True, False):
    logits, _ = jax.eval_shape(
        lambda v, x, t=train: model.apply(v, x, train=t,
                                          mutable=['batch_stats']),
        variables, x)
    assert logits.shape == (2, 7)
    assert logits.dtype == jnp.float32


def test_resnet_rejects_unbatched_images():
  model = models.ResNet18(num_classes=10)
  with pytest.raises(AssertionError, match='rank'):
    model.init(_key(), jnp.zeros((32, 32, 3)))


def test_torch_default_initializers():
  # PyTorch: U(-b, b), b = 1/sqrt(fan_in), variance b**2 / 3; 2.4M samples.
  fan_in = 3 * 3 * 512
  w = np.asarray(models.torch_default_kernel_init(_key(), (3, 3, 512, 512)),
                 np.float64)
  # 1 + 1e-6: the bound is rounded to float32.
  assert np.max(np.abs(w)) <= (1 + 1e-6) / np.sqrt(fan_in)
  assert np.max(np.abs(w)) > 0.999 / np.sqrt(fan_in)
  np.testing.assert_allclose(w.mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(w.var(), 1 / (3 * fan_in), rtol=0.01)
  b = np.asarray(models.torch_default_bias_init(512)(_key(1), (100_000,)),
                 np.float64)
  assert np.max(np.abs(b)) <= (1 + 1e-6) / np.sqrt(512)
  np.testing.assert_allclose(b.var(), 1 / (3 * 512), rtol=0.02)


def _assert_torch_init(variables):
  """Every layer of an initialised model has PyTorch's default init."""
  params = variables['params']
  for path, w in jax.tree_util.tree_leaves_with_path(params):
    name = jax.tree_util.keystr(path)
    if 'bn' in name:
      expected = 1.0 if name.endswith("['scale']") else 0.0
      np.testing.assert_array_equal(w, expected, err_msg=name)
      continue
    if name.endswith("['kernel']"):
      fan_in = int(np.prod(w.shape[:-1]))
    else:  # A bias: fan_in from the kernel beside it.
      kernel = params
      for key in path[:-1]:
        kernel = kernel[key.key]
      fan_in = int(np.prod(kernel['kernel'].shape[:-1]))
    bound = 1 / np.sqrt(fan_in)
    assert np.max(np.abs(w)) <= (1 + 1e-6) * bound, name
    assert np.max(np.abs(w)) > 0.5 * bound, name  # Not all zeros or tiny.
  for path, s in jax.tree_util.tree_leaves_with_path(
      variables.get('batch_stats', {})):
    expected = 0.0 if jax.tree_util.keystr(path).endswith("['mean']") else 1.0
    np.testing.assert_array_equal(s, expected)


# --- Float64 NumPy reference of kuangliu's ResNet -----------------------------


def _np_conv(x, w, stride, pad):
  """PyTorch Conv2d (no bias, symmetric zero padding), NHWC / HWIO."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw = w.shape[:2]
  oh = (x.shape[1] - kh) // stride + 1
  ow = (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
      out += np.einsum('nhwc,cd->nhwd', patch, w[i, j])
  return out


def _np_resnet(variables, x, stage_sizes, train):
  """Returns (logits, new batch_stats) of kuangliu's ResNet in float64."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float64),
                        variables['params'])
  stats = jax.tree.map(lambda a: np.asarray(a, np.float64),
                       variables['batch_stats'])
  new_stats = {}

  def bn(x, path):
    p, s = params, stats
    for k in path:
      p, s = p[k], s[k]
    if train:
      mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
      new = {'mean': 0.9 * s['mean'] + 0.1 * mean,
             'var': 0.9 * s['var'] + 0.1 * var}
    else:
      mean, var = s['mean'], s['var']
      new = s
    d = new_stats
    for k in path[:-1]:
      d = d.setdefault(k, {})
    d[path[-1]] = new
    return (x - mean) / np.sqrt(var + 1e-5) * p['scale'] + p['bias']

  relu = lambda a: np.maximum(a, 0)
  out = relu(bn(_np_conv(x, params['conv1']['kernel'], 1, 1), ['bn1']))
  for stage, num_blocks in enumerate(stage_sizes):
    for block in range(num_blocks):
      name = f'layer{stage + 1}_{block}'
      p = params[name]
      stride = 2 if stage > 0 and block == 0 else 1
      y = relu(bn(_np_conv(out, p['conv1']['kernel'], stride, 1),
                  [name, 'bn1']))
      y = bn(_np_conv(y, p['conv2']['kernel'], 1, 1), [name, 'bn2'])
      if 'shortcut_conv' in p:
        shortcut = bn(_np_conv(out, p['shortcut_conv']['kernel'], stride, 0),
                      [name, 'shortcut_bn'])
      else:
        shortcut = out
      out = relu(y + shortcut)
  pooled = out.mean(axis=(1, 2))
  logits = pooled @ params['classifier']['kernel'] + params['classifier'][
      'bias']
  return logits, new_stats


@pytest.fixture(scope='module')
def tiny_resnet():
  """A 2-stage ResNet with 4 and 8 filters, its initial variables, a batch."""
  stage_sizes = (1, 2)
  model = models.ResNet(stage_sizes=stage_sizes, num_classes=3, num_filters=4)
  # Even spatial size: a stride-2 3x3 conv must pad (1, 1) as PyTorch, not
  # (0, 1) as 'SAME'.
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 6, 6, 3)),
                  jnp.float32)
  return model, stage_sizes, model.init(_key(), x, train=False), x


@pytest.fixture(scope='module')
def perturbed_resnet(tiny_resnet):
  """The tiny ResNet with BN scale, bias and running statistics moved off
  their initial 1, 0, 0, 1, so that mixing them up would show."""
  model, stage_sizes, variables, x = tiny_resnet
  rng = np.random.default_rng(1)
  # Positive perturbations keep variances positive.
  variables = jax.tree.map(
      lambda a: a + 0.5 * rng.uniform(size=a.shape).astype(np.float32),
      variables)
  return model, stage_sizes, variables, x


def test_resnet_init(tiny_resnet):
  _assert_torch_init(tiny_resnet[2])


@pytest.mark.parametrize('train', [True, False])
def test_resnet_matches_float64_reference(perturbed_resnet, train):
  model, stage_sizes, variables, x = perturbed_resnet
  logits, updates = model.apply(variables, x, train=train,
                                mutable=['batch_stats'])
  ref_logits, ref_stats = _np_resnet(variables, np.asarray(x, np.float64),
                                     stage_sizes, train)
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      updates['batch_stats'], ref_stats)


# --- Train / eval behaviour and bfloat16 ------------------------------------
# On the tiny ResNet above: the code path of ResNet-18 at a fraction of the
# compile time (on CPU, compiling is what costs).


def test_train_updates_batch_stats_and_eval_does_not(perturbed_resnet):
  model, _, variables, x = perturbed_resnet
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  changed = jax.tree.map(lambda a, b: bool(jnp.all(a != b)),
                         variables['batch_stats'], updates['batch_stats'])
  assert all(jax.tree.leaves(changed))
  _, updates = model.apply(variables, x, train=False, mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, variables['batch_stats'],
               updates['batch_stats'])
  # Not mutable: eval needs no mutable collection.
  model.apply(variables, x, train=False)


def test_eval_is_deterministic_and_per_example(perturbed_resnet):
  model, _, variables, x = perturbed_resnet
  apply = model.apply
  logits = apply(variables, x, train=False)
  np.testing.assert_array_equal(logits, apply(variables, x, train=False))
  # Running statistics: an example's logits do not depend on the rest of the
  # batch. With batch statistics (train=True) they do.
  np.testing.assert_allclose(apply(variables, x[::-1], train=False)[::-1],
                             logits, rtol=1e-5, atol=1e-6)
  train_logits, _ = apply(variables, x, train=True, mutable=('batch_stats',))
  train_reversed, _ = apply(variables, x[::-1], train=True,
                            mutable=('batch_stats',))
  np.testing.assert_allclose(train_reversed[::-1], train_logits, rtol=1e-5,
                             atol=1e-6)
  assert not np.allclose(train_logits, logits, atol=1e-2)
  assert not np.allclose(apply(variables, x[:1], train=True,
                               mutable=('batch_stats',))[0],
                         train_logits[:1], atol=1e-2)


@pytest.mark.parametrize('train', [True, False])
def test_bfloat16_close_to_float32(perturbed_resnet, train):
  model, stage_sizes, variables, x = perturbed_resnet
  model_bf16 = models.ResNet(stage_sizes=stage_sizes, num_classes=3,
                             num_filters=4, dtype=jnp.bfloat16)
  f32, _ = model.apply(variables, x, train=train, mutable=['batch_stats'])
  bf16, updates = model_bf16.apply(variables, x, train=train,
                                   mutable=['batch_stats'])
  assert bf16.dtype == jnp.float32
  for leaf in jax.tree.leaves(updates):
    assert leaf.dtype == jnp.float32
  # bfloat16 has an 8-bit significand: ~0.4% relative rounding per op.
  np.testing.assert_allclose(bf16, f32, atol=0.02 * np.max(np.abs(f32)))
  assert not np.array_equal(bf16, f32)


def test_resnet18_computes_in_bfloat16():
  model = models.ResNet18(num_classes=10, dtype=jnp.bfloat16)
  variables = _init_shapes(model, (2, 32, 32, 3))
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(
      variables, x)
  convs = [e for e in jaxpr.eqns if e.primitive.name == 'conv_general_dilated']
  assert len(convs) == 20  # 17 3x3 convolutions and 3 shortcuts.
  assert all(v.aval.dtype == jnp.bfloat16 for e in convs for v in e.invars)
  dots = [e for e in jaxpr.eqns if e.primitive.name == 'dot_general']
  assert len(dots) == 1  # The classifier, in float32.
  assert all(v.aval.dtype == jnp.float32 for v in dots[0].invars)


@pytest.mark.parametrize('name', ['small_cnn', 'mlp'])
def test_small_models(name):
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 8, 1)),
                  jnp.float32)
  model = models.create_model(name, 10)
  variables = model.init(_key(), x)
  assert set(variables) == {'params'}
  _assert_torch_init(variables)
  f32 = model.apply(variables, x)
  # No state: train has no effect.
  np.testing.assert_array_equal(model.apply(variables, x, train=False), f32)
  bf16 = models.create_model(name, 10, jnp.bfloat16).apply(variables, x)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, atol=0.02 * np.max(np.abs(f32)))
  assert not np.array_equal(bf16, f32)


@pytest.mark.slow
def test_resnet34_one_batch():
  model = models.create_model('resnet34', 10)
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 32, 32, 3)),
                  jnp.float32)
  variables = model.init(_key(), x, train=False)
  _assert_torch_init(variables)
  logits, updates = model.apply(variables, x, train=True,
                                mutable=['batch_stats'])
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  # Stage 3 of ResNet-34 has 6 blocks; all 36 BatchNorms moved.
  assert 'layer3_5' in updates['batch_stats']
  assert 'layer3_6' not in updates['batch_stats']
  changed = jax.tree.map(lambda a, b: bool(jnp.all(a != b)),
                         variables['batch_stats'], updates['batch_stats'])
  assert len(jax.tree.leaves(changed)) == 2 * 36
  assert all(jax.tree.leaves(changed))
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, 10) and np.all(np.isfinite(logits))


def test_create_model():
  assert isinstance(models.create_model('resnet18', 10), models.ResNet)
  assert models.create_model('resnet34', 10).stage_sizes == (3, 4, 6, 3)
  assert models.create_model('small_cnn', 5, jnp.bfloat16).dtype == jnp.bfloat16
  assert models.create_model('mlp', 5).num_classes == 5
  with pytest.raises(ValueError, match="'resnet50'.*'mlp'.*'resnet18'"):
    models.create_model('resnet50', 10)
