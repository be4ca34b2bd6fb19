"""``python -m sweeps``: runs a sweep (`sweeps.sweep`)."""

import sys

from sweeps import sweep

sys.exit(sweep.main())
