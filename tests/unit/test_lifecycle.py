"""Every (from, to) pair of host states: legal ones pass, all others raise with a clear message."""

from __future__ import annotations

import itertools

import pytest

from provisioner.core.errors import Conflict
from provisioner.core.lifecycle import (
    ALLOWED,
    EVENT_TARGET,
    HostEvent,
    HostState,
    IllegalTransition,
    can_transition,
    host_after_job,
    job_end_event,
    manual_transition,
    transition,
)

S = HostState
LEGAL = {
    (S.enrolled, S.commissioning), (S.enrolled, S.maintenance), (S.enrolled, S.retired),
    (S.commissioning, S.available), (S.commissioning, S.failed),
    (S.available, S.provisioning), (S.available, S.commissioning), (S.available, S.maintenance),
    (S.available, S.retired),
    (S.provisioning, S.active), (S.provisioning, S.failed), (S.provisioning, S.available),
    (S.active, S.releasing), (S.active, S.failed), (S.active, S.provisioning),  # the last: a reimage
    (S.releasing, S.available), (S.releasing, S.failed), (S.releasing, S.retired),
    (S.failed, S.releasing), (S.failed, S.maintenance), (S.failed, S.commissioning), (S.failed, S.retired),
    (S.maintenance, S.commissioning), (S.maintenance, S.available), (S.maintenance, S.retired),
}


@pytest.mark.parametrize("cur,tgt", list(itertools.product(S, S)))
def test_every_pair(cur: HostState, tgt: HostState) -> None:
    if (cur, tgt) in LEGAL:
        assert can_transition(cur, tgt)
        assert transition(cur, tgt) is tgt
    else:
        assert not can_transition(cur, tgt)
        with pytest.raises(IllegalTransition) as exc:
            transition(cur, tgt)
        assert f"from {cur} to {tgt}" in str(exc.value)


def test_table_is_exactly_the_documented_one() -> None:
    assert {(a, b) for a, bs in ALLOWED.items() for b in bs} == LEGAL


def test_happy_path_cycle() -> None:
    state = S.enrolled
    for nxt in (S.commissioning, S.available, S.provisioning, S.active, S.releasing, S.available):
        state = transition(state, nxt)
    assert state is S.available


def test_reimage_cycle() -> None:
    """An active host is reimaged through provisioning and comes back active (a job's end moves it)."""
    state = transition(S.active, S.provisioning)
    assert transition(state, host_after_job("reimage", "succeeded", "redfish", True) or S.failed) is S.active
    assert host_after_job("reimage", "cancelled", "redfish", False) is S.active
    assert host_after_job("reimage", "failed", "redfish", True) is S.failed


def test_retired_is_terminal_and_says_so() -> None:
    with pytest.raises(IllegalTransition, match="none \\(terminal state\\)"):
        transition(S.retired, S.available)


def test_unknown_state_is_rejected() -> None:
    with pytest.raises(ValueError):
        transition("enrolled", "flying")


MANUAL_OK = {(S.enrolled, S.maintenance), (S.available, S.maintenance), (S.failed, S.maintenance),
             (S.maintenance, S.available), (S.enrolled, S.retired), (S.available, S.retired),
             (S.failed, S.retired), (S.maintenance, S.retired)}


@pytest.mark.parametrize("cur,tgt", list(itertools.product(S, [S.maintenance, S.available, S.retired])))
def test_manual_moves(cur: HostState, tgt: HostState) -> None:
    if (cur, tgt) in MANUAL_OK:
        assert manual_transition(cur, tgt) is tgt
    else:
        with pytest.raises(IllegalTransition, match="by hand"):
            manual_transition(cur, tgt)


# Where a host goes when a job ends: (kind, status, driver, started) -> named event. Written out in
# full so a change of the rule is a change of this table.
E = HostEvent
JOB_END = {
    ("commission", "succeeded", "static", True): E.commissioned,
    ("provision", "succeeded", "static", True): E.deployed,
    ("provision", "succeeded", "vagrant", True): E.deployed,
    ("release", "succeeded", "static", True): E.cleaned,
    ("release", "succeeded", "vagrant", True): E.destroyed,
    ("provision", "cancelled", "static", False): E.aborted,
    ("provision", "cancelled", "static", True): E.failed,  # it may have touched the disks
    ("commission", "cancelled", "static", False): None,
    ("commission", "cancelled", "static", True): E.failed,
    ("commission", "failed", "static", True): E.failed,
    ("provision", "failed", "static", True): E.failed,
    ("provision", "failed", "static", False): E.failed,  # e.g. claimed, then the host vanished
    ("release", "failed", "static", True): E.failed,  # a host that was not erased never returns
    ("release", "cancelled", "vagrant", True): E.failed,
    # A reimage: written and handed back, or cancelled before it touched the host: active again;
    # any other end may have left a half-written root disk.
    ("reimage", "succeeded", "redfish", True): E.reimaged,
    ("reimage", "cancelled", "redfish", False): E.reimage_aborted,
    ("reimage", "cancelled", "redfish", True): E.failed,
    ("reimage", "failed", "redfish", True): E.failed,
    ("reimage", "failed", "redfish", False): E.failed,
    ("compliance", "succeeded", "static", True): None,  # a check only observes
    ("compliance", "failed", "static", True): None,
}


# Where each event takes the host, written out (not read back from the code under test).
TARGET = {E.commissioned: S.available, E.deployed: S.active, E.cleaned: S.available, E.destroyed: S.retired,
          E.aborted: S.available, E.reimaged: S.active, E.reimage_aborted: S.active, E.failed: S.failed,
          E.key_changed: S.failed}

# A changed host key takes the host out of the pool whatever the job was, even a check.
KEY_CHANGED_END = {
    ("commission", "failed", "static", True): E.key_changed,
    ("provision", "failed", "static", True): E.key_changed,
    ("reimage", "failed", "redfish", True): E.key_changed,
    ("release", "failed", "vagrant", True): E.key_changed,
    ("compliance", "failed", "static", True): E.key_changed,
}


@pytest.mark.parametrize(("key", "event"), sorted(KEY_CHANGED_END.items(), key=str))
def test_a_changed_host_key_ends_in_key_changed(key: tuple[str, str, str, bool], event: HostEvent) -> None:
    assert job_end_event(*key, "host.key_changed") == event
    assert host_after_job(*key, "host.key_changed") == S.failed
    assert job_end_event(*key, "phase_failed") != event


@pytest.mark.parametrize(("key", "event"), sorted(JOB_END.items(), key=str))
def test_job_end_events(key: tuple[str, str, str, bool], event: HostEvent | None) -> None:
    assert job_end_event(*key) == event
    assert host_after_job(*key) == (TARGET[event] if event is not None else None)


def test_every_event_has_a_target_the_lifecycle_reaches() -> None:
    assert dict(EVENT_TARGET) == TARGET
    # Each target is reachable from the state a host is in while such a job runs.
    running_state = {E.commissioned: S.commissioning, E.deployed: S.provisioning, E.cleaned: S.releasing,
                     E.destroyed: S.releasing, E.aborted: S.provisioning, E.reimaged: S.provisioning,
                     E.reimage_aborted: S.provisioning}
    for event, state in running_state.items():
        assert can_transition(state, EVENT_TARGET[event]), event
    for state in (S.commissioning, S.provisioning, S.releasing):
        assert can_transition(state, EVENT_TARGET[E.failed])
    for state in (S.commissioning, S.provisioning, S.releasing, S.active):
        assert can_transition(state, EVENT_TARGET[E.key_changed])


def test_illegal_transition_is_a_domain_conflict_with_a_hint() -> None:
    with pytest.raises(IllegalTransition) as exc:
        transition(S.retired, S.available)
    assert isinstance(exc.value, Conflict) and exc.value.code == "host.illegal_transition" and exc.value.hint
    assert exc.value.extra == {"current": "retired", "target": "available"}
