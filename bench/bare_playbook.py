"""The by-hand side of the benchmarks: a phase playbook run by bare `ansible-playbook` with the same
Ansible settings the service's bridge gives it (workers/ansible_bridge.py), and the lab's backup
store as the backup phases' input."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STATE = Path("/run/provisioner-lab")


def run(playbook: Path, inventory: Path, extravars: Path) -> subprocess.CompletedProcess[str]:
    """Runs it; raises with the end of its output when it fails."""
    out = subprocess.run([str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(inventory), "-e", f"@{extravars}",
                          str(playbook)], capture_output=True, text=True,
                         env={"ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_PIPELINING": "True",
                              "ANSIBLE_LIBRARY": str(ROOT / "playbooks/library"), "ANSIBLE_SHOW_CUSTOM_STATS": "True",
                              "HOME": os.environ.get("HOME", "/root"),
                              "PATH": f"{ROOT / '.venv/bin'}:/usr/bin:/bin:/usr/sbin:/sbin",
                              **({"ANSIBLE_SSH_CONTROL_PATH_DIR": os.environ["ANSIBLE_SSH_CONTROL_PATH_DIR"]}
                                 if "ANSIBLE_SSH_CONTROL_PATH_DIR" in os.environ else {})})
    if out.returncode != 0:
        raise AssertionError(f"{playbook.name} failed: {out.stdout[-3000:]} {out.stderr[-2000:]}")
    return out


def custom_stats(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The custom stats the playbook set; the default callback prints them as one line: "\tRUN: {...}"."""
    runs = [line.split("RUN: ", 1)[1] for line in out.stdout.splitlines() if line.startswith("\tRUN: ")]
    stats: dict[str, Any] = json.loads(runs[-1]) if runs else {}
    return stats


def lab_backup(prefix: str) -> dict[str, Any]:
    """A fresh repository in the lab's backup store (what the service gives a host's backup phase)."""
    store = json.loads((STATE / "backup.json").read_text())
    return {"repository": f"sftp:{store['user']}@{store['host']}:{store['base_path']}/{prefix}-{secrets.token_hex(4)}",
            "port": store["port"], "password": secrets.token_urlsafe(16),
            "sftp_private_key": Path(store["private_key"]).read_text(),
            "host_key": store.get("known_hosts_line", "").split(" ", 1)[-1]}
