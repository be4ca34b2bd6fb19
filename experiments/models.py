"""Flax models for the noisy-label experiments.

* ``ResNet18`` / ``ResNet34``: the CIFAR ResNet of the authors' code, which is
  the one in kuangliu/pytorch-cifar: a 3x3 stride-1 stem with no max-pool,
  four stages of ``BasicBlock`` with 64, 128, 256, 512 filters and strides
  1, 2, 2, 2, a 1x1 convolution + BatchNorm shortcut where the shape changes,
  global average pooling and one dense layer. With 10 classes ResNet-18 has
  11,173,962 parameters and ResNet-34 21,282,122, the same as the PyTorch
  models (BatchNorm running statistics are not counted; they live in the
  ``batch_stats`` collection).
* ``SmallCNN``: conv32-conv32-pool-conv64-conv64-pool-dense256-dense.
* ``MLP``: flattens its input; for the 8x8 digits data set.

Every model is called as ``model.apply(variables, x, train=...)`` with ``x`` of
shape ``[batch, height, width, channels]`` and returns float32 logits of shape
``[batch, num_classes]``. ``dtype`` is the compute dtype (e.g.
``jnp.bfloat16``); parameters are always float32, BatchNorm statistics are
reduced in float32 and the classifier head (pooling and the last dense layer)
runs in float32.

Initialisation is PyTorch's default, which the authors' code uses: conv and
dense kernels ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (``kaiming_uniform_`` with
``a=sqrt(5)``), biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, BatchNorm scale 1
and bias 0.

BatchNorm uses ``momentum=0.9``, i.e. ``running = 0.9 * running + 0.1 * batch``,
PyTorch's ``momentum=0.1``, and ``epsilon=1e-5``. One difference remains:
PyTorch updates the running variance with the unbiased batch variance, Flax
with the biased one (a factor ``n / (n - 1)``, ``n = batch * height * width``
values per channel: negligible at CIFAR batch sizes).
"""

import functools
from typing import Any, Callable, Sequence

import chex
from flax import linen as nn
import jax
import jax.numpy as jnp

from experiments.errors import ConfigError

ModuleDef = Any

# PyTorch's default kernel init: kaiming_uniform_(a=sqrt(5)), whose bound is
# gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + a**2)) = sqrt(1 / 3), i.e.
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance 1 / (3 fan_in).
torch_default_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, 'fan_in', 'uniform')


def torch_default_bias_init(fan_in: int) -> Callable[..., jax.Array]:
  """PyTorch's default bias init, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

  Args:
    fan_in: inputs per output unit of the layer (``kh * kw * in_channels`` for
      a convolution, ``in_features`` for a dense layer).

  Returns:
    A Flax initializer ``(key, shape, dtype) -> array``.
  """
  bound = 1.0 / fan_in ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _dense(features: int, fan_in: int, **kwargs) -> nn.Dense:
  """A dense layer with PyTorch's default initialisation."""
  return nn.Dense(
      features,
      kernel_init=torch_default_kernel_init,
      bias_init=torch_default_bias_init(fan_in),
      **kwargs)


def _logits(x: jax.Array, num_classes: int) -> jax.Array:
  """The float32 classifier head shared by all models: dense to classes."""
  x = x.astype(jnp.float32)
  return _dense(num_classes, x.shape[-1], dtype=jnp.float32,
                name='classifier')(x)


class BasicBlock(nn.Module):
  """ResNet basic block: two 3x3 convolutions and a residual connection.

  ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``, where ``shortcut`` is
  the identity, or a 1x1 convolution with the block's stride followed by
  BatchNorm when the stride is not 1 or the number of channels changes.
  Submodules are named as in kuangliu's ``BasicBlock``: ``conv1``, ``bn1``,
  ``conv2``, ``bn2``, ``shortcut_conv``, ``shortcut_bn``.
  """
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    shortcut = x
    # Explicit padding 1, as PyTorch: 'SAME' would pad a stride-2 3x3
    # convolution of an even-sized input by (0, 1) instead of (1, 1).
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides),
                  padding=((1, 1), (1, 1)), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), padding=((1, 1), (1, 1)),
                  name='conv2')(y)
    y = self.norm(name='bn2')(y)
    if self.strides != 1 or x.shape[-1] != self.filters:
      shortcut = self.conv(self.filters, (1, 1), (self.strides, self.strides),
                           padding='VALID', name='shortcut_conv')(x)
      shortcut = self.norm(name='shortcut_bn')(shortcut)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """CIFAR ResNet (3x3 stem, no max-pool), as in kuangliu/pytorch-cifar.

  Submodules follow the PyTorch names: ``conv1``, ``bn1``, blocks
  ``layer{stage}_{block}`` (``layer1.0`` in PyTorch), and the head
  ``classifier`` (``linear`` in PyTorch).

  Attributes:
    stage_sizes: number of ``BasicBlock`` in each stage, e.g. ``(2, 2, 2, 2)``
      for ResNet-18 (a tuple keeps the module hashable, e.g. for a static
      ``jit`` argument).
    num_classes: number of output logits.
    num_filters: filters of the stem and the first stage; stage ``i`` has
      ``num_filters * 2**i``.
    dtype: compute dtype of the convolutions and BatchNorm outputs; parameters
      stay float32 and the logits are float32.

  Any image size works: on 32x32 CIFAR the last stage is 4x4, on the 8x8
  digits 1x1.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from experiments import models
    >>> model = models.ResNet18(num_classes=10)
    >>> x = jnp.zeros((2, 32, 32, 3))
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> logits, updates = model.apply(variables, x, mutable=['batch_stats'])
    >>> logits.shape, logits.dtype
    ((2, 10), dtype('float32'))

  References:
    He et al., `Deep Residual Learning for Image Recognition
    <https://arxiv.org/abs/1512.03385>`_, CVPR 2016.
  """
  stage_sizes: Sequence[int]
  num_classes: int
  num_filters: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    """Returns float32 logits ``[batch, num_classes]``.

    Args:
      x: images ``[batch, height, width, channels]``.
      train: if True BatchNorm normalises with the batch statistics and updates
        the running ones (apply with ``mutable=['batch_stats']``); if False it
        uses the running statistics and the model is deterministic.
    """
    chex.assert_rank(x, 4)
    conv = functools.partial(
        nn.Conv, use_bias=False, dtype=self.dtype,
        kernel_init=torch_default_kernel_init)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=0.9,
        epsilon=1e-5, dtype=self.dtype)

    x = jnp.asarray(x, self.dtype)
    x = conv(self.num_filters, (3, 3), padding=((1, 1), (1, 1)),
             name='conv1')(x)
    x = nn.relu(norm(name='bn1')(x))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(self.num_filters * 2 ** i, conv=conv, norm=norm,
                       strides=strides, name=f'layer{i + 1}_{j}')(x)
    # Global average pool (kuangliu's avg_pool2d(4) on the 4x4 CIFAR map).
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return _logits(x, self.num_classes)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3))


class SmallCNN(nn.Module):
  """conv32-conv32-pool-conv64-conv64-pool-dense256-dense, ReLU, no BatchNorm.

  Convolutions are 3x3 with 'SAME' padding, pools 2x2 max-pools. There is no
  BatchNorm and no dropout, so the model has no state and ``train`` changes
  nothing; it is accepted so that all models are called the same way.

  Attributes:
    num_classes: number of output logits.
    dtype: compute dtype; parameters and logits are float32.
  """
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    """Returns float32 logits ``[batch, num_classes]``; ``x`` is NHWC."""
    del train  # No BatchNorm or dropout.
    chex.assert_rank(x, 4)
    x = jnp.asarray(x, self.dtype)
    for filters in (32, 64):
      for _ in range(2):
        fan_in = 3 * 3 * x.shape[-1]
        x = nn.relu(nn.Conv(
            filters, (3, 3), padding='SAME', dtype=self.dtype,
            kernel_init=torch_default_kernel_init,
            bias_init=torch_default_bias_init(fan_in))(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(_dense(256, x.shape[-1], dtype=self.dtype)(x))
    return _logits(x, self.num_classes)


class MLP(nn.Module):
  """Multi-layer perceptron with ReLU; flattens all but the batch axis.

  Attributes:
    num_classes: number of output logits.
    hidden: widths of the hidden layers.
    dtype: compute dtype; parameters and logits are float32.
  """
  num_classes: int
  hidden: Sequence[int] = (256, 256)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    """Returns float32 logits ``[batch, num_classes]``."""
    del train  # No BatchNorm or dropout.
    x = jnp.asarray(x, self.dtype).reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(_dense(width, x.shape[-1], dtype=self.dtype)(x))
    return _logits(x, self.num_classes)


_MODELS = {
    'resnet18': ResNet18,
    'resnet34': ResNet34,
    'small_cnn': SmallCNN,
    'mlp': MLP,
}


def create_model(name: str, num_classes: int,
                 dtype: Any = jnp.float32) -> nn.Module:
  """Builds a model by name.

  Args:
    name: one of ``'resnet18'``, ``'resnet34'``, ``'small_cnn'``, ``'mlp'``.
    num_classes: number of output logits.
    dtype: compute dtype (parameters and logits stay float32).

  Returns:
    The (unbound) Flax module.

  Raises:
    ValueError: if ``name`` is not a known model.
  """
  if name not in _MODELS:
    raise ValueError(
        f'Unknown model {name!r}; expected one of {sorted(_MODELS)}.')
  return _MODELS[name](num_classes=num_classes, dtype=dtype)


def from_config(config, num_classes: int) -> nn.Module:
  """``config.model`` in its compute dtype ``config.dtype``.

  Raises:
    ConfigError: an unknown model or dtype.
  """
  if config.dtype not in ('float32', 'bfloat16'):
    raise ConfigError(f'Unknown config.dtype={config.dtype!r}; expected one '
                      "of ('float32', 'bfloat16').")
  try:
    return create_model(config.model, num_classes,
                        dtype=jnp.dtype(config.dtype))
  except ValueError as e:
    raise ConfigError(f'config.model: {e}') from None
