"""Allocating hosts to a request inside the caller's transaction.

Candidates are read with FOR UPDATE SKIP LOCKED on PostgreSQL (SQLite serialises writers anyway),
the pure `allocation.choose` picks them, and each is moved available → provisioning with a
compare-and-set: a host is never given twice, also under concurrent requests.
"""

from __future__ import annotations

from sqlmodel import Session, select

from provisioner.allocation import Candidate, Constraints, choose
from provisioner.host_transitions import cas_state
from provisioner.models import Host


class NotEnoughHosts(Exception):
    def __init__(self, wanted: int, matching: int) -> None:
        self.wanted = wanted
        self.matching = matching
        super().__init__(f"{wanted} wanted, {matching} available and matching")


def allocate(session: Session, want: Constraints, count: int, *, tenant_id: int, request_id: int) -> list[Host]:
    q = select(Host).where(Host.state == "available", Host.pool == want.pool)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    rows = session.exec(q).all()
    by_id = {h.id: h for h in rows}
    picked = choose(
        (Candidate(h.id or 0, h.name, h.pool, h.labels or {}, h.hardware or {}) for h in rows), want, count
    )
    if not picked:
        raise NotEnoughHosts(count, sum(1 for h in rows if h.id is not None))
    hosts = []
    for c in picked:
        if not cas_state(session, c.id, "available", "provisioning", tenant_id=tenant_id, request_id=request_id):
            raise NotEnoughHosts(count, len(rows))
        hosts.append(by_id[c.id])
    return hosts


def create_vagrant_hosts(session: Session, count: int, *, max_vms: int, tenant_id: int, request_id: int,
                         pool: str) -> list[Host]:
    """On-demand VMs: host rows born in `provisioning`; their job creates, commissions, provisions them."""
    live = session.exec(select(Host).where(Host.driver == "vagrant", Host.state != "retired")).all()
    if len(live) + count > max_vms:
        raise NotEnoughHosts(count, max(max_vms - len(live), 0))
    hosts = []
    for i in range(count):
        h = Host(name=f"vm{request_id}-{i}", address="pending", ssh_user="vagrant", pool=pool, driver="vagrant",
                 state="provisioning", tenant_id=tenant_id, request_id=request_id)
        session.add(h)
        hosts.append(h)
    session.flush()
    return hosts
