from __future__ import annotations

import itertools

import pytest

from provisioner.core.job_states import JobStatus, can_transition, is_terminal

J = JobStatus
LEGAL = {(J.queued, J.running), (J.queued, J.cancelled), (J.queued, J.failed), (J.running, J.succeeded),
         (J.running, J.failed), (J.running, J.cancelled), (J.running, J.queued)}


@pytest.mark.parametrize("cur,tgt", list(itertools.product(J, J)))
def test_every_pair(cur: JobStatus, tgt: JobStatus) -> None:
    assert can_transition(cur, tgt) == ((cur, tgt) in LEGAL)


@pytest.mark.parametrize("status,terminal", [(J.queued, False), (J.running, False), (J.succeeded, True),
                                             (J.failed, True), (J.cancelled, True)])
def test_terminal(status: JobStatus, terminal: bool) -> None:
    assert is_terminal(status) is terminal
