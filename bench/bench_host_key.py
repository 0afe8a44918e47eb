"""What pinning costs a job: reading a host's SSH host key (one key exchange, paramiko) against a
real sshd on 127.0.0.1, as the worker does before each job. Prints figures; not a test."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from provisioner.services.host_keys import fetch_host_key  # noqa: E402
from tests.integration.sshd import Sshd  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        server = Sshd(Path(d) / "sshd")
        try:
            times = []
            for _ in range(args.reads):
                t0 = time.perf_counter()
                fetch_host_key("127.0.0.1", server.port)
                times.append((time.perf_counter() - t0) * 1000)
        finally:
            server.stop()
    times.sort()
    print(f"host key read, {args.reads} reads: p50 {statistics.median(times):.1f} ms, "
          f"p95 {times[int(len(times) * 0.95) - 1]:.1f} ms, min {times[0]:.1f} ms")


if __name__ == "__main__":
    main()
