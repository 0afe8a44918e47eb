"""Lease expiry: warn before a request's lease ends, release its hosts when it has ended.

`lease_actions` is the pure decision; `expire_leases(settings)` is one periodic pass
(meant to run from the reconciler loop) that applies it:

* warning: a request whose lease ends within `settings.lease_warning_minutes` (default 60 while
  the Settings field does not exist) gets ONE "lease.warning" audit entry per expiry time (an
  extension moves the expiry, so the new expiry is warned about again) and a log warning;
* expiry: a ready or failed request whose lease has ended is released exactly like
  POST /v1/requests/{id}/release (`provisioner.services.release.release_request_hosts`), audited as
  "lease.expired" by actor "lease-expiry". A request still provisioning (or reimaging) is left alone until its job
  ends (the next pass releases it); releasing/released requests are done already.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlmodel import Session, col, select

from provisioner.core.timeutil import as_utc, iso, utcnow
from provisioner.services import audit, webhooks
from provisioner.services.release import RELEASABLE, NotReleasable, release_request_hosts
from provisioner.store.config import Settings
from provisioner.store.db import get_engine
from provisioner.store.models import AuditEntry, HostRequest

log = logging.getLogger("provisioner.leases")

ACTOR = "lease-expiry"
DEFAULT_WARNING_MINUTES = 60.0
LIVE = ("provisioning", "reimaging", "ready", "failed")
BATCH = 500


@dataclass(frozen=True)
class Lease:
    request_id: int
    status: str
    expires_at: datetime


def lease_actions(leases: Iterable[Lease], warned: set[tuple[int, str]], now: datetime, warn_before: timedelta,
                  ) -> tuple[list[int], list[int]]:
    """(request ids to release, request ids to warn). Pure.

    `warned` holds (request_id, iso(expires_at)) pairs already warned about. Expired = expires_at <= now
    (a lease ending exactly now has ended). Only ready/failed requests are released; a request is
    warned at most once per expiry time and only while its lease is still running.
    """
    now = as_utc(now)
    release: list[int] = []
    warn: list[int] = []
    for lease in leases:
        expires = as_utc(lease.expires_at)
        if expires <= now:
            if lease.status in RELEASABLE:
                release.append(lease.request_id)
        elif (lease.status in LIVE and expires - now <= warn_before
              and (lease.request_id, iso(expires)) not in warned):
            warn.append(lease.request_id)
    return release, warn


def warning_minutes(settings: Settings) -> float:
    return float(getattr(settings, "lease_warning_minutes", DEFAULT_WARNING_MINUTES))


def expire_leases(settings: Settings, *, now: datetime | None = None) -> dict[str, int]:
    """One pass: warn about leases ending soon, release expired requests. Returns counts."""
    now = as_utc(now or utcnow())
    warn_before = timedelta(minutes=warning_minutes(settings))
    counts = {"warned": 0, "released": 0}
    with Session(get_engine(settings), expire_on_commit=False) as s:
        rows = s.exec(
            select(HostRequest.id, HostRequest.status, HostRequest.lease_expires_at)
            .where(col(HostRequest.lease_expires_at).is_not(None),
                   col(HostRequest.lease_expires_at) <= now + warn_before,
                   col(HostRequest.status).in_(LIVE))
            .order_by(col(HostRequest.lease_expires_at)).limit(BATCH)
        ).all()
        # The query keeps only requests with a lease, so `exp` is never None.
        leases = [Lease(rid or 0, status, cast(datetime, exp)) for rid, status, exp in rows]
        if not leases:
            return counts
        warned: set[tuple[int, str]] = set()
        for object_id, after in s.exec(
                select(AuditEntry.object_id, AuditEntry.after).where(
                    AuditEntry.action == "lease.warning", AuditEntry.object_type == "request",
                    col(AuditEntry.object_id).in_([str(lease.request_id) for lease in leases]))):
            if object_id and after and after.get("lease_expires_at"):
                warned.add((int(object_id), after["lease_expires_at"]))
        to_release, to_warn = lease_actions(leases, warned, now, warn_before)
        by_id = {lease.request_id: lease for lease in leases}

        if to_warn:
            for rid in to_warn:
                lease = by_id[rid]
                left = as_utc(lease.expires_at) - now
                req = s.get(HostRequest, rid)
                audit.record(s, actor_id=None, actor_name=ACTOR, action="lease.warning", object_type="request",
                             object_id=rid, tenant_id=req.tenant_id if req else None,
                             after={"lease_expires_at": iso(lease.expires_at),
                                    "minutes_left": round(left.total_seconds() / 60, 1),
                                    "hint": f"extend with POST /v1/requests/{rid}/extend or release it"})
                if req is not None:
                    webhooks.emit(s, "lease.warning", {
                        "request_id": rid, "lease_expires_at": iso(lease.expires_at),
                        "minutes_left": round(left.total_seconds() / 60, 1)}, tenant_id=req.tenant_id)
                log.warning("lease of request %s ends at %s (in %.0f min)", rid, iso(lease.expires_at),
                            left.total_seconds() / 60)
            s.commit()
            counts["warned"] = len(to_warn)

        for rid in to_release:
            req = s.exec(select(HostRequest).where(HostRequest.id == rid)
                         .execution_options(populate_existing=True)).first()
            # Re-check on fresh data: it may have been extended or released since the select.
            if req is None or req.lease_expires_at is None or as_utc(req.lease_expires_at) > now:
                continue
            expired_at = iso(req.lease_expires_at)
            try:
                job_ids = release_request_hosts(s, req, actor_id=None, actor_name=ACTOR, action="lease.expired",
                                                extra={"reason": f"lease expired at {expired_at}",
                                                       "lease_expires_at": expired_at})
            except NotReleasable:
                s.rollback()
                continue
            webhooks.emit(s, "lease.expired", {"request_id": rid, "lease_expires_at": expired_at,
                                               "release_job_ids": job_ids}, tenant_id=req.tenant_id)
            s.commit()
            counts["released"] += 1
            log.info("lease of request %s expired at %s: releasing (jobs %s)", rid, expired_at, job_ids)
    return counts
