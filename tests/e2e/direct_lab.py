"""Driving a lab VM with ansible-playbook directly (no service in between): what the playbook-level
e2e suites (test_playbooks_direct.py, test_compliance_playbook.py) share.

A `PlaybookHost` holds the inventory and the phases' extravars (RAID1 over the data disks, two open
ports, a restic repository of its own on the lab backup store, a customer key), runs a phase inside
the lab network namespace, refuses any run that leaks a secret into ansible's output, and returns
the phase's `prov_result` custom stats.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e import lab_known_hosts

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "vagrant" / "lab"
PLAYBOOKS = ROOT / "playbooks"
ANSIBLE_PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
STATE = Path(os.environ.get("PROVISIONER_LAB_STATE", "/run/provisioner-lab"))
DATA_DISKS = ["/dev/vdb", "/dev/vdc"]
SSH_OPTS = [*lab_known_hosts.OPTS, "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=15"]
ANSIBLE_ENV = {"ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_SHOW_CUSTOM_STATS": "True",
               "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
               "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_TIMEOUT": "60", "ANSIBLE_SSH_RETRIES": "2"}


def lab_status() -> tuple[str, list[dict], dict]:
    """-> (why the lab can't be used, or "", its hosts, the backup store); the caller skips on a reason."""
    if not LAB.exists():
        return f"{LAB} missing", [], {}
    if not ANSIBLE_PLAYBOOK.exists():
        return f"{ANSIBLE_PLAYBOOK} missing", [], {}
    try:
        proc = subprocess.run([str(LAB), "status"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"vagrant/lab status failed: {exc}", [], {}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        return f"vagrant/lab status rc={proc.returncode}: {tail}", [], {}
    try:
        hosts = json.loads(proc.stdout)
    except ValueError:
        return "vagrant/lab status printed no hosts.json", [], {}
    backup_json = STATE / "backup.json"
    if not backup_json.exists():
        return f"{backup_json} missing (lab backup store not running)", [], {}
    return "", hosts, json.loads(backup_json.read_text())


def lab_host_or_skip(name: str) -> tuple[dict, dict]:
    """-> (the lab host called `name`, the backup store); skips the test, saying why, when either is missing.

    e2e.sh fails a run with any skip unless skipping was asked for, so a skip here never passes CI silently.
    """
    reason, hosts, backup = lab_status()
    if reason:
        pytest.skip(f"lab not available ({reason}); start it with 'vagrant/lab up'")
    host = next((h for h in hosts if h["name"] == name), None)
    if host is None:
        pytest.skip(f"lab host {name} not in vagrant/lab status output")
    return host, backup


class PlaybookHost:
    def __init__(self, host: dict, backup: dict, workdir: Path, name: str, job_prefix: str = "e2e") -> None:
        self.host = host
        lab_known_hosts.ensure(host)
        self.backup = backup
        self.workdir = workdir
        self.inventory = workdir / "inventory.json"
        self.inventory.write_text(json.dumps({"all": {"hosts": {"target": {
            "ansible_host": host["address"],
            "ansible_port": host["port"],
            "ansible_user": host["user"],
            "ansible_ssh_private_key_file": host["private_key"],
            "ansible_ssh_common_args": " ".join(lab_known_hosts.OPTS),
            "ansible_python_interpreter": "/usr/bin/python3",
        }}}}))
        self.customer_key = workdir / "customer_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-customer", "-f",
                        str(self.customer_key)], check=True)
        self.repo_dir = f"{backup['base_path'].rstrip('/')}/e2e-{name}-{uuid.uuid4().hex[:8]}"
        password = secrets.token_urlsafe(24)
        sftp_key = Path(backup["private_key"]).read_text()
        self.extravars = {
            "provisioner_job_id": f"{job_prefix}-{uuid.uuid4().hex[:8]}",
            "provisioner_host_name": name,
            "provisioner_data_disks": DATA_DISKS,
            "provisioner_raid_level": "1",
            "provisioner_raid_device": "/dev/md0",
            "provisioner_firewall_ports": [{"port": 8080, "proto": "tcp", "sources": ["10.0.0.0/8"]},
                                    {"port": 443, "proto": "tcp", "sources": []}],
            "provisioner_backup": {
                "repository": f"sftp:{backup['user']}@{backup['host']}:{self.repo_dir}",
                "port": backup["port"], "password": password, "sftp_private_key": sftp_key,
                "host_key": " ".join(backup.get("known_hosts_line", "").split()[1:]),
                "paths": ["/etc", "/srv/data"], "schedule": "daily", "retention_days": 7,
            },
            "provisioner_customer_user": "customer",
            "provisioner_customer_ssh_pubkey": (workdir / "customer_key.pub").read_text().strip(),
        }
        self.varsfile = workdir / "extravars.json"
        fd = os.open(self.varsfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.extravars, fh)
        self.secrets = [password, sftp_key.strip().splitlines()[1]]

    def run(self, phase: str, label: str, extra: dict | None = None) -> tuple[dict, str, float]:
        """One playbook run -> (prov_result, ansible output, seconds); fails on rc != 0 or a leak."""
        cmd = [str(LAB), "exec", "--", str(ANSIBLE_PLAYBOOK), "-i", str(self.inventory),
               str(PLAYBOOKS / f"{phase}.yml"), "-e", f"@{self.varsfile}"]
        if extra:
            cmd += ["-e", json.dumps(extra)]
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **ANSIBLE_ENV), timeout=800)
        seconds = round(time.monotonic() - started, 1)
        out = proc.stdout + proc.stderr
        (self.workdir / f"{label}.log").write_text(out)
        for s in self.secrets:
            assert s not in out, f"{label}: a secret leaked into the ansible output"
        assert proc.returncode == 0, f"{label} failed (rc={proc.returncode}):\n{out[-6000:]}"
        stats = re.search(r"^\s*RUN: (\{.*\})\s*$", out, re.M)
        assert stats, f"{label}: no custom stats in output:\n{out[-3000:]}"
        return json.loads(stats.group(1))["prov_result"], out, seconds

    def ssh(self, command: str, user: str | None = None, key: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(LAB), "exec", "--", "ssh", *SSH_OPTS, "-i", key or self.host["private_key"], "-p",
               str(self.host["port"]), f"{user or self.host['user']}@{self.host['address']}", command]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, f"ssh {command!r} rc={proc.returncode}: {proc.stderr}"
        return proc

    def remove_repository(self) -> None:
        """Our own restic repository on the (local) lab backup store, and nothing outside it."""
        base = self.backup["base_path"].rstrip("/") + "/"
        if self.repo_dir.startswith(base) and os.path.isdir(self.repo_dir):
            shutil.rmtree(self.repo_dir, ignore_errors=True)
