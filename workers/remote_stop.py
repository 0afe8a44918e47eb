"""Stopping a phase's work on the host itself, when the phase is cancelled or times out.

Stopping ansible on the worker (`workers/process_tree.py`) does not stop what it started on the
host: a module's command has no terminal there, so losing the connection sends it no SIGHUP; the
connection master (ControlPersist) outlives ansible anyway; `sudo` and `async` tasks put the work in
their own sessions. So every remote command of a phase run carries a tag, and on cancel or timeout
the worker kills, over SSH, every process on the host that carries it.

The tag: each play sets ``environment: {PROV_PHASE_RUN: "{{ provisioner_run_tag }}"}``. Ansible
puts that assignment inside the command it runs after `become` (``sudo ... /bin/sh -c
'PROV_PHASE_RUN=... /usr/bin/python3'``), so the module and everything it starts inherit it, as
root, daemonized or not; sudo's `env_reset` cannot drop it. (An `LC_*` variable sent by ssh would
need the host's `AcceptEnv` and is dropped by sudo exactly where the work starts.)

The kill: a connection of its own (paramiko, the pinned host key only, the phase's credentials,
nothing written to disk), then, as root, `KILL_SCRIPT` on the host's python3: every process whose
environment holds the tag, or whose command line sets it, and all their descendants; TERM first,
KILL after a grace, repeated until a scan finds none (a process forking meanwhile is caught by
the next scan).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

import paramiko

from provisioner.services.host_keys import load_private_key, pinned_client

log = logging.getLogger("provisioner.remote_stop")

TAG_VAR = "PROV_PHASE_RUN"
_TAG = re.compile(r"^[A-Za-z0-9-]{8,80}$")
CONNECT_TIMEOUT_S = 15.0
RUN_TIMEOUT_S = 60.0

# Runs on the host as root: python3 - TAG. Prints one JSON line.
KILL_SCRIPT = r"""
import json, os, re, signal, sys, time
tag = sys.argv[1].encode()
env_entry = b"PROV_PHASE_RUN=" + tag
in_cmdline = re.compile(rb"PROV_PHASE_RUN=" + re.escape(tag) + rb"(?![A-Za-z0-9-])")

def chain(pid):
    out = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out

spare = chain(os.getpid())

def scan():
    parent, tagged = {}, set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                parent[pid] = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = f.read().split(b"\0")
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except (OSError, ValueError, IndexError):
            continue
        if env_entry in env or in_cmdline.search(cmd):
            tagged.add(pid)
    children = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(tagged)
    while todo:
        pid = todo.pop()
        if pid in found or pid in spare:
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found

seen, rounds = set(), 0
left = scan()
while left and rounds < 12:
    seen |= left
    sig = signal.SIGTERM if rounds < 2 else signal.SIGKILL
    for pid in left:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    rounds += 1
    time.sleep(1.0 if rounds <= 2 else 0.3)
    left = scan()
print(json.dumps({"found": len(seen), "left": sorted(left), "rounds": rounds}))
"""


def new_tag(job_id: int) -> str:
    """A tag for one phase run: the job's id (for a person reading `ps e`) and a random part."""
    return f"job{job_id}-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class StopReport:
    found: int = 0  # processes that carried the tag (or descended from one)
    left: int = 0  # still there after the last KILL
    error: str | None = None  # the stop could not run (host unreachable, no sudo, ...)

    def summary(self, host: str) -> str:
        if self.error:
            return f"could not stop this phase's remote work on {host}: {self.error}"
        if self.left:
            return f"stopped {self.found - self.left} of {self.found} remote process(es) on {host}; {self.left} left"
        return f"stopped {self.found} remote process(es) of this phase on {host}"


@dataclass(frozen=True)
class Remote:
    """Where a phase runs over SSH and how to reach it: what its inventory says, plus the tag."""

    address: str
    port: int
    user: str
    host_key: str | None  # the pinned "TYPE BASE64"; without it nothing is sent
    tag: str
    private_key: str | None = None  # key text (an enrolled key) ...
    key_file: str | None = None  # ... or a key file on the worker (ssh_key_path)

    def __post_init__(self) -> None:
        if not _TAG.match(self.tag):
            raise ValueError(f"bad run tag {self.tag!r}")

    def stop(self) -> StopReport:
        try:
            return self._stop()
        except (paramiko.SSHException, OSError, EOFError, ValueError) as exc:
            log.warning("remote stop on %s:%s failed: %s", self.address, self.port, exc)
            return StopReport(error=str(exc) or type(exc).__name__)

    def _connect_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"hostname": self.address, "port": self.port, "username": self.user,
                                "timeout": CONNECT_TIMEOUT_S, "banner_timeout": CONNECT_TIMEOUT_S,
                                "auth_timeout": CONNECT_TIMEOUT_S}
        if self.private_key:
            args.update(pkey=load_private_key(self.private_key), allow_agent=False, look_for_keys=False)
        elif self.key_file:
            args.update(key_filename=self.key_file, allow_agent=False, look_for_keys=False)
        return args

    def _stop(self) -> StopReport:
        # The same known_hosts line the phase's ansible run is given: pinning is written in one place.
        client = pinned_client(self.address, self.port, self.host_key)
        try:
            client.connect(**self._connect_args())
            sudo = "" if self.user == "root" else "sudo -n "
            stdin, stdout, stderr = client.exec_command(f"{sudo}/usr/bin/python3 - {self.tag}",
                                                        timeout=RUN_TIMEOUT_S)
            stdin.write(KILL_SCRIPT)
            stdin.channel.shutdown_write()
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            rc = stdout.channel.recv_exit_status()
        except TimeoutError:
            raise OSError(f"no answer within {RUN_TIMEOUT_S:.0f}s") from None
        finally:
            client.close()
        lines = out.strip().splitlines()
        if rc != 0 or not lines:
            return StopReport(error=f"rc={rc}: {err.strip()[-300:]}")
        res = json.loads(lines[-1])
        return StopReport(found=int(res["found"]), left=len(res["left"]))
