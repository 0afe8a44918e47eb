"""Reimaging a request's hosts: POST /v1/requests/{id}/reimage and `provisioner requests reimage`.

A reimage writes the hosts of an active (ready) request again with another catalogue image: the
bare-metal deploy runs again (`core/pipeline.py`, job kind ``reimage``), then RAID, firewall,
backups, a restore test and handover inside the new OS.

Decisions
---------
* Which hosts: every host of the request (a request of count > 1 is reimaged as a whole, so its
  hosts keep running one image), or only ``host_id`` when given (one host of several, e.g. to try a
  new version on one first). Every chosen host must be active and enrolled by its BMC (driver
  ``redfish``): only a BMC can boot the deploy ramdisk that writes the root disk; a host reached
  only over SSH is refused with ``host.reimage_needs_bmc``.
* The request's image becomes the new one when the reimage is accepted, audited with before and
  after (``request.reimage``). The image phase reads the request's image, so it writes the new one
  with no second source of truth, and compliance checks, the review and GET /v1/requests name the
  image the hosts are being written with. A reimage whose jobs were all cancelled before any
  started puts the previous name back (``services/settle.py``): nothing was written.
* The image passes the same checks as a new request's (``imaging.catalogue.check_requestable``:
  flagged, retired, deprecated, a candidate for anyone but the imaging team, no stored bytes); a
  name outside the catalogue is ``image.unknown`` with the names the caller can request.
* ``keep_data`` (default true) goes on each job's params; the runner gives the playbooks
  ``prov_keep_data``: the ramdisk's wipe then wipes only the root disk and RAID assembles the
  existing array (never creates one) and keeps its filesystem.
* States: the hosts go active → provisioning (same tenant and request, lease unchanged) and the
  request ready → reimaging; when the jobs end the hosts are active again (or failed) and the
  request ready (or failed when a host failed). A reimaging request cannot be released until its
  jobs end (cancel them first), as a provisioning one.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from provisioner.core.errors import Conflict, Invalid
from provisioner.core.guardrails import allowed_channels
from provisioner.core.pipeline import BARE_METAL_DRIVER
from provisioner.core.timeutil import utcnow
from provisioner.imaging.catalogue import check_requestable, image_by_name
from provisioner.services import audit
from provisioner.services.actor import Actor
from provisioner.services.admission import load_policy
from provisioner.services.host_transitions import StateChanged, cas_state
from provisioner.services.jobs import new_job
from provisioner.store.models import Host, HostRequest

DRIVER = BARE_METAL_DRIVER
REIMAGEABLE = "ready"
IMAGES_HINT = "GET /v1/images lists the images you can request"


class NotReimageable(Conflict):
    def __init__(self, req: HostRequest) -> None:
        why = {"provisioning": "its hosts are still being provisioned",
               "reimaging": "a reimage of it is already running",
               "failed": "it failed: release it and request again"}.get(req.status, "it is released or releasing")
        super().__init__("request.not_active", f"request {req.id} is {req.status}, not ready: {why}",
                         hint="only a ready request (its hosts handed over) can be reimaged; GET the request "
                              "for its status and jobs", request_status=req.status)


def check_image(session: Session, name: str, role: str, pool: str) -> None:
    """Raise unless `role` may have hosts of `pool` written with catalogue image `name`: the checks of
    a new request's image (the catalogue's, then the policy's channels for the role and pool)."""
    channels = allowed_channels(role, pool, load_policy(session))
    refusal = check_requestable(session, name, role, channels)
    if refusal is not None:
        raise refusal
    img = image_by_name(session, name)
    assert img is not None, "check_requestable refuses a name outside the catalogue"
    if img.channel not in channels:
        raise Invalid("image.channel_not_allowed", f"role {role!r} may not deploy image {name!r} from channel "
                      f"{img.channel!r} on pool {pool!r}; allowed: {sorted(channels)}",
                      hint=f"pick an image from {sorted(channels)}; {IMAGES_HINT}")


def _hosts(session: Session, req: HostRequest, host_id: int | None) -> list[Host]:
    hosts = list(session.exec(select(Host).where(Host.request_id == req.id).order_by(col(Host.id))).all())
    if host_id is not None:
        hosts = [h for h in hosts if h.id == host_id]
        if not hosts:
            raise Invalid("request.host_not_in_request", f"host {host_id} is not a host of request {req.id}",
                          hint="leave host_id out to reimage every host of the request; GET the request for "
                               "its host_ids", host_id=host_id)
    if not hosts:
        raise Conflict("request.no_hosts", f"request {req.id} holds no host to reimage",
                       hint="GET the request for its hosts")
    for h in hosts:
        if h.driver != DRIVER:
            raise Conflict("host.reimage_needs_bmc",
                           f"host {h.name} was enrolled over SSH (driver {h.driver}), not by its BMC: only a BMC "
                           "can boot the deploy ramdisk that writes its root disk",
                           hint="release the request and request a host enrolled by its BMC (an operator "
                                "enrolls one with POST /v1/hosts and a bmc block)", host_id=h.id, driver=h.driver)
        if h.state != "active":
            raise Conflict("host.not_active", f"host {h.name} is {h.state}, not active",
                           hint="only handed-over hosts are reimaged; a failed host is released",
                           host_id=h.id, state=h.state)
    return hosts


def reimage_request(session: Session, req: HostRequest, principal: Actor, *, image: str, keep_data: bool = True,
                    host_id: int | None = None) -> list[int]:
    """Start reimaging `req`'s hosts in the caller's transaction; returns the new job ids.

    Nothing is written when it refuses (the caller does not commit). Does not commit."""
    if req.status != REIMAGEABLE:
        raise NotReimageable(req)
    check_image(session, image, str(principal.role), req.pool)
    hosts = _hosts(session, req, host_id)
    before = {"status": req.status, "image": req.image}
    # Compare-and-set: of two concurrent reimages (or a reimage and a release) one wins.
    res = session.exec(update(HostRequest).where(col(HostRequest.id) == req.id, col(HostRequest.status) == REIMAGEABLE)
                       .values(status="reimaging", image=image))
    if res.rowcount != 1:
        session.rollback()
        session.refresh(req)
        raise NotReimageable(req)
    now = utcnow()
    # One round's jobs share it: settle knows which jobs a cancelled reimage consisted of.
    params: dict[str, Any] = {"image": image, "keep_data": keep_data, "previous_image": before["image"],
                              "round": uuid.uuid4().hex[:16]}
    job_ids: list[int] = []
    for h in hosts:
        if not cas_state(session, h.id or 0, "active", "provisioning"):
            session.rollback()
            raise StateChanged(h.name)
        job_ids.append(new_job(session, "reimage", h, request_id=req.id, tenant_id=req.tenant_id, accepted_at=now,
                               params=params).id or 0)
    session.refresh(req)
    audit.record(session, actor_id=principal.user_id, actor_name=principal.name, action="request.reimage",
                 object_type="request", object_id=req.id, tenant_id=req.tenant_id, before=before,
                 after={"status": req.status, "image": image, "keep_data": keep_data,
                        "hosts": [h.id for h in hosts], "jobs": job_ids},
                 request_id=principal.request_id)
    return job_ids
