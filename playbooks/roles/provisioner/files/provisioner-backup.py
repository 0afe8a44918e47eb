#!/usr/bin/python3
"""provisioner-backup: run by provisioner-backup.service (installed by the provisioner backup phase).

restic backup of the policy paths into the provisioner repository, then
`forget --keep-within <retention>` for this host's provisioner snapshots (prune at most weekly).
Writes the outcome to /var/lib/provisioner/backup-last.json and prints it.
"""
import datetime
import json
import os
import socket
import subprocess
import sys
import time

CONF = "/etc/provisioner/backup/backup.json"
STATE = "/var/lib/provisioner/backup-last.json"
RESTIC = "/usr/local/sbin/provisioner-restic"


def now():
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def save(state):
    os.makedirs(os.path.dirname(STATE), exist_ok=True)
    tmp = STATE + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh, indent=1, sort_keys=True)
    os.replace(tmp, STATE)


def main():
    with open(CONF) as fh:
        conf = json.load(fh)
    try:
        with open(STATE) as fh:
            previous = json.load(fh)
    except (OSError, ValueError):
        previous = {}
    host = conf.get("host") or socket.gethostname()
    tag = conf.get("tag", "provisioner")
    paths = [p for p in conf["paths"] if os.path.exists(p)]
    skipped = [p for p in conf["paths"] if not os.path.exists(p)]
    started = time.time()
    state = {"ok": False, "started_at": now(), "paths": paths, "skipped_paths": skipped, "host": host,
             "last_prune_at": previous.get("last_prune_at")}
    if not paths:
        state["error"] = "none of the backup paths exist: %s" % conf["paths"]
        save(state)
        print(state["error"], file=sys.stderr)
        return 1
    cmd = [RESTIC, "backup", "--json", "--tag", tag, "--host", host]
    for ex in conf.get("exclude", []):
        cmd += ["--exclude", ex]
    proc = subprocess.run(cmd + paths, capture_output=True, text=True)
    summary = None
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("message_type") == "summary":
            summary = msg
    # exit code 3: snapshot written but some source files could not be read
    if proc.returncode not in (0, 3) or not summary or not summary.get("snapshot_id"):
        state["error"] = "restic backup failed (rc=%d): %s" % (proc.returncode, proc.stderr.strip()[-2000:])
        save(state)
        print(state["error"], file=sys.stderr)
        return 1
    state.update(snapshot_id=summary["snapshot_id"], incomplete=proc.returncode == 3,
                 files_new=summary.get("files_new"), files_changed=summary.get("files_changed"),
                 data_added=summary.get("data_added"), total_files=summary.get("total_files_processed"),
                 total_bytes=summary.get("total_bytes_processed"))
    forget = [RESTIC, "forget", "--tag", tag, "--host", host, "--keep-within", "%dd" % int(conf.get("retention_days", 7))]
    last_prune = previous.get("last_prune_at")
    prune_due = conf.get("prune", True) and (
        not last_prune or time.time() - datetime.datetime.fromisoformat(last_prune).timestamp() > 7 * 86400)
    if prune_due:
        forget.append("--prune")
    proc = subprocess.run(forget, capture_output=True, text=True)
    state["forget_ok"] = proc.returncode == 0
    if proc.returncode != 0:
        state["forget_error"] = proc.stderr.strip()[-2000:]
    elif prune_due:
        state["last_prune_at"] = now()
    state.update(ok=True, finished_at=now(), seconds=round(time.time() - started, 1))
    save(state)
    print(json.dumps(state, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
