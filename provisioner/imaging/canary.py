"""Canary installs: a candidate image proves itself on a real host through the normal pipeline.

``start_canary`` opens an ordinary host request for the image (``services.requests.open_request``:
one host of a lab pool, one provision job) in the caller's transaction, so the canary runs every
phase a customer's host would run: the deploy ramdisk writes this image onto the root disk of a host
enrolled by its BMC, the host boots it, and the phases after run inside it. The request belongs to
the caller's tenant (admins name one); the host stays allocated after the canary so the imaging team
can look at it, and is given back with ``POST /v1/requests/{request_id}/release``.

``record_canary_outcome`` is called by ``settle()`` for every job that ends, inside its transaction:
for a canary job it stores ``canary_result`` (passed = the job succeeded, its image phase really
wrote the image, and the host booted it and reported its image-identity file); for any job whose
image write failed with "image corrupt" it flags the image.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from provisioner.core.allocation import Constraints
from provisioner.core.errors import Conflict, Invalid
from provisioner.core.timeutil import iso, utcnow
from provisioner.imaging.catalogue import flag_image, image_by_name, snapshot
from provisioner.services import audit
from provisioner.services.actor import Actor
from provisioner.services.admission import load_policy
from provisioner.services.requests import CapacityInsufficient, open_request
from provisioner.store.config import Settings
from provisioner.store.image_models import Image
from provisioner.store.models import Host, HostRequest, Job

CANARY_USER = "canary"
# The writer's failure code for a served image that does not match its block map.
IMAGE_CORRUPT = "image_corrupt"


def throwaway_public_key() -> str:
    """An OpenSSH key whose private half is discarded: handover needs a key, nobody logs in."""
    pub = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return pub.decode() + " provisioner-canary"


def start_canary(session: Session, settings: Settings, actor: Actor, *, img: Image, pool: str, tenant_id: int,
                 params: dict[str, Any]) -> tuple[HostRequest, Job, Host]:
    """Allocate a lab host and queue a provision job writing ``img``; the caller commits.

    ``params`` are the phases' parameters of an ordinary request (the edge fills in the defaults a
    customer's request would have, with ``CANARY_USER`` and a key of ``throwaway_public_key``)."""
    policy = load_policy(session)
    if pool not in policy.lab_pools:
        raise Invalid("image.canary_pool_not_lab", f"pool {pool!r} is not a lab pool",
                      hint=f"canaries run on lab pools only: {', '.join(sorted(policy.lab_pools))}",
                      lab_pools=sorted(policy.lab_pools))
    try:
        req, jobs, hosts = open_request(session, settings, actor, tenant_id=tenant_id, image=img.name, pool=pool,
                                        count=1, constraints=Constraints(pool=pool),
                                        params=params | {"canary_image_id": img.id}, accepted_at=utcnow(),
                                        job_params={"canary_image_id": img.id})
    except CapacityInsufficient:
        raise Conflict("capacity.insufficient", f"no available host in pool {pool!r} for the canary",
                       hint="enroll a lab host or release one, then retry", pool=pool) from None
    job = jobs[0]
    img.canary_job_id = job.id
    img.canary_result = None
    session.add(img)
    return req, job, hosts[0]


def _final_state(session: Session, job: Job) -> tuple[str, str | None, str | None, list]:
    # settle() changes the row with an UPDATE statement: read what this transaction now holds.
    row = session.execute(sa_select(col(Job.status), col(Job.error), col(Job.error_code), col(Job.phases))
                          .where(col(Job.id) == job.id)).one()
    return row[0], row[1], row[2], list(row[3] or [])


def _image_phase(phases: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((p for p in phases if p.get("name") == "image"), None)


def outcome(status: str, error: str | None, phases: list[dict[str, Any]],
            writer: dict[str, Any] | None, *, booted: dict[str, Any] | None = None,
            image_version: str | None = None) -> tuple[bool, str]:
    """Whether a canary passed, and why not. Pure. It passes only when the host (enrolled by its
    BMC: the only hosts an image is written to) booted the written disk and its image-identity file
    names this image's version."""
    if status != "succeeded":
        return False, f"job {status}: {error or 'no error recorded'}"
    phase = _image_phase(phases)
    if phase is None or phase.get("status") != "succeeded":
        return False, "the image phase did not run"
    if not isinstance(writer, dict) or writer.get("skipped"):
        return False, ("the image phase skipped the write (the job got no image spec: "
                       "does services.phase_inputs.image_params reach imaging.serving.image_spec_for?)")
    if writer.get("os_release") == []:
        return False, "the image was written but its root shows no os-release"
    identity = (booted or {}).get("identity")
    if not isinstance(identity, dict):
        return False, "the host did not report the image-identity file after booting the written disk"
    if identity.get("version") != image_version:
        return False, (f"the host booted an image of version {identity.get('version')!r}, "
                       f"not this image's {image_version!r}")
    return True, (f"the host booted the image (identity {identity.get('name')} {identity.get('version')}, "
                  f"build {identity.get('build_id')}) and answered over SSH with its pinned key")


def record_canary_outcome(session: Session, job: Job) -> Image | None:
    """Call from ``settle()`` after the job's final UPDATE, before the commit. Never commits."""
    if job.kind != "provision":
        return None
    status, error, error_code, phases = _final_state(session, job)
    if status not in ("succeeded", "failed", "cancelled"):
        return None
    if status == "failed" and error_code == IMAGE_CORRUPT:
        _flag_from_job(session, job, error or IMAGE_CORRUPT)
    img = session.exec(select(Image).where(Image.canary_job_id == job.id)).first()
    if img is None:
        return None
    host = session.get(Host, job.host_id)
    writer = (host.results or {}).get("image") if host is not None else None
    booted = (host.results or {}).get("booted") if host is not None else None
    passed, reason = outcome(status, error, phases, writer, booted=booted if isinstance(booted, dict) else None,
                             image_version=img.version)
    phase = _image_phase(phases) or {}
    result = {
        "passed": passed,
        "reason": reason,
        "job_id": job.id,
        "status": status,
        "error": error,
        "request_id": job.request_id,
        "host_id": job.host_id,
        "host": host.name if host is not None else None,
        "image_phase": {k: phase.get(k) for k in ("status", "duration_s", "attempts")},
        "writer": {k: v for k, v in writer.items() if k in (
            "mode", "bytes_written", "bytes_zeroed", "bytes_downloaded", "throughput_mbps", "timings",
            "image_size", "ranges", "zero_method", "retries")} if isinstance(writer, dict) else None,
        "finished_at": iso(utcnow()),
    }
    before = snapshot(img)
    img.canary_result = result
    session.add(img)
    audit.record(session, actor_id=None, actor_name="worker", action="image.canary_result", object_type="image",
                 object_id=img.id, before=before, after={"passed": passed, "reason": reason, "job_id": job.id})
    return img


def _flag_from_job(session: Session, job: Job, error: str) -> None:
    name = None
    if job.request_id is not None:
        req = session.get(HostRequest, job.request_id)
        name = req.image if req is not None else None
    img = image_by_name(session, name) if name else None
    if img is not None and not img.flagged:
        flag_image(session, img.id or 0, f"job {job.id} on host {job.host_id}: {error}", actor="worker")
