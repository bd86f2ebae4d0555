"""Fixtures shared by every test; the real-engine ones live in tests/integration/conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


# Hypothesis: a few thousand examples per fuzz target in the normal run; HYPOTHESIS_PROFILE=long
# (a person's run, not CI's) tries fifty thousand.
import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=50_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Never the machine's own idmap helper: a test that wants one starts its own (tests/integration/test_idmap.py).
os.environ.setdefault("DEVBOX_IDMAP_RUN", f"/run/devbox-test-no-idmapd-{os.getpid()}")
