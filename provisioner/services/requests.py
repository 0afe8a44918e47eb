"""Opening a host request: the one place it is done (customers through the API, image canaries).

In the caller's transaction: the request row, its hosts (allocated from the pool, or VMs born for
it in the `vagrant` pool), one provision job per host, and the audit entry. The caller commits;
the doorbell announces the jobs after the commit. Guardrails are judged before this is called
(`admission.admit`), so nothing here refuses on policy, only on capacity, and an image request
where no host can take an image.

An image is written only by the deploy ramdisk, which only a host's BMC can boot (Redfish virtual
media): a request with an image is served by hosts enrolled by their BMC, one without by hosts
reached over SSH, whose own OS is kept (`core.allocation.matches`). Writing an image onto such a host
from inside its running OS (kexec into the ramdisk, as nixos-anywhere does) was weighed and left out:
a host whose kexec or image fails has no BMC to bring it back, so it would need hands on site, and
the canary could not prove the boot path customers get. Such a request is refused with
`image.needs_bmc` instead of being given a host that does not run the image.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from provisioner.core.allocation import Constraints
from provisioner.core.errors import Conflict
from provisioner.core.pipeline import BARE_METAL_DRIVER
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


class ImageNeedsBmc(Conflict):
    """An image request in a pool with no host enrolled by its BMC."""

    def __init__(self, image: str, pool: str, ssh_hosts: int) -> None:
        super().__init__(
            "image.needs_bmc",
            f"image {image!r} cannot be written in pool {pool!r}: no host there is enrolled by its BMC"
            + (f" ({ssh_hosts} host(s) are reached over SSH only, and keep their own OS)" if ssh_hosts else ""),
            hint="images are written by the deploy ramdisk, which the service boots through a host's BMC: ask "
                 "for a pool with hosts enrolled by their BMC (`provisioner hosts enroll ... --bmc-url`), or "
                 "leave the image out to get a host with its own OS",
            image=image, pool=pool, ssh_hosts=ssh_hosts)


def _refuse_without_bmc(session: Session, settings: Settings, image: str, pool: str) -> None:
    if pool == settings.vagrant_pool:  # VMs born from the lab's box, with no BMC in front
        raise ImageNeedsBmc(image, pool, 0)
    rows = session.exec(select(Host.driver, func.count()).where(Host.pool == pool, col(Host.state) != "retired")
                        .group_by(col(Host.driver))).all()
    by_driver = {driver: int(n) for driver, n in rows}
    if not by_driver.get(BARE_METAL_DRIVER):
        raise ImageNeedsBmc(image, pool, sum(by_driver.values()))


def open_request(session: Session, settings: Settings, actor: Actor, *, tenant_id: int, image: str | None, pool: str,
                 count: int, constraints: Constraints, params: dict[str, Any], accepted_at: datetime,
                 lease_expires_at: datetime | None = None, job_params: dict[str, Any] | None = None,
                 audit_after: dict[str, Any] | None = None) -> tuple[HostRequest, list[Job], list[Host]]:
    """Create the request, claim its hosts and queue their provision jobs; raises CapacityInsufficient
    (after rolling back) when the pool cannot serve it, ImageNeedsBmc when it can never write the
    image. Does not commit."""
    if image is not None:
        _refuse_without_bmc(session, settings, image, pool)
    constraints = replace(constraints, with_image=image is not None)
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
