"""A worker being stopped (SIGTERM from systemd, Kubernetes, a deploy): it takes no new job and hands
the running ones back instead of leaving them `running` until their claim expires.

`DRAINING` is set by the process's signal handler (workers/worker_process.py). The heartbeat then
asks the running phase to stop when the phase is idempotent (running it again is safe); a phase that
is not idempotent is let finish. Either way the runner hands the job back at that point
(`workers.claim.hand_back`): queued again, the interrupted phase marked so, the doorbell rung, so
another worker resumes it after the phases it finished.
"""

from __future__ import annotations

import threading

DRAINING = threading.Event()
