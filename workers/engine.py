"""Runs one job: claim it in the database, run its phases, store events, settle it.

The database decides: a claim is a compare-and-set (queued → running) with a lease that a
heartbeat thread renews; a redelivered message for a claimed or finished job does nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlmodel import Session

from provisioner import secrets as secrets_mod
from provisioner.config import Settings, get_settings
from provisioner.db import get_engine
from provisioner.imaging.catalogue import ImageUnavailable
from provisioner.imaging.serving import image_spec_for, image_target_for
from provisioner.models import Host, HostRequest, Job
from provisioner.pipeline import Phase, phases_for
from provisioner.settle import settle
from provisioner.timeutil import iso, utcnow
from workers.ansible_bridge import PhaseOutcome, run_playbook
from workers.event_sink import EventSink, event_row
from workers.inventory import extravars_for, inventory_for

log = logging.getLogger("provisioner.engine")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def claim(session: Session, job_id: int, worker_id: str, lease_s: float) -> bool:
    now = utcnow()
    res = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(False))  # type: ignore[attr-defined]
        .values(status="running", worker_id=worker_id, attempts=Job.attempts + 1,
                lease_until=now + timedelta(seconds=lease_s))
    )
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]


class Heartbeat:
    """Renews the lease and watches for cancel requests; notices when the lease was lost."""

    def __init__(self, settings: Settings, job_id: int, worker_id: str) -> None:
        self.settings = settings
        self.job_id = job_id
        self.worker_id = worker_id
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        engine = get_engine(self.settings)
        last_renew = 0.0
        while not self._stop.wait(0.5):
            try:
                with engine.begin() as conn:
                    if time.monotonic() - last_renew >= self.settings.heartbeat_seconds:
                        res = conn.execute(
                            update(Job)
                            .where(Job.id == self.job_id, Job.status == "running",
                                   Job.worker_id == self.worker_id)  # type: ignore[arg-type]
                            .values(lease_until=utcnow() + timedelta(seconds=self.settings.lease_seconds))
                        )
                        last_renew = time.monotonic()
                        if res.rowcount != 1:
                            self.lost.set()
                            return
                    row = conn.execute(
                        sa_select(Job.cancel_requested).where(Job.id == self.job_id)  # type: ignore[call-overload]
                    ).first()
                    if row and row[0]:
                        self.cancel.set()
            except Exception:  # a DB blip must not kill the heartbeat; the lease has slack
                log.exception("heartbeat for job %s failed", self.job_id)

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set()


def _backup_config(settings: Settings, host: Host) -> dict[str, Any] | None:
    path = settings.backup_store
    if not path or not Path(path).exists():
        return None
    store = json.loads(Path(path).read_text())
    key = Path(store["private_key"]).read_text()
    password = secrets_mod.decrypt(settings, host.backup_secret_ciphertext) if host.backup_secret_ciphertext else ""
    known = store.get("known_hosts_line") or ""
    # The repository is named after the host and its password: a re-enrolled host (new password)
    # gets a fresh repository instead of failing to open its predecessor's.
    repo = f"{host.name}-{hashlib.sha256(password.encode()).hexdigest()[:12]}"
    return {
        "repository": f"sftp:{store['user']}@{store['host']}:{store['base_path'].rstrip('/')}/{repo}",
        "port": store.get("port", 22),
        "password": password,
        "sftp_private_key": key,
        # Pin the store's host key when the lab published it ("[host]:port keytype key").
        "host_key": known.split(" ", 1)[1] if " " in known else "",
    }


def _phase_record(phases: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for p in phases:
        if p["name"] == name:
            return p
    rec = {"name": name, "status": "pending", "started_at": None, "ended_at": None, "duration_s": None,
           "attempts": 0}
    phases.append(rec)
    return rec


def _save_progress(session: Session, job: Job, worker_id: str) -> None:
    session.execute(
        update(Job).where(Job.id == job.id, Job.worker_id == worker_id)  # type: ignore[arg-type]
        .values(phases=list(job.phases), current_phase=job.current_phase, started_at=job.started_at)
        # Keep the in-memory job as the worker's own view (the ORM would swap in a copy of the list).
        .execution_options(synchronize_session=False)
    )
    session.commit()


def _apply_compliance(session: Session, host: Host, check: dict[str, Any], job_id: int | None) -> None:
    from provisioner.admission import active_waivers, load_policy
    from provisioner.compliance import evaluate, record
    from provisioner.models import Tenant

    tenant = session.get(Tenant, host.tenant_id) if host.tenant_id else None
    scopes = [f"host:{host.id}"] + ([f"tenant:{tenant.name}"] if tenant else []) + (
        [f"request:{host.request_id}"] if host.request_id else [])
    verdict = evaluate(check, applied=host.results or {}, last_restore_at=host.last_restore_at,
                       last_restore_passed=host.last_restore_passed, pool=host.pool, policy=load_policy(session),
                       waivers=active_waivers(session, scopes), scopes=scopes, now=utcnow())
    record(session, host, verdict, job_id=job_id)


def _apply_result(session: Session, host: Host, phase: str, result: dict[str, Any], job_id: int | None = None
                  ) -> None:
    if not result:
        return
    if isinstance(result.get("compliance"), dict):
        # A check observes; it does not overwrite what the provisioning phases applied.
        _apply_compliance(session, host, result["compliance"], job_id)
        session.commit()
        return
    merged = dict(host.results or {})
    merged.update(result)
    host.results = merged
    vm = result.get("vm")
    if isinstance(vm, dict) and vm.get("address"):
        host.address = vm["address"]
        host.port = int(vm.get("port") or 22)
        host.ssh_user = vm.get("user") or host.ssh_user
        host.credential_path = vm.get("private_key") or host.credential_path
    commission = result.get("commission") if isinstance(result.get("commission"), dict) else result
    facts = commission.get("facts")
    if isinstance(facts, dict):
        hw = dict(facts)
        if isinstance(commission.get("data_disks"), list):
            hw["data_disks"] = commission["data_disks"]
        host.hardware = hw
    rv = result.get("restore_verify")
    if isinstance(rv, dict):
        host.last_restore_passed = bool(rv.get("passed"))
        if rv.get("passed"):
            host.last_restore_at = utcnow()
    host.updated_at = utcnow()
    session.add(host)
    session.commit()


def run_job(job_id: int, settings: Settings | None = None, worker_id: str | None = None) -> str:
    """Entry point of the actor. Returns what happened (for logs and tests)."""
    settings = settings or get_settings()
    worker_id = worker_id or f"{WORKER_ID}:{threading.get_ident()}"
    engine = get_engine(settings)
    with Session(engine, expire_on_commit=False) as session:
        if not claim(session, job_id, worker_id, settings.lease_seconds):
            job = session.get(Job, job_id)
            if job is not None and job.status == "queued" and job.cancel_requested:
                settle(session, job, "cancelled", "cancelled before it started", actor=worker_id)
                return "cancelled"
            return "skipped"
        job = session.get(Job, job_id)
        assert job is not None
        session.refresh(job)
        if job.started_at is None:
            job.started_at = utcnow()
        hb = Heartbeat(settings, job_id, worker_id).start()
        try:
            status, error = _run_phases(session, engine, settings, job, hb, worker_id)
        except Exception as exc:
            log.exception("job %s crashed", job_id)
            status, error = "failed", f"internal error in the worker: {exc}"
        finally:
            hb.stop()
        if hb.lost.is_set():
            return "lost"
        session.refresh(job, attribute_names=["status"])
        settle(session, job, status, error, expect_worker=worker_id, actor=worker_id)
        return status


def _run_phases(session: Session, engine: Any, settings: Settings, job: Job, hb: Heartbeat,
                worker_id: str) -> tuple[str, str | None]:
    host = session.get(Host, job.host_id)
    if host is None:
        return "failed", f"host {job.host_id} no longer exists"
    req = session.get(HostRequest, job.request_id) if job.request_id else None
    params = dict(req.params or {}) if req else dict(job.params or {})
    phases = list(job.phases or [])
    job.phases = phases
    if job.kind == "provision" and not host.backup_secret_ciphertext:
        # One restic password per host, made before any phase needs it and kept encrypted.
        host.backup_secret_ciphertext = secrets_mod.encrypt(settings, secrets_mod.new_token()[0])
        session.add(host)
        session.commit()
    key = None
    if host.credential_ciphertext:
        key = secrets_mod.decrypt(settings, host.credential_ciphertext)
    for phase in phases_for(job.kind, host.driver):
        rec = _phase_record(phases, phase.name)
        if rec["status"] == "succeeded":
            continue  # a retried job resumes after the phases it finished
        phase_params = params
        if phase.name == "image":
            # A fresh, job-scoped download token each run; names outside the catalogue skip the phase.
            try:
                spec = image_spec_for(session, settings, job, req.image if req else None, image_target_for(host))
            except ImageUnavailable as exc:
                return "failed", f"phase image: {exc}"
            phase_params = {**params, "image_spec": spec}
        outcome = _run_phase(session, engine, settings, job, host, phase, rec, phase_params, key, hb, worker_id)
        if hb.lost.is_set():
            return "failed", "lease lost"
        if hb.cancel.is_set():
            return "cancelled", f"cancelled during phase {phase.name}"
        if not outcome.ok:
            if outcome.driver_error:
                return "failed", f"phase {phase.name} failed: {outcome.driver_error}"
            if outcome.status == "timeout":
                limit = settings.phase_timeouts.get(phase.name, phase.timeout_s)
                return "failed", f"phase {phase.name} timed out after {limit:.0f}s"
            why = ("; ".join(outcome.failures[-3:] or outcome.tail)
                   or f"ansible exited with rc={outcome.rc} ({outcome.status})")
            if outcome.unreachable:
                return "failed", f"phase {phase.name}: host unreachable over SSH: {why}"
            return "failed", f"phase {phase.name} failed: {why}"
        session.refresh(host)
        _apply_result(session, host, phase.name, outcome.result, job.id)
    return "succeeded", None


def _run_phase(session: Session, engine: Any, settings: Settings, job: Job, host: Host, phase: Phase,
               rec: dict[str, Any], params: dict[str, Any], key: str | None, hb: Heartbeat,
               worker_id: str) -> PhaseOutcome:
    if phase.name in settings.phase_timeouts:
        phase = replace(phase, timeout_s=float(settings.phase_timeouts[phase.name]))
    max_tries = settings.max_attempts if phase.idempotent else 1
    outcome = PhaseOutcome(status="failed", rc=None)
    first_start = utcnow()
    t0 = time.monotonic()
    for _ in range(max_tries):
        # A phase's time covers all its attempts in this run: retries are part of the install time.
        rec.update(status="running", started_at=iso(first_start), ended_at=None, duration_s=None,
                   attempts=rec.get("attempts", 0) + 1)
        job.current_phase = phase.name
        _save_progress(session, job, worker_id)
        sink = EventSink(engine, job.id or 0, job.event_count)
        host_d = host.model_dump()
        job_d = {"id": job.id, "kind": job.kind}
        backup = _backup_config(settings, host) if job.kind in ("provision", "compliance") else None
        try:
            if phase.action:
                outcome = _run_driver(settings, phase, host, hb, sink)
            else:
                outcome = run_playbook(
                    playbook=Path(settings.playbook_dir) / (phase.playbook or ""),
                    inventory=inventory_for(host_d, host.credential_path),
                    extravars=extravars_for(job_d, host_d, params, backup),
                    ssh_key=key,
                    timeout_s=phase.timeout_s,
                    should_cancel=hb.should_stop,
                    on_event=lambda ev, sink=sink: sink.add(event_row(  # type: ignore[misc]
                        ev, job_id=job.id or 0, seq=0, phase=phase.name, stdout_max=settings.event_stdout_max)),
                )
        finally:
            sink.close()
            job.event_count = sink.seq
        rec.update(status="succeeded" if outcome.ok else ("cancelled" if hb.should_stop() else "failed"),
                   ended_at=iso(utcnow()), duration_s=round(time.monotonic() - t0, 3))
        _save_progress(session, job, worker_id)
        if outcome.ok or hb.should_stop() or outcome.status == "timeout" or outcome.unreachable:
            break
    return outcome


def _run_driver(settings: Settings, phase: Phase, host: Host, hb: Heartbeat, sink: EventSink) -> PhaseOutcome:
    from workers.vagrant_driver import run_lab

    verb = {"vm_create": "vm-up", "vm_destroy": "vm-destroy"}[phase.action or ""]
    started = time.monotonic()

    def on_line(line: str) -> None:
        sink.add({"job_id": sink.job_id, "phase": phase.name, "event": "driver_output", "host": host.name,
                  "task": f"lab {verb}", "status": None, "duration_s": round(time.monotonic() - started, 3),
                  "stdout": line[: settings.event_stdout_max], "created_at": utcnow()})

    res = run_lab(settings.lab_cmd, [verb, host.name], timeout_s=phase.timeout_s, should_cancel=hb.should_stop,
                  on_line=on_line)
    if not res.ok:
        out = PhaseOutcome(status="timeout" if res.timed_out else "failed", rc=1)
        out.driver_error = res.error
        return out
    return PhaseOutcome(status="successful", rc=0, result={"vm": res.record})
