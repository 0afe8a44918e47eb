#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine (root): Debian packages
# (PostgreSQL, Redis, SSH, the Vagrant lab) and the Python virtualenv in .venv. Idempotent and
# quick when nothing changed (stamp files keyed by the inputs).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf 'install: %s\n' "$*" >&2; }

# chromium: the dashboard's browser test (tests/integration/test_browser.py drives it with Playwright).
APT_PACKAGES=(python3 python3-venv python3-dev gcc postgresql redis-server openssh-client openssh-server
              rsync procps psmisc curl prometheus chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ "${PROVISIONER_SKIP_LAB_DEPS:-0}" != 1 ]]; then
  bash scripts/install-lab-deps.sh
fi

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $PY"
  "$PY" -m venv .venv
fi
# constraints.txt pins every package, so a release elsewhere cannot change what we test (refreshed
# on purpose, see the file's header).
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [[ ! -f $stamp ]]; then
  log "pip install -e .[test,bench] (pinned by constraints.txt)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -c constraints.txt -e '.[test,bench]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
log "ready"
