"""Opening a host request: the one place it is done (customers through the API, image canaries).

In the caller's transaction: the request row, its hosts (allocated from the pool, or VMs born for
it in the `vagrant` pool), one provision job per host, and the audit entry. The caller commits;
the doorbell announces the jobs after the commit. Guardrails are judged before this is called
(`admission.admit`), so nothing here refuses on policy, only on capacity.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from provisioner.core.allocation import Constraints
from provisioner.core.errors import Conflict
from provisioner.services import audit
from provisioner.services.actor import Actor
from provisioner.services.allocator import NotEnoughHosts, allocate, create_vagrant_hosts
from provisioner.services.jobs import new_job
from provisioner.store.config import Settings
from provisioner.store.models import Host, HostRequest, Job


class CapacityInsufficient(Conflict):
    """Not enough matching hosts are available now."""

    def __init__(self, wanted: int, available: int, pool: str) -> None:
        super().__init__(
            "capacity.insufficient",
            f"{wanted} host(s) wanted in pool {pool!r} but only {available} available "
            "(before constraints are applied)",
            hint="lower count or constraints, choose another pool, or retry when hosts are released",
            wanted=wanted, available=available, pool=pool)


def open_request(session: Session, settings: Settings, actor: Actor, *, tenant_id: int, image: str | None, pool: str,
                 count: int, constraints: Constraints, params: dict[str, Any], accepted_at: datetime,
                 lease_expires_at: datetime | None = None, job_params: dict[str, Any] | None = None,
                 audit_after: dict[str, Any] | None = None) -> tuple[HostRequest, list[Job], list[Host]]:
    """Create the request, claim its hosts and queue their provision jobs; raises CapacityInsufficient
    (after rolling back) when the pool cannot serve it. Does not commit."""
    req = HostRequest(tenant_id=tenant_id, requested_by=actor.user_id or 0, image=image, count=count, pool=pool,
                      constraints={"labels": dict(constraints.labels), "min_cpus": constraints.min_cpus,
                                   "min_memory_mb": constraints.min_memory_mb, "min_disks": constraints.min_disks},
                      params=params, accepted_at=accepted_at,
                      lease_expires_at=lease_expires_at)
    session.add(req)
    session.flush()
    try:
        if pool == settings.vagrant_pool:
            hosts = create_vagrant_hosts(session, count, max_vms=settings.vagrant_max_vms, tenant_id=tenant_id,
                                         request_id=req.id or 0, pool=pool)
        else:
            hosts = allocate(session, constraints, count, tenant_id=tenant_id, request_id=req.id or 0)
    except NotEnoughHosts as exc:
        session.rollback()
        raise CapacityInsufficient(exc.wanted, exc.matching, pool) from None
    jobs = [new_job(session, "provision", h, request_id=req.id, tenant_id=tenant_id, accepted_at=accepted_at,
                    settings=settings, params=job_params) for h in hosts]
    if audit_after is not None:
        audit.record(session, actor_id=actor.user_id, actor_name=actor.name, action="request.create",
                     object_type="request", object_id=req.id, tenant_id=tenant_id,
                     after=audit_after | {"hosts": [h.name for h in hosts], "jobs": [j.id for j in jobs]},
                     request_id=actor.request_id)
    return req, jobs, hosts
