"""The lab VMs' SSH host keys for the e2e suite's own ssh and ansible runs: strict checking against
a known_hosts file, never StrictHostKeyChecking=no.

A key comes from the lab's record when it publishes one (`host_key`, read by vagrant/lab when the VM
was created), from the service's pin for a VM the service created, or else is read once with
ssh-keyscan on the lab's own network inside its namespace (first use, on a network only the lab's
VMs live on). After that a changed key fails the test's ssh like it fails the service's jobs.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from provisioner.core.host_keys import canonical, known_hosts_line

_DIR = Path(tempfile.mkdtemp(prefix="prov-e2e-known-hosts-"))
PATH = _DIR / "known_hosts"
PATH.touch()
_keys: dict[tuple[str, int], str] = {}

OPTS = ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={PATH}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "UpdateHostKeys=no"]


def pin(address: str, port: int, key: str) -> None:
    """Trust exactly this key for address:port from now on (replaces an earlier one)."""
    _keys[(address, int(port))] = canonical(key)
    PATH.write_text("".join(known_hosts_line(a, p, k) for (a, p), k in sorted(_keys.items())))


def scan(address: str, port: int) -> str:
    out = subprocess.run(["ssh-keyscan", "-T", "15", "-t", "ed25519", "-p", str(port), address],
                         capture_output=True, text=True, timeout=60).stdout
    lines = [ln.split(None, 1)[1] for ln in out.splitlines() if ln and not ln.startswith("#")]
    if not lines:
        raise AssertionError(f"ssh-keyscan read no ed25519 host key from {address}:{port}")
    return lines[0]


def ensure(rec: dict[str, Any]) -> str:
    """The pinned key of a lab record's VM, pinning it on first use."""
    where = (rec["address"], int(rec["port"]))
    if where not in _keys:
        pin(*where, rec.get("host_key") or scan(*where))
    return _keys[where]
