"""A real OpenSSH server on 127.0.0.1 for the host key tests: its own host key (which a test may
replace, as a reinstalled or impersonated host would), root login with a test key only."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil

from tests.integration.procs import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


class Sshd:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = root / "ssh_host_ed25519_key"
        self.client_key = root / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "provisioner-test", "-f",
                        str(self.client_key)], check=True)
        (root / "authorized_keys").write_bytes((root / "client_key.pub").read_bytes())
        self.new_host_key()
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "LogLevel ERROR\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def new_host_key(self) -> None:
        for p in (self.host_key, self.host_key.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(self.host_key)],
                       check=True)

    @property
    def public_host_key(self) -> str:
        return Path(f"{self.host_key}.pub").read_text()

    def fingerprint(self) -> str:
        """What OpenSSH itself says the fingerprint is."""
        out = subprocess.run(["ssh-keygen", "-lf", f"{self.host_key}.pub"], check=True, capture_output=True,
                             text=True).stdout
        return out.split()[1]

    def start(self) -> None:
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
                                     stderr=open(self.root / "sshd.log", "ab"))  # noqa: SIM115
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {(self.root / 'sshd.log').read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server and its connections, as a reboot would (each connection's sshd is its
        own session, so the listener's process group is not enough)."""
        if self.proc is not None and self.proc.poll() is None:
            sessions = psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.terminate()
            self.proc.wait(10)
            for child in sessions:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            psutil.wait_procs(sessions, timeout=10)
        self.proc = None

    def change_host_key(self) -> None:
        """The machine at this address now holds another host key (reinstalled, or someone else
        answering in its place): old connections are gone, new ones meet the new key."""
        self.stop()
        self.new_host_key()
        self.start()

    def private_key(self) -> str:
        return self.client_key.read_bytes().decode()
