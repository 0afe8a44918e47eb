"""The host lifecycle: the only place that knows which state changes are legal.

enrolled → commissioning → available → provisioning → active → releasing → available,
with failed and maintenance as side states and retired as the end (a destroyed VM, a removed host).
A reimage takes an active host back to provisioning (same tenant and request) and, when it ends,
to active again (written and handed over, or cancelled before it touched the host) or to failed.
"""

from __future__ import annotations

from enum import StrEnum

from provisioner.core.errors import Conflict
from provisioner.core.host_keys import KEY_CHANGED


class HostState(StrEnum):
    enrolled = "enrolled"
    commissioning = "commissioning"
    available = "available"
    provisioning = "provisioning"
    active = "active"
    releasing = "releasing"
    failed = "failed"
    maintenance = "maintenance"
    retired = "retired"


S = HostState

ALLOWED: dict[HostState, frozenset[HostState]] = {
    S.enrolled: frozenset({S.commissioning, S.maintenance, S.retired}),
    S.commissioning: frozenset({S.available, S.failed}),
    S.available: frozenset({S.provisioning, S.commissioning, S.maintenance, S.retired}),
    # provisioning → available: the job was cancelled before it touched the host.
    S.provisioning: frozenset({S.active, S.failed, S.available}),
    # active → provisioning: a reimage (the host keeps its tenant and request).
    S.active: frozenset({S.releasing, S.failed, S.provisioning}),
    # A vagrant host is destroyed instead of going back to the pool.
    S.releasing: frozenset({S.available, S.failed, S.retired}),
    # A failed host may hold customer data: it is released (wiped) or looked at in maintenance.
    S.failed: frozenset({S.releasing, S.maintenance, S.commissioning, S.retired}),
    S.maintenance: frozenset({S.commissioning, S.available, S.retired}),
    S.retired: frozenset(),
}


class IllegalTransition(Conflict):
    def __init__(self, current: HostState, target: HostState) -> None:
        self.current = current
        self.target = target
        allowed = ", ".join(sorted(ALLOWED[current])) or "none (terminal state)"
        super().__init__("host.illegal_transition",
                         f"host cannot go from {current} to {target}; allowed from {current}: {allowed}",
                         hint="GET the host to see its state; allowed moves are listed in the detail",
                         current=str(current), target=str(target))


def can_transition(current: HostState | str, target: HostState | str) -> bool:
    return HostState(target) in ALLOWED[HostState(current)]


def transition(current: HostState | str, target: HostState | str) -> HostState:
    cur, tgt = HostState(current), HostState(target)
    if tgt not in ALLOWED[cur]:
        raise IllegalTransition(cur, tgt)
    return tgt


# What an operator may do by hand: never pull a host out from under a running job.
MANUAL: dict[HostState, frozenset[HostState]] = {
    S.maintenance: frozenset({S.enrolled, S.available, S.failed}),
    S.available: frozenset({S.maintenance}),
    S.retired: frozenset({S.enrolled, S.available, S.failed, S.maintenance}),
}


class IllegalManualTransition(IllegalTransition):
    def __init__(self, current: HostState, target: HostState) -> None:
        self.current = current
        self.target = target
        allowed_from = ", ".join(sorted(MANUAL.get(target, frozenset()))) or "nowhere"
        Conflict.__init__(self, "host.illegal_transition",
                          f"an operator cannot move a host from {current} to {target} by hand; "
                          f"{target} is reachable by hand only from: {allowed_from}",
                          hint="GET the host to see its state; allowed moves are listed in the detail",
                          current=str(current), target=str(target))


class HostEvent(StrEnum):
    """What happened to a host when one of its jobs ended (named as Ironic's state machine does)."""

    commissioned = "commissioned"  # a commission job succeeded: the host is known and ready
    deployed = "deployed"  # a provision job succeeded: the host is handed over
    cleaned = "cleaned"  # a release job succeeded: disks erased, back to the pool
    destroyed = "destroyed"  # a release job destroyed the host (an on-demand VM)
    aborted = "aborted"  # a provision job was cancelled before it touched the host
    reimaged = "reimaged"  # a reimage job succeeded: the host runs the new image, handed back
    reimage_aborted = "reimage_aborted"  # a reimage job was cancelled before it touched the host
    failed = "failed"  # any other end: someone has to look at the host
    # The host answered with another SSH host key than the pinned one: whoever answers may not be
    # the host, so it leaves the pool (even after a compliance check, which otherwise only observes)
    # until an operator re-pins its key.
    key_changed = "key_changed"


# Where each event takes the host.
EVENT_TARGET: dict[HostEvent, HostState] = {
    HostEvent.commissioned: S.available,
    HostEvent.deployed: S.active,
    HostEvent.cleaned: S.available,
    HostEvent.destroyed: S.retired,
    HostEvent.aborted: S.available,
    HostEvent.reimaged: S.active,
    HostEvent.reimage_aborted: S.active,
    HostEvent.failed: S.failed,
    HostEvent.key_changed: S.failed,
}

# Drivers whose hosts are destroyed at release instead of going back to the pool.
EPHEMERAL_DRIVERS = frozenset({"vagrant"})


def job_end_event(kind: str, status: str, driver: str, started: bool,
                  error_code: str | None = None) -> HostEvent | None:
    """The host's event when a job of `kind` ends with `status` (None: the host is not affected).

    A reimage that started and did not succeed is `failed`: its root disk may be half written, so
    the host is never handed back as it was.

    A compliance check only observes; a commission job cancelled before it started leaves the host
    where it was."""
    if status == "failed" and error_code == KEY_CHANGED:
        return HostEvent.key_changed
    if kind == "compliance":
        return None
    if status == "succeeded":
        if kind == "commission":
            return HostEvent.commissioned
        if kind == "provision":
            return HostEvent.deployed
        if kind == "reimage":
            return HostEvent.reimaged
        if kind == "release":
            return HostEvent.destroyed if driver in EPHEMERAL_DRIVERS else HostEvent.cleaned
        return None
    if status == "cancelled" and not started:
        if kind == "provision":
            return HostEvent.aborted
        if kind == "reimage":
            return HostEvent.reimage_aborted  # back to its tenant, running the image it had
        if kind == "commission":
            return None
    return HostEvent.failed


def host_after_job(kind: str, status: str, driver: str, started: bool,
                   error_code: str | None = None) -> HostState | None:
    """Where the host goes when the job ends (None: it stays)."""
    event = job_end_event(kind, status, driver, started, error_code)
    return EVENT_TARGET[event] if event is not None else None


def manual_transition(current: HostState | str, target: HostState | str) -> HostState:
    cur, tgt = HostState(current), HostState(target)
    if cur not in MANUAL.get(tgt, frozenset()):
        raise IllegalManualTransition(cur, tgt)
    return transition(cur, tgt)
