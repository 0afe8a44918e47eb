#!/usr/bin/env bash
# Runs inside the lab's network namespace (called by scripts/demo.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
STATE=${PROVISIONER_LAB_STATE:-/run/provisioner-lab}
WORK=$(mktemp -d /tmp/provisioner-demo.XXXXXX)
export PROVISIONER_DATA_DIR="$WORK/data" PROVISIONER_BACKUP_STORE="$STATE/backup.json"
export PROVISIONER_URL=http://127.0.0.1:8080
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

say "starting the service (embedded: SQLite in $PROVISIONER_DATA_DIR, in-process worker)"
provisioner serve >"$WORK/service.log" 2>&1 &
SVC=$!
trap 'kill $SVC 2>/dev/null; wait $SVC 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do curl -fsS "$PROVISIONER_URL/healthz" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fsS "$PROVISIONER_URL/healthz" >/dev/null || { echo "service did not start:"; tail -30 "$WORK/service.log"; exit 1; }

say "bootstrap: admin, a tenant, an operator and a customer"
export PROVISIONER_TOKEN; PROVISIONER_TOKEN=$(provisioner -o json admin init | json '["token"]')
TENANT=$(provisioner -o json tenants create acme --quota default=5 | json '["id"]')
OP_ID=$(provisioner -o json users create ops --role operator | json '["id"]')
CU_ID=$(provisioner -o json users create alice --role customer --tenant-id "$TENANT" | json '["id"]')
OP_TOKEN=$(provisioner -o json tokens create "$OP_ID" | json '["token"]')
CU_TOKEN=$(provisioner -o json tokens create "$CU_ID" | json '["token"]')

say "operator enrolls the lab VM: the service reads and pins its SSH host key (fingerprint shown), commissioning gathers its hardware"
read -r NAME ADDR PORT USER KEY < <(python3 -c "import json; h=json.load(open('$STATE/hosts.json'))[0]; print(h['name'], h['address'], h['port'], h['user'], h['private_key'])")
HOST_ID=$(PROVISIONER_TOKEN=$OP_TOKEN provisioner -o json hosts enroll "$NAME" "$ADDR" --port "$PORT" --user "$USER" --key-file "$KEY" | json '["id"]')
CJOB=$(PROVISIONER_TOKEN=$OP_TOKEN provisioner -o json jobs list --host-id "$HOST_ID" --kind commission | json '["items"][0]["id"]')
PROVISIONER_TOKEN=$OP_TOKEN provisioner jobs watch "$CJOB"
PROVISIONER_TOKEN=$OP_TOKEN provisioner hosts show "$HOST_ID"

say "customer requests a host (no image: it keeps its installed OS): RAID1, default-deny firewall (+8080 from the lab net), backup with a verified restore"
ssh-keygen -q -t ed25519 -N '' -C demo-customer -f "$WORK/customer_key"
PROVISIONER_TOKEN=$CU_TOKEN provisioner requests create --ssh-key "$WORK/customer_key.pub" \
  --port 8080/tcp@192.168.121.0/24 --watch

say "the customer logs in with their key"
# Against the host key the service pinned at enrollment, strictly (the fingerprint was shown above).
PROVISIONER_TOKEN=$OP_TOKEN provisioner -o json hosts show "$HOST_ID" | python3 -c '
import json, sys
h = json.load(sys.stdin); name = h["address"] if h["port"] == 22 else "[%s]:%d" % (h["address"], h["port"])
print(name, h["host_key"])' >"$WORK/known_hosts"
ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$WORK/known_hosts" -o GlobalKnownHostsFile=/dev/null \
  -o LogLevel=ERROR -p "$PORT" -i "$WORK/customer_key" "customer@$ADDR" 'echo "logged in as $(id -un) on $(hostname)"; cat /proc/mdstat | head -3'

say "the customer's dashboard shows the same numbers ($PROVISIONER_URL/ui in a browser)"
# The sign-in form carries a one-off CSRF value that must match its cookie (as a browser sends both).
LOGIN_CSRF=$(curl -fsS -c "$WORK/ui.cookies" "$PROVISIONER_URL/ui/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p')
curl -fsS -b "$WORK/ui.cookies" -c "$WORK/ui.cookies" -o /dev/null --data-urlencode "token=$CU_TOKEN" \
  --data-urlencode "csrf=$LOGIN_CSRF" "$PROVISIONER_URL/ui/login"
curl -fsS -b "$WORK/ui.cookies" "$PROVISIONER_URL/ui" | python3 -c '
import html, re, sys
card = re.search(r"<div[^>]*id=\"slo\">.*?</div>\s*</div>", sys.stdin.read(), re.S)
print(re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", card.group(0)))).strip() if card else "no SLO card")'

say "release: data disks wiped, keys removed, host back in the pool"
REQ=$(PROVISIONER_TOKEN=$CU_TOKEN provisioner -o json requests list | json '["items"][0]["id"]')
PROVISIONER_TOKEN=$CU_TOKEN provisioner requests release "$REQ" --watch
PROVISIONER_TOKEN=$OP_TOKEN provisioner hosts list
say "done (service log: $WORK/service.log)"
