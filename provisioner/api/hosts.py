"""Hosts: enrollment, reading, commissioning and maintenance (operators), scoped reads (customers)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from provisioner.api.bounds import PathId
from provisioner.api.deps import DbSession, Principal, require
from provisioner.api.pagination import Paging, page_meta
from provisioner.api.problems import Problem, not_found
from provisioner.api.schemas import (
    BmcIn,
    HostIn,
    HostOut,
    HostStateIn,
    JobOut,
    Page,
    PowerIn,
    PowerOut,
    RepinIn,
)
from provisioner.core.bmc_rules import PowerAction
from provisioner.core.lifecycle import HostState, manual_transition
from provisioner.core.timeutil import utcnow
from provisioner.services import audit, bmc, host_keys, host_waivers
from provisioner.services import console_log as console_log_paths
from provisioner.services.compliance_schedule import queue_check
from provisioner.services.host_transitions import move_host
from provisioner.services.jobs import new_job
from provisioner.store.config import get_settings
from provisioner.store.models import Host
from provisioner.store.secrets import encrypt

router = APIRouter(prefix="/v1/hosts", tags=["hosts"])

PUBLIC_FIELDS = ("name", "address", "port", "ssh_user", "connection", "labels", "pool", "state", "driver",
                 "bmc_url", "bmc_cert_sha256", "console_log")


def host_out(h: Host) -> HostOut:
    data = h.model_dump(exclude={"credential_ciphertext", "credential_path", "backup_secret_ciphertext",
                                 "bmc_credential_ciphertext"})
    data["credential"] = "stored" if h.credential_ciphertext else ("path" if h.credential_path else "none")
    data.update(host_keys.host_key_view(h))
    data.update(bmc.view(h))
    return HostOut.model_validate(data)


def snapshot(h: Host) -> dict:
    return {k: getattr(h, k) for k in PUBLIC_FIELDS} | {
        "host_key_fingerprint": host_keys.host_key_view(h)["host_key_fingerprint"]}


def visible_host(s: Session, p: Principal, host_id: int) -> Host:
    h = s.get(Host, host_id)
    if h is None or not p.sees_tenant(h.tenant_id):
        raise not_found("host", host_id)
    return h


# A BMC's failure is the device's, not the service's: 502 with the BMC's own words (bmc_client.py).
BMC_FAILED: dict[int | str, dict[str, Any]] = {502: {
    "description": "the host's BMC could not be reached (bmc.unreachable), refused the credentials (bmc.auth_failed) "
                   "or the request (bmc.refused), or presented a certificate other than the pinned one "
                   "(bmc.cert_mismatch); the detail carries the BMC's own words"}}


@router.post("", status_code=201, response_model=HostOut, summary="Enroll a host (operator)", responses=BMC_FAILED,
             description="An ssh host's SSH host key is read (paramiko) before anything is stored or sent to it, "
             "and pinned: every job connects with strict host key checking against it. With "
             "`host_key_fingerprint` the enrollment is refused (409 host.key_mismatch) when the key differs; a "
             "host whose key cannot be read is refused (422 host.unreachable; nothing is stored). "
             "A host enrolled by its Redfish BMC (`bmc`, driver redfish) is reached over https with the pinned "
             "certificate and its facts are read from the BMC before anything is stored: an unreachable BMC "
             "(bmc.unreachable), refused credentials (bmc.auth_failed) or another certificate (bmc.cert_mismatch) "
             "are a 502 with the BMC's own words. Its credentials are stored encrypted and never "
             "returned or audited.")
def enroll(body: HostIn, p: Annotated[Principal, Depends(require("hosts:write"))],
           s: DbSession) -> HostOut:
    settings = get_settings()
    console_log = console_log_paths.check_path(settings, body.console_log)  # 422 before anything is asked
    if body.bmc is not None:
        return _enroll_by_bmc(body, body.bmc, p, s, console_log)
    if body.address is None:
        raise Problem(422, "host.address_required", "an ssh host needs an address",
                      hint="give address, or enroll a bare-metal host by its BMC (bmc)")
    if body.ssh_private_key and body.ssh_key_path:
        raise Problem(422, "host.credential_ambiguous", "give ssh_private_key or ssh_key_path, not both",
                      hint="drop one of the two fields")
    if body.connection == "local" and not settings.allow_local_connection:
        raise Problem(422, "host.local_connection_disabled",
                      "connection=local runs playbooks on the service's own machine and is disabled",
                      hint="enroll the host over ssh; local is for engine tests (PROVISIONER_ALLOW_LOCAL_CONNECTION)")
    if body.connection == "ssh" and not (body.ssh_private_key or body.ssh_key_path):
        raise Problem(422, "host.credential_required", "an ssh host needs ssh_private_key or ssh_key_path",
                      hint="pass the PEM key (stored encrypted) or a key path readable by the workers")
    if body.connection == "local" and body.host_key_fingerprint:
        raise Problem(422, "host.fingerprint_without_ssh", "a local host has no SSH host key to check",
                      hint="drop host_key_fingerprint, or enroll the host over ssh")
    # Before the row exists: a refused key leaves nothing behind.
    host_key = (host_keys.fetch_for_enrollment(body.name, body.address, body.port, body.host_key_fingerprint)
                if body.connection == "ssh" else None)
    h = Host(name=body.name, address=body.address, port=body.port, ssh_user=body.ssh_user,
             connection=body.connection, labels=dict(body.labels), pool=body.pool,
             credential_ciphertext=encrypt(settings, body.ssh_private_key) if body.ssh_private_key else None,
             credential_path=body.ssh_key_path, console_log=console_log)
    if host_key:
        host_keys.pin(h, host_key)
    _add_enrolled(s, h, p, after=snapshot(h))
    job_ids: list[int] = []
    if body.commission is not False:
        move_host(s, h, HostState.commissioning)
        job_ids.append(new_job(s, "commission", h, settings=settings).id or 0)
    s.commit()
    s.refresh(h)
    return host_out(h)


def _add_enrolled(s: Session, h: Host, p: Principal, *, after: dict) -> None:
    """Insert an enrolled host (a name taken is a 409, nothing kept) and audit it, in the caller's transaction."""
    s.add(h)
    try:
        s.flush()
    except IntegrityError:
        s.rollback()
        raise Problem(409, "host.exists", f"a host named {h.name!r} is already enrolled",
                      hint="GET /v1/hosts?name=... to find it, or pick another name") from None
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="host.enroll", object_type="host",
                 object_id=h.id, after=after, request_id=p.request_id)


def _enroll_by_bmc(body: HostIn, given: BmcIn, p: Principal, s: Session, console_log: str | None) -> HostOut:
    settings = get_settings()
    if body.connection != "ssh" or body.host_key_fingerprint or body.ssh_key_path or body.ssh_private_key:
        raise Problem(422, "host.bmc_with_ssh", "a host enrolled by its BMC takes no SSH key, host key or connection",
                      hint="the service generates the keys of its deploy ramdisk and deployed OS, pinned from the "
                           "start")
    # Before the row exists: a BMC that is unreachable, presents another certificate or refuses the
    # credentials leaves nothing behind.
    creds, facts = bmc.connect(bmc.BmcEnrollment(url=given.url, username=given.username, password=given.password,
                                                 cert_pem=given.cert_pem, cert_fingerprint=given.cert_fingerprint))
    h = Host(name=body.name, address=body.address or "", port=body.port, ssh_user=body.ssh_user,
             labels=dict(body.labels), pool=body.pool, console_log=console_log)
    bmc.attach(settings, h, creds, facts)
    _add_enrolled(s, h, p, after=snapshot(h) | {"hardware": facts})
    if body.commission:
        move_host(s, h, HostState.commissioning)
        new_job(s, "commission", h, settings=settings)
    s.commit()
    s.refresh(h)
    return host_out(h)


@router.get("", response_model=Page[HostOut], summary="List hosts (customers see their tenant's)")
def list_hosts(*, state: HostState | None = None, pool: Annotated[str | None, Query(max_length=64)] = None,
               name: Annotated[str | None, Query(max_length=64)] = None,
               pg: Paging, p: Annotated[Principal, Depends(require("hosts:read"))],
               s: DbSession) -> dict:
    q = select(Host)
    if p.scoped:
        q = q.where(Host.tenant_id == p.tenant_id)
    if state:
        q = q.where(Host.state == state)
    if pool:
        q = q.where(Host.pool == pool)
    if name:
        q = q.where(Host.name == name)
    items = s.exec(q.order_by(col(Host.id)).offset(pg.offset).limit(pg.limit)).all()
    return {"items": [host_out(h) for h in items], **page_meta(s, q, pg)}


@router.get("/{host_id}", response_model=HostOut, summary="Show a host")
def get_host(host_id: PathId, p: Annotated[Principal, Depends(require("hosts:read"))],
             s: DbSession) -> HostOut:
    h = visible_host(s, p, host_id)
    out = host_out(h)
    out.waivers = [host_waivers.describe(w) for w in host_waivers.active_rows(s, h, utcnow())]
    return out


@router.post("/{host_id}/commission", status_code=202, response_model=JobOut,
             summary="(Re)commission a host: gather its hardware facts")
def commission(host_id: PathId, p: Annotated[Principal, Depends(require("hosts:write"))],
               s: DbSession) -> JobOut:
    h = visible_host(s, p, host_id)
    before = snapshot(h)
    move_host(s, h, HostState.commissioning)
    job = new_job(s, "commission", h)
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="host.commission", object_type="host",
                 object_id=h.id, before=before, after=snapshot(h) | {"job_id": job.id}, request_id=p.request_id)
    s.commit()
    return JobOut.model_validate(job)


@router.post("/{host_id}/state", response_model=HostOut,
             summary="Put a host into maintenance, back to available, or retire it")
def set_state(host_id: PathId, body: HostStateIn, p: Annotated[Principal, Depends(require("hosts:write"))],
              s: DbSession) -> HostOut:
    h = visible_host(s, p, host_id)
    before = snapshot(h)
    manual_transition(h.state, body.state)  # IllegalManualTransition: 409 host.illegal_transition
    move_host(s, h, body.state)
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="host.state", object_type="host",
                 object_id=h.id, before=before, after=snapshot(h) | {"reason": body.reason},
                 request_id=p.request_id)
    s.commit()
    return host_out(h)


@router.post("/{host_id}/repin", response_model=HostOut,
             summary="Re-pin a host's SSH host key (operator, audited)",
             description="Reads the key the host presents now and pins it, e.g. after a reinstall or after a job "
             "failed with host.key_changed. Give the fingerprint you checked on the host's console: without it "
             "whoever answers at the address is trusted. The host's state is not changed; a host a changed key "
             "moved to failed comes back with POST /v1/hosts/{id}/commission.")
def repin(host_id: PathId, body: RepinIn, p: Annotated[Principal, Depends(require("hosts:write"))],
          s: DbSession) -> HostOut:
    h = visible_host(s, p, host_id)
    host_keys.repin(s, h, body.fingerprint, actor_id=p.user_id, actor_name=p.name, request_id=p.request_id)
    s.commit()
    s.refresh(h)
    return host_out(h)


@router.post("/{host_id}/compliance-check", status_code=202, response_model=JobOut,
             summary="Check an active host's guardrails now (restore test, RAID health, firewall)")
def compliance_check(host_id: PathId, p: Annotated[Principal, Depends(require("hosts:write"))],
                     s: DbSession) -> JobOut:
    h = visible_host(s, p, host_id)
    if h.state != HostState.active:
        raise Problem(409, "host.not_active", f"host {h.name} is {h.state}; only active hosts are checked",
                      hint="compliance checks run on hosts handed over to customers")
    job = queue_check(s, h)
    audit.record(s, actor_id=p.user_id, actor_name=p.name, action="host.compliance_check", object_type="host",
                 object_id=h.id, tenant_id=h.tenant_id, after={"job_id": job.id}, request_id=p.request_id)
    s.commit()
    return JobOut.model_validate(job)


@router.get("/{host_id}/power", response_model=PowerOut, responses=BMC_FAILED,
            summary="A redfish host's power state, as its BMC says",
            description="Asked of the BMC now (https, pinned certificate). 409 host.no_bmc for a host without a "
            "BMC; 502 bmc.unreachable / bmc.auth_failed / bmc.cert_mismatch with the BMC's own words.")
def get_power(host_id: PathId, p: Annotated[Principal, Depends(require("hosts:write"))],
              s: DbSession) -> PowerOut:
    h = visible_host(s, p, host_id)
    state = bmc.power_state(get_settings(), h)
    return PowerOut(host_id=h.id or 0, power_state=state, bmc_url=h.bmc_url or "")


@router.post("/{host_id}/power", response_model=PowerOut, responses=BMC_FAILED,
             summary="Power a redfish host on, off or reset it "
             "(operator, audited)",
             description="Asks the host's BMC (https, pinned certificate) and answers with the power state it "
             "reports right after; audited as host.power (never with a credential). Errors as GET.")
def set_power(host_id: PathId, body: PowerIn, p: Annotated[Principal, Depends(require("hosts:write"))],
              s: DbSession) -> PowerOut:
    h = visible_host(s, p, host_id)
    state = bmc.set_power(s, get_settings(), h, PowerAction(body.action), actor_id=p.user_id, actor_name=p.name,
                          request_id=p.request_id, reason=body.reason)
    s.commit()
    return PowerOut(host_id=h.id or 0, power_state=state, bmc_url=h.bmc_url or "")
