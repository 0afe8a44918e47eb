#!/usr/bin/env bash
# End-to-end suite: brings the lab up (box built or reused), runs tests/e2e inside its network
# namespace, and always tears the lab down again.
set -euo pipefail
cd "$(dirname "$0")/.."
vagrant/lab up --hosts "${PROVISIONER_LAB_HOSTS:-2}"
trap 'vagrant/lab down || true' EXIT
set +e
vagrant/lab exec -- .venv/bin/pytest -q -m e2e tests/e2e "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then rc=0; fi
exit $rc
