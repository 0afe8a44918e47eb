#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine (root): installs everything, builds or reuses the lab
# box, starts the lab (one VM in a private network namespace) and the service on its embedded
# default (SQLite + in-process worker), enrolls the VM, requests a host as a customer with live
# progress, prints the per-phase install SLIs, releases the host, and tears the lab down.
# PROVISIONER_DEMO_KEEP_LAB=1 leaves the lab running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
vagrant/lab up --hosts 1 >/dev/null
if [[ "${PROVISIONER_DEMO_KEEP_LAB:-0}" != 1 ]]; then
  trap 'vagrant/lab down || true' EXIT
fi
vagrant/lab exec -- bash scripts/demo-inside.sh
