"""A PostgreSQL cluster of the test's own (Debian's binaries, initdb into a temp dir, a free port),
so a test can stop and start it mid-job without touching the machine's shared PostgreSQL.

Every step has a timeout with a message that says what did not happen; `close()` always stops the
cluster and removes its directory (the fixture calls it even when the test failed).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.integration.procs import free_port

STEP_TIMEOUT_S = 60


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    def __init__(self) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = bindir
        self.port = free_port()
        # Outside pytest's 0700 tmp dirs: the server runs as the postgres user (initdb refuses root).
        self.root = Path(tempfile.mkdtemp(prefix="prov-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        # Server options on pg_ctl's command line (initdb -c needs PostgreSQL 16; Debian 12 has 15).
        self._opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                      "-c fsync=off")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
            self.start()
        except BaseException:
            self.close()  # no half-started cluster or temp dir left behind
            raise

    def _run(self, tool: str, *args: str) -> str:
        cmd = [str(self.bin / tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, cwd=self.root)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{tool} did not finish in {STEP_TIMEOUT_S}s:\n{self.tail()}") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip()}\n{self.tail()}")
        return proc.stdout

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._opts, "-w",
                  "-t", str(STEP_TIMEOUT_S), "start")
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as c:
                    c.execute("select 1")
                return
            except psycopg.Error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL on port {self.port} accepts no connection:\n"
                                       f"{self.tail()}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as in a failover or a restart for an upgrade."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", str(STEP_TIMEOUT_S), "stop")

    def running(self) -> bool:
        cmd = [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, timeout=STEP_TIMEOUT_S).returncode == 0

    def close(self) -> None:
        try:
            if self.data.exists() and self.running():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
