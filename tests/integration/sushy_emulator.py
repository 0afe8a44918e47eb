"""A real sushy-emulator process (sushy-tools, the Redfish BMC emulator OpenStack's CI uses) for the
tests that need no lab: its fake driver (systems held by the emulator itself, no libvirt) behind real
https with a self-signed certificate and real basic auth from a bcrypt htpasswd file. It runs from the
test extra (sushy-tools in the project's venv), or else the lab's emulator venv."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.integration.procs import free_port

LAB_VENV = Path(os.environ.get("PROVISIONER_LAB_SUSHY_VENV", "/var/lib/provisioner-lab/sushy-venv"))
VENV = Path(sys.executable).parent.parent if (Path(sys.executable).parent / "sushy-emulator").exists() else LAB_VENV
FAKE_MACS = ["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"]


def make_cert(where: Path, cn: str) -> tuple[Path, Path]:
    """A self-signed P-256 certificate and its key, as the lab makes a BMC's."""
    cert, key = where / f"{cn}.pem", where / f"{cn}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def available() -> bool:
    return (VENV / "bin" / "sushy-emulator").exists()


class SushyEmulator:
    def __init__(self, workdir: Path, *, cert_cn: str = "bmc", port: int | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.dir = workdir
        self.port = port or free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.username = "admin"
        self.password = "s3cret pass\twith spaces "  # byte for byte: never stripped
        self.cert, key = make_cert(workdir, cert_cn)
        htpasswd = workdir / "htpasswd"
        subprocess.run([str(VENV / "bin" / "python"), "-c",
                        "import sys, bcrypt; open(sys.argv[1], 'w').write(sys.argv[2] + ':' + "
                        "bcrypt.hashpw(sys.argv[3].encode(), bcrypt.gensalt(4)).decode() + '\\n')",
                        str(htpasswd), self.username, self.password], check=True)
        systems = [{"uuid": "27946b59-9e44-4fa7-8e91-f3527a1ef094", "name": "fake-bm", "power_state": "Off",
                    "external_notifier": False, "nics": [{"mac": m, "ip": "192.0.2.10"} for m in FAKE_MACS]}]
        conf = workdir / "emulator.conf"
        conf.write_text(
            f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {self.port}\n"
            f"SUSHY_EMULATOR_SSL_CERT = '{self.cert}'\nSUSHY_EMULATOR_SSL_KEY = '{key}'\n"
            f"SUSHY_EMULATOR_AUTH_FILE = '{htpasswd}'\nSUSHY_EMULATOR_FAKE_DRIVER = True\n"
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\nSUSHY_EMULATOR_FEATURE_SET = 'full'\n"
            f"SUSHY_EMULATOR_STATE_DIR = '{workdir / 'state'}'\n")
        self.log = workdir / "emulator.log"
        self._fh = open(self.log, "ab")  # noqa: SIM115  (closed in stop)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUSHY_")} | {"TMPDIR": str(workdir)}
        self.p = subprocess.Popen([str(VENV / "bin" / "sushy-emulator"), "--config", str(conf)], env=env,
                                  stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True)
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/redfish/v1/", context=ctx, timeout=2)
                break
            except OSError:
                if self.p.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("sushy-emulator did not start:\n" + self.log.read_text()[-2000:]) from None
                time.sleep(0.3)

    def held_media(self) -> list[Path]:
        """The virtual-media images the emulator downloaded and still holds: it stores each in a
        fresh directory under its TMPDIR (this workdir) and deletes the file on eject."""
        return sorted(p for d in self.dir.glob("tmp*") if d.is_dir() for p in d.iterdir())

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=10)
        self._fh.close()
