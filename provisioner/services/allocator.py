"""Allocating hosts to a request inside the caller's transaction.

The database ranks the candidates (`allocation_sql.ranked_ids`, the rule of `allocation.rank`), and
hosts are claimed in that order:

* PostgreSQL: the ranked query with `LIMIT count FOR UPDATE SKIP LOCKED` locks the best `count`
  hosts that are still available and not being claimed by a concurrent request; they are moved
  available → provisioning. Concurrent requests skip each other's hosts instead of queueing behind
  them, and only the chosen rows are locked.
* SQLite serialises writers, so a compare-and-set per host in rank order is enough.

Either way a host is never given twice: the state change is a compare-and-set on `available`.

Vagrant VMs are born for a request, so there is no row to lock: the cap on live VMs is counted
under a transaction-scoped lock. PostgreSQL: `pg_advisory_xact_lock` on a fixed key, held until the
request's transaction commits or rolls back, so concurrent requests count one after the other and
each sees the VMs the previous one created. SQLite: the request row is already written (flushed)
before the count, so the transaction holds SQLite's single write lock and no other writer can
count at the same time.
"""

from __future__ import annotations

from sqlalchemy import func, text
from sqlmodel import Session, col, select

from provisioner.core.allocation import Constraints
from provisioner.services.allocation_sql import ranked_ids
from provisioner.services.host_transitions import cas_state
from provisioner.store.models import Host

# Advisory lock key of the Vagrant VM cap (any constant unique within the database; "VMCAP").
VAGRANT_CAP_LOCK = 0x564D434150


class NotEnoughHosts(Exception):
    def __init__(self, wanted: int, matching: int) -> None:
        self.wanted = wanted
        self.matching = matching
        super().__init__(f"{wanted} wanted, {matching} available and matching")


def _available(session: Session, pool: str) -> int:
    return session.exec(select(func.count()).select_from(Host)
                        .where(Host.state == "available", Host.pool == pool)).one()


def allocate(session: Session, want: Constraints, count: int, *, tenant_id: int, request_id: int) -> list[Host]:
    dialect = session.get_bind().dialect.name
    claimed: list[int] = []
    if dialect == "postgresql":
        # Locked by us and still available: the compare-and-set below cannot lose.
        claimed = list(session.exec(ranked_ids(want, dialect).limit(count).with_for_update(skip_locked=True)).all())
        if len(claimed) == count:
            for host_id in claimed:
                cas_state(session, host_id, "available", "provisioning", tenant_id=tenant_id,
                          request_id=request_id)
    else:
        for host_id in session.exec(ranked_ids(want, dialect)).all():
            if cas_state(session, host_id, "available", "provisioning", tenant_id=tenant_id,
                         request_id=request_id):
                claimed.append(host_id)
                if len(claimed) == count:
                    break
    if len(claimed) < count:
        # Not enough matching hosts, or concurrent requests took them; the caller rolls back.
        raise NotEnoughHosts(count, _available(session, want.pool))
    by_id = {h.id: h for h in session.exec(select(Host).where(col(Host.id).in_(claimed))
                                           .execution_options(populate_existing=True)).all()}
    return [by_id[i] for i in claimed]


def create_vagrant_hosts(session: Session, count: int, *, max_vms: int, tenant_id: int, request_id: int,
                         pool: str) -> list[Host]:
    """On-demand VMs: host rows born in `provisioning`; their job creates, commissions, provisions them."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": VAGRANT_CAP_LOCK})
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
