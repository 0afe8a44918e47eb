"""`provisioner worker`: Dramatiq worker processes consuming from the shared (Redis) broker.

We run dramatiq.Worker ourselves instead of the `dramatiq` CLI to set the consumer's idle poll
interval (worker_timeout): with Redis, Dramatiq polls, and this bounds request → start latency.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading


def run_one(threads: int, poll_ms: int) -> None:
    import dramatiq

    from provisioner.store.config import get_settings
    from workers import actors  # noqa: F401  (declares the actors on the broker)
    from workers.broker import get_broker
    from workers.private_dirs import owner_dir, sweep_stale
    from workers.shutdown import DRAINING

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        DRAINING.set()  # first: the running phases see it while the same signal may reach ansible
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    settings = get_settings()
    owner_dir(settings)  # locked before the sweep, so a sibling starting alongside leaves it alone
    stale = sweep_stale(settings)
    worker = dramatiq.Worker(get_broker(), worker_threads=threads, worker_timeout=poll_ms)
    worker.start()
    if stale:
        logging.getLogger("provisioner.worker").info("removed private data dirs of dead workers: %s",
                                                     ", ".join(p.name for p in stale))
    logging.getLogger("provisioner.worker").info("worker up: %d threads, poll %d ms", threads, poll_ms)
    stop.wait()
    logging.getLogger("provisioner.worker").info("stopping: handing running jobs back")
    worker.stop(timeout=30_000)


def run_many(processes: int, threads: int, poll_ms: int) -> int:
    """A parent that starts `processes` single workers and stops them all on TERM/INT."""
    cmd = [sys.executable, "-m", "provisioner.cli", "worker", "--processes", "1", "--threads", str(threads),
           "--poll-ms", str(poll_ms)]
    children = [subprocess.Popen(cmd) for _ in range(processes)]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if any(c.poll() is not None for c in children):
            break  # one died: stop all, let the supervisor restart us (jobs are safe in the DB)
    for c in children:
        if c.poll() is None:
            c.terminate()
    return max((c.wait() or 0) for c in children)
