"""Bootstrap the base image tarballs (run by tests/run before pytest)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.images import RELEASES, tarball

for release in RELEASES:
    print(f"base image tarball: {tarball(release)}", flush=True)
