"""Changing a host's state in the database: lifecycle-checked and compare-and-set, so two writers
can never both move the same host (the loser sees a 409)."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col

from provisioner.core.errors import Conflict
from provisioner.core.lifecycle import HostState, transition
from provisioner.core.timeutil import utcnow
from provisioner.store.models import Host


class StateChanged(Conflict):
    """Another writer moved the host first."""

    def __init__(self, name: str) -> None:
        super().__init__("host.state_changed", f"host {name} changed state concurrently",
                         hint="GET the host and retry")


class HostRetired(Conflict):
    """A retired host is out of the service for good: nothing is done to it any more."""

    def __init__(self, name: str) -> None:
        super().__init__("host.retired", f"host {name} is retired", hint="enroll the machine again instead")


def refuse_retired(host: Host) -> None:
    if host.state == HostState.retired:
        raise HostRetired(host.name)


def cas_state(session: Session, host_id: int, expected: str, target: str, **values: object) -> bool:
    """Moves the host only if it is still in `expected`; returns whether it moved."""
    transition(expected, target)
    res = session.exec(
        update(Host)
        .where(col(Host.id) == host_id, col(Host.state) == expected)
        .values(state=target, updated_at=utcnow(), **values)
    )
    return res.rowcount == 1


def move_host(session: Session, host: Host, target: HostState | str, **values: object) -> None:
    """An illegal move raises IllegalTransition, a lost race StateChanged: never a silent change."""
    if not cas_state(session, host.id or 0, host.state, str(target), **values):
        raise StateChanged(host.name)
    session.refresh(host)
