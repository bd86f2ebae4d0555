"""Fixtures shared by every test; the real-engine ones live in tests/integration/conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
