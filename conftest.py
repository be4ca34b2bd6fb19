"""Test set-up: CPU only, with 8 simulated devices for the sharding tests.

The flags must be set before JAX initialises its backend, hence here. Also
puts the doctests that compile a whole network op by op in the slow tier
(`python -m pytest -m "not slow"` leaves them out).
"""

import os

import pytest

# Doctests that take tens of seconds on a CPU (ResNet-18, op by op).
SLOW_DOCTESTS = ('experiments.models.ResNet',)

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
  os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()


def pytest_collection_modifyitems(items):
  for item in items:
    if isinstance(item, pytest.DoctestItem) and item.name in SLOW_DOCTESTS:
      item.add_marker(pytest.mark.slow)
