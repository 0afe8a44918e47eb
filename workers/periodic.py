"""A background loop that runs one pass every N seconds until stopped.

The reconciler and the webhook dispatcher are both "do a pass, wait, repeat; a failed pass is
logged and the next one comes anyway". One class keeps the stop/join behaviour the same for both,
so a stop during a wait returns at once and a failing pass never kills the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class PeriodicLoop:
    def __init__(
        self,
        name: str,
        period_seconds: float,
        one_pass: Callable[[], object],
        *,
        join_timeout: float = 10.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.period_seconds = period_seconds
        self._one_pass = one_pass
        self._join_timeout = join_timeout
        self._log = log or logging.getLogger(f"provisioner.{name}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> PeriodicLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._join_timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.period_seconds):
            try:
                self._one_pass()
            except Exception:
                # A pass that fails (database down, a bug in one row) must not end the loop: the
                # next pass is the retry.
                self._log.exception("%s pass failed; next pass in %.1fs", self.name, self.period_seconds)
