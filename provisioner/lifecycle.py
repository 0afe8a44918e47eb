"""The host lifecycle: the only place that knows which state changes are legal.

enrolled → commissioning → available → provisioning → active → releasing → available,
with failed and maintenance as side states and retired as the end (a destroyed VM, a removed host).
"""

from __future__ import annotations

from enum import StrEnum


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
    S.active: frozenset({S.releasing, S.failed}),
    # A vagrant host is destroyed instead of going back to the pool.
    S.releasing: frozenset({S.available, S.failed, S.retired}),
    # A failed host may hold customer data: it is released (wiped) or looked at in maintenance.
    S.failed: frozenset({S.releasing, S.maintenance, S.commissioning, S.retired}),
    S.maintenance: frozenset({S.commissioning, S.available, S.retired}),
    S.retired: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, current: HostState, target: HostState) -> None:
        self.current = current
        self.target = target
        allowed = ", ".join(sorted(ALLOWED[current])) or "none (terminal state)"
        super().__init__(f"host cannot go from {current} to {target}; allowed from {current}: {allowed}")


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
        Exception.__init__(self, f"an operator cannot move a host from {current} to {target} by hand; "
                                 f"{target} is reachable by hand only from: {allowed_from}")


def manual_transition(current: HostState | str, target: HostState | str) -> HostState:
    cur, tgt = HostState(current), HostState(target)
    if cur not in MANUAL.get(tgt, frozenset()):
        raise IllegalManualTransition(cur, tgt)
    return transition(cur, tgt)
