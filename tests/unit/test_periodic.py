from __future__ import annotations

import threading
import time

from workers.periodic import PeriodicLoop


def test_a_failing_pass_does_not_end_the_loop() -> None:
    calls: list[int] = []
    third = threading.Event()

    def one_pass() -> None:
        calls.append(1)
        if len(calls) >= 3:
            third.set()
        raise RuntimeError("database down")

    loop = PeriodicLoop("t", 0.01, one_pass).start()
    try:
        assert third.wait(10), "the loop stopped after a failed pass"
    finally:
        loop.stop()


def test_stop_during_a_long_wait_returns_at_once_and_runs_no_pass() -> None:
    calls: list[int] = []
    loop = PeriodicLoop("t", 3600, lambda: calls.append(1)).start()
    t0 = time.monotonic()
    loop.stop()
    assert time.monotonic() - t0 < 5
    assert calls == []
