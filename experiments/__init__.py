"""Flax experiment harness for OGC: models, input pipeline, training."""
