"""A pytest plugin for timing the test suite: per test, its wall time and the CPU spent by pytest and by
the child processes it waited for (ansible-playbook, service processes), appended as JSON lines to
$CPUTIME_OUT. CPU is the steadier figure on a shared machine.

    CPUTIME_OUT=tests.jsonl PYTHONPATH=bench .venv/bin/pytest -p pytest_cputime tests/integration/...
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from typing import Any

import pytest


def _cpu() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[Any]:
    t0, (me0, kids0) = time.time(), _cpu()
    yield
    t1, (me1, kids1) = time.time(), _cpu()
    with open(os.environ["CPUTIME_OUT"], "a") as f:
        f.write(json.dumps({"id": item.nodeid, "wall": round(t1 - t0, 2), "cpu_self": round(me1 - me0, 2),
                            "cpu_children": round(kids1 - kids0, 2)}) + "\n")
