#!/usr/bin/env bash
# Prove the images boot, outside the lab, with plain QEMU (TCG, machine pc, SeaBIOS, user-mode
# networking forwarded to 127.0.0.1 only): builds or reuses the cached disk image and deploy
# ramdisk, injects a host's configuration / boots the per-job boot ISO (ramdisk + config, one CD),
# and checks over SSH (tests/e2e/test_image_boot.py). Prints build and power-on-to-SSH timings.
#   images/verify-boot.sh [pytest args, e.g. -k ramdisk]
# Needs root (the builds, loop mounts) and the project's venv (scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/pytest -q -s -p no:randomly -m boot tests/e2e/test_image_boot.py "$@"
