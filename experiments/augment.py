"""On-device preprocessing: random crop, flip and rotation, and `normalize`.

Pure ``jnp`` functions on device batches, meant to run inside the
jit-compiled train step, so that the decoded dataset (`experiments.data`)
stays on the device as uint8 and no host pipeline is needed.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


def normalize(images, mean, std):
  """Scales pixels to 0..1, then standardises each channel.

  Args:
    images: ``[..., C]`` on the 0..255 scale, uint8 or float.
    mean: ``[C]`` per-channel mean on the 0..1 scale
      (`experiments.data.Dataset.channel_mean_std`).
    std: ``[C]`` per-channel standard deviation on the 0..1 scale.

  Returns:
    float32 ``(images / 255 - mean) / std``, the shape of ``images``.

  Example:
    >>> import numpy as np
    >>> from experiments import augment
    >>> augment.normalize(np.array([[0, 255]], np.uint8).T, [0.5], [0.5])
    Array([[-1.],
           [ 1.]], dtype=float32)
  """
  images = jnp.asarray(images)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  if mean.shape != images.shape[-1:] or std.shape != images.shape[-1:]:
    raise ValueError(
        f'mean {mean.shape} and std {std.shape} must have one value per '
        f'channel of images {images.shape}.')
  return (images.astype(jnp.float32) / 255.0 - mean) / std


class AugmentationParams(NamedTuple):
  """Random draws of one augmented batch; a field is None when disabled.

  Attributes:
    crop_offsets: int32 ``[b, 2]``, the ``(row, column)`` corner of the crop in
      the zero-padded image, uniform in ``[0, 2 * crop_padding]``; the output
      pixel ``(y, x)`` is the input pixel ``(y + dy - p, x + dx - p)``.
    flips: bool ``[b]``, mirror left-right, each with probability 1/2.
    angles: float32 ``[b]``, rotation in degrees, uniform in
      ``[-rotation_degrees, rotation_degrees]``, counter-clockwise as
      displayed (the sense of `scipy.ndimage.rotate`).
  """
  crop_offsets: jax.Array | None
  flips: jax.Array | None
  angles: jax.Array | None


def sample_augmentation(rng, batch_size, *, crop_padding=4, flip=True,
                        rotation_degrees=15.0) -> AugmentationParams:
  """Draws the random parameters of `augment` for a batch.

  Args:
    rng: a `jax.random` key.
    batch_size: number of images.
    crop_padding: zero padding of the random crop; 0 disables cropping.
    flip: whether to mirror half of the images left-right.
    rotation_degrees: largest absolute rotation angle; 0 disables rotation.

  Returns:
    `AugmentationParams`.
  """
  if crop_padding < 0 or rotation_degrees < 0:
    raise ValueError(
        f'crop_padding ({crop_padding}) and rotation_degrees '
        f'({rotation_degrees}) must be non-negative.')
  crop_rng, flip_rng, angle_rng = jax.random.split(rng, 3)
  crop_offsets = flips = angles = None
  if crop_padding:
    crop_offsets = jax.random.randint(
        crop_rng, (batch_size, 2), 0, 2 * crop_padding + 1, dtype=jnp.int32)
  if flip:
    flips = jax.random.bernoulli(flip_rng, 0.5, (batch_size,))
  if rotation_degrees:
    angles = jax.random.uniform(
        angle_rng, (batch_size,), jnp.float32, -rotation_degrees,
        rotation_degrees)
  return AugmentationParams(crop_offsets, flips, angles)


def _rotate(image, angle):
  """Rotates ``[H, W, C]`` about its centre, bilinear, zero outside."""
  height, width = image.shape[:2]
  theta = jnp.deg2rad(angle)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  center_y, center_x = (height - 1) / 2, (width - 1) / 2
  y, x = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) - center_y,
                      jnp.arange(width, dtype=jnp.float32) - center_x,
                      indexing='ij')
  # Inverse map of scipy.ndimage.rotate: source = R @ (output - c) + c with
  # R = [[cos, sin], [-sin, cos]] on (row, column).
  source = [cos * y + sin * x + center_y, -sin * y + cos * x + center_x]
  # JAX's 'constant' mode is SciPy's 'grid-constant': zeros enter the
  # interpolation at the border, as in torchvision's fill=0.
  rotate_channel = lambda c: jax.scipy.ndimage.map_coordinates(
      c, source, order=1, mode='constant', cval=0.0)
  return jax.vmap(rotate_channel, in_axes=2, out_axes=2)(image)


def apply_augmentation(images, params: AugmentationParams, *,
                       crop_padding=4):
  """Applies drawn crops, flips and rotations, in that order, to a batch.

  Args:
    images: float ``[b, H, W, C]``.
    params: from `sample_augmentation` with the same ``crop_padding``.
    crop_padding: zero padding of the crop (static).

  Returns:
    The augmented images, same shape and dtype.
  """
  images = jnp.asarray(images)
  if images.ndim != 4 or not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(
        f'images must be a float [b, H, W, C] array, got {images.dtype} '
        f'{images.shape}; cast uint8 images with .astype(jnp.float32).')
  if (params.crop_offsets is not None) != bool(crop_padding):
    raise ValueError(
        f'params were drawn for another crop_padding than {crop_padding}.')
  height, width, channels = images.shape[1:]

  def augment_one(image, crop_offset, flip, angle):
    if crop_offset is not None:
      padded = jnp.pad(image, ((crop_padding, crop_padding),
                               (crop_padding, crop_padding), (0, 0)))
      image = jax.lax.dynamic_slice(
          padded, (crop_offset[0], crop_offset[1], 0),
          (height, width, channels))
    if flip is not None:
      image = jnp.where(flip, image[:, ::-1], image)
    if angle is not None:
      image = _rotate(image, angle).astype(image.dtype)
    return image

  return jax.vmap(augment_one)(images, *params)


def augment(rng, images, *, crop_padding=4, flip=True, rotation_degrees=15.0):
  """Random crop with zero padding, horizontal flip and rotation of a batch.

  The torchvision recipe ``RandomCrop(32, padding=4)``,
  ``RandomHorizontalFlip()``, ``RandomRotation(15)``, each image drawing its
  own parameters, as one vectorised ``jnp`` function to call inside a jitted
  step. Apply it before `normalize`, on the 0..255 scale, so that the zero
  fill of padding and rotation is black as in torchvision. Rotation
  interpolates bilinearly (torchvision's default is nearest), which blurs
  less than nearest-neighbour aliasing on 32x32 images.

  Args:
    rng: a `jax.random` key.
    images: float ``[b, H, W, C]``.
    crop_padding: zero padding of the random crop; 0 disables cropping.
    flip: whether to mirror half of the images left-right.
    rotation_degrees: largest absolute angle; 0 disables rotation.

  Returns:
    The augmented images, same shape and dtype.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from experiments import augment
    >>> images = jnp.ones((2, 8, 8, 1))
    >>> augment.augment(jax.random.key(0), images, crop_padding=0,
    ...                 flip=False, rotation_degrees=0.0).sum()
    Array(128., dtype=float32)
  """
  params = sample_augmentation(
      rng, jnp.shape(images)[0], crop_padding=crop_padding, flip=flip,
      rotation_degrees=rotation_degrees)
  return apply_augmentation(images, params, crop_padding=crop_padding)
