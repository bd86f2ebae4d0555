"""Bootstrap the base image tarballs (run by tests/run before pytest)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.daemon import DOCKERS
from harness.images import RELEASES, docker_rootfs, tarball

for release in RELEASES:
    print(f"base image tarball: {tarball(release)}", flush=True)
for version in DOCKERS[1:]:
    print(f"Docker {version} root filesystem: {docker_rootfs(version)}", flush=True)
