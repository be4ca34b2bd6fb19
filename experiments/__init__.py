"""Flax experiment harness for OGC: data, augmentation, models, training, sweeps."""
