"""Tests for experiments/augment.py: crops, flips, rotations and normalize."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from experiments import augment
from experiments import data


def _images(batch=4, height=9, width=7, channels=2, seed=0):
  return np.random.default_rng(seed).uniform(
      0, 255, (batch, height, width, channels)).astype(np.float32)


def test_identity_when_disabled():
  images = _images()
  out = augment.augment(jax.random.key(0), images, crop_padding=0,
                        flip=False, rotation_degrees=0.0)
  assert out.dtype == jnp.float32 and out.shape == images.shape
  np.testing.assert_array_equal(out, images)


def test_flip_mirrors_exactly():
  images = _images()
  params = augment.sample_augmentation(
      jax.random.key(3), 4, crop_padding=0, flip=True, rotation_degrees=0.0)
  flips = np.asarray(params.flips)
  assert 0 < flips.sum() < 4  # This key draws both outcomes.
  out = np.asarray(augment.augment(
      jax.random.key(3), images, crop_padding=0, rotation_degrees=0.0))
  expected = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
  np.testing.assert_array_equal(out, expected)
  assert not np.array_equal(images[:, :, ::-1], images)  # Asymmetric.


def test_crop_shifts_by_sampled_offsets():
  images = _images(batch=6)
  padding = 3
  params = augment.sample_augmentation(
      jax.random.key(1), 6, crop_padding=padding, flip=False,
      rotation_degrees=0.0)
  offsets = np.asarray(params.crop_offsets)
  assert offsets.min() >= 0 and offsets.max() <= 2 * padding
  assert len({tuple(o) for o in offsets}) > 1
  out = np.asarray(augment.augment(
      jax.random.key(1), images, crop_padding=padding, flip=False,
      rotation_degrees=0.0))
  # out[y, x] = image[y + dy - p, x + dx - p], zero outside the image.
  for image, (dy, dx), result in zip(images, offsets, out):
    expected = np.zeros_like(image)
    for y in range(image.shape[0]):
      for x in range(image.shape[1]):
        sy, sx = y + dy - padding, x + dx - padding
        if 0 <= sy < image.shape[0] and 0 <= sx < image.shape[1]:
          expected[y, x] = image[sy, sx]
    np.testing.assert_array_equal(result, expected)


def test_rotation_matches_scipy():
  images = _images(batch=3, height=12, width=10) / 255
  params = augment.sample_augmentation(
      jax.random.key(2), 3, crop_padding=0, flip=False, rotation_degrees=15.0)
  angles = np.asarray(params.angles)
  assert np.all(np.abs(angles) <= 15) and np.abs(angles).max() > 5
  out = np.asarray(augment.apply_augmentation(images, params,
                                              crop_padding=0))
  for image, angle, result in zip(images, angles, out):
    image = image.astype(np.float64)
    # Bilinear with zeros interpolated in at the border: 'grid-constant'.
    full = ndimage.rotate(image, angle, axes=(0, 1), reshape=False, order=1,
                          mode='grid-constant', cval=0.0)
    np.testing.assert_allclose(result, full, atol=1e-5)
    # Interior agrees with the default 'constant' mode too.
    interior = ndimage.rotate(image, angle, axes=(0, 1), reshape=False,
                              order=1, mode='constant', cval=0.0)
    np.testing.assert_allclose(result[3:-3, 3:-3], interior[3:-3, 3:-3],
                               atol=1e-5)
  # Counter-clockwise as displayed: 90 degrees moves the top row to the left
  # column.
  square = _images(batch=1, height=5, width=5)
  quarter = augment.AugmentationParams(None, None, jnp.array([90.0]))
  turned = augment.apply_augmentation(square, quarter, crop_padding=0)
  np.testing.assert_allclose(turned[0], np.rot90(square[0]), atol=1e-3)


def test_jit_and_batch():
  images = np.repeat(_images(batch=1, height=8, width=8, channels=3), 8, axis=0)
  jitted = jax.jit(augment.augment,
                   static_argnames=('crop_padding', 'flip', 'rotation_degrees'))
  out = jitted(jax.random.key(5), jnp.asarray(images))
  assert out.shape == images.shape and out.dtype == jnp.float32
  np.testing.assert_allclose(out, augment.augment(
      jax.random.key(5), images), atol=1e-4)
  # Identical inputs, different augmentations.
  distinct = {np.asarray(o).tobytes() for o in out}
  assert len(distinct) == 8
  # bfloat16 batches keep their dtype.
  assert jitted(jax.random.key(5), out.astype(jnp.bfloat16)).dtype == (
      jnp.bfloat16)


def test_augment_rejects_integer_images():
  with pytest.raises(ValueError, match='float'):
    augment.augment(jax.random.key(0), np.zeros((1, 4, 4, 1), np.uint8))



def test_normalize_per_channel():
  images = np.random.default_rng(0).integers(
      0, 256, (50, 4, 4, 3), dtype=np.uint8)
  images[..., 2] //= 4  # Channels with different statistics.
  ds = data.Dataset(
      'rgb', images, np.zeros(50, np.int32), images[:2], np.zeros(2, np.int32),
      1, ('a',))
  mean, std = ds.channel_mean_std
  assert mean.shape == (3,) and mean[2] < mean[0] / 2
  normalized = np.asarray(augment.normalize(
      images.astype(np.float32), mean, std))
  np.testing.assert_allclose(normalized.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(normalized.std(axis=(0, 1, 2)), 1, atol=1e-5)
  with pytest.raises(ValueError, match='one value per channel'):
    augment.normalize(images, mean[:1], std[:1])
