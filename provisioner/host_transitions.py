"""Changing a host's state in the database: lifecycle-checked and compare-and-set, so two writers
can never both move the same host (the loser sees a 409)."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session

from provisioner.lifecycle import HostState, IllegalTransition, transition
from provisioner.models import Host
from provisioner.problems import Problem
from provisioner.timeutil import utcnow


class StateConflict(Exception):
    pass


def cas_state(session: Session, host_id: int, expected: str, target: str, **values: object) -> bool:
    """Moves the host only if it is still in `expected`; returns whether it moved."""
    transition(expected, target)
    res = session.execute(
        update(Host)
        .where(Host.id == host_id, Host.state == expected)  # type: ignore[arg-type]
        .values(state=target, updated_at=utcnow(), **values)
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


def move_host(session: Session, host: Host, target: HostState | str, **values: object) -> None:
    """API-facing: an illegal or lost transition becomes a 409 problem, never a silent change."""
    try:
        moved = cas_state(session, host.id or 0, host.state, str(target), **values)
    except IllegalTransition as exc:
        raise Problem(409, "host.illegal_transition", str(exc), current=exc.current, target=exc.target,
                      hint="GET the host to see its state; allowed moves are listed in the detail") from exc
    if not moved:
        raise Problem(409, "host.state_changed", f"host {host.name} changed state concurrently",
                      hint="GET the host and retry")
    session.refresh(host)
