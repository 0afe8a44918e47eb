"""Runs one job: claim it, run its phases through ansible-runner (or a driver), store their
events, hand each phase's result to the services, and settle the job.

The database decides: a claim is a compare-and-set with an expiry a heartbeat renews
(`workers.claim`); a redelivered message for a claimed or finished job does nothing. What a phase
needs comes from `services.phase_inputs`, what its result means is `services.phase_results`, and
how a job ends is `services.settle`: this module only runs things and keeps time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from provisioner.core.errors import DomainError
from provisioner.core.host_keys import KEY_CHANGED, KEY_UNPINNED, fingerprint, known_hosts_line
from provisioner.core.pipeline import Phase, phases_for
from provisioner.core.timeutil import iso, utcnow
from provisioner.imaging.catalogue import ImageUnavailable
from provisioner.services import console_log, deploy, handover_gate, host_keys, phase_inputs
from provisioner.services.phase_results import apply_phase_result
from provisioner.services.settle import settle
from provisioner.store.config import Settings, get_settings
from provisioner.store.db import get_engine
from provisioner.store.models import Host, HostRequest, Job
from workers import bare_metal, private_dirs
from workers.ansible_bridge import PhaseOutcome, run_playbook
from workers.claim import Heartbeat, claim, hand_back
from workers.db_retry import with_retry
from workers.event_sink import EventSink, event_row
from workers.inventory import extravars_for, inventory_for
from workers.remote_stop import Remote, new_tag
from workers.shutdown import DRAINING

log = logging.getLogger("provisioner.runner")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class JobEnd:
    status: str
    error: str | None = None
    error_code: str | None = None


def _phase_record(phases: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for p in phases:
        if p["name"] == name:
            return p
    rec = {"name": name, "status": "pending", "started_at": None, "ended_at": None, "duration_s": None,
           "attempts": 0}
    phases.append(rec)
    return rec


def _save_progress(session: Session, job: Job, worker_id: str) -> None:
    with_retry(f"progress of job {job.id}", lambda: _write_progress(session, job, worker_id), session)


def _write_progress(session: Session, job: Job, worker_id: str) -> None:
    session.execute(
        update(Job).where(col(Job.id) == job.id, col(Job.worker_id) == worker_id)
        .values(phases=list(job.phases), current_phase=job.current_phase, started_at=job.started_at)
        # Keep the in-memory job as the worker's own view (the ORM would swap in a copy of the list).
        .execution_options(synchronize_session=False)
    )
    session.commit()


def run_job(job_id: int, settings: Settings | None = None, worker_id: str | None = None) -> str:
    """Entry point of the actor. Returns what happened (for logs and tests)."""
    settings = settings or get_settings()
    worker_id = worker_id or f"{WORKER_ID}:{threading.get_ident()}"
    engine = get_engine(settings)
    if DRAINING.is_set():
        return "skipped: this worker is stopping"  # still queued: the reconciler rings it again
    with Session(engine, expire_on_commit=False) as session:
        if not claim(session, job_id, worker_id, settings.claim_seconds):
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
            end = _run_phases(session, engine, settings, job, hb, worker_id)
        except Exception as exc:
            log.exception("job %s crashed", job_id)
            if isinstance(exc, DomainError):  # e.g. secrets.undecryptable: this worker lacks a key
                end = JobEnd("failed", f"{exc.detail}; {exc.hint}" if exc.hint else exc.detail, exc.code)
            else:
                end = JobEnd("failed", f"internal error in the worker: {exc}", "worker_error")
        finally:
            hb.stop()
            bare_metal.stop_serving(job_id)
        try:
            # A job handed back, or one this worker lost, goes on elsewhere: its media stay in.
            if not hb.lost.is_set() and end.status != "handback":
                bare_metal.eject_left_media(session, settings, job_id)
        except Exception:  # the job's outcome stands; what was left on the BMC is in the log
            log.exception("job %s: its end on the BMC failed", job_id)
        if hb.lost.is_set():
            return "lost"
        if end.status == "handback":
            return "handed back" if with_retry(f"hand-back of job {job_id}", lambda: hand_back(
                session, job, worker_id, end.error or ""), session) else "lost"

        def final() -> None:
            session.refresh(job, attribute_names=["status"])
            # Users read job errors; the worker's private paths are neither theirs nor useful to them.
            host = session.get(Host, job.host_id) if job.host_id else None
            error = (private_dirs.scrub(end.error, settings, [host.credential_path if host else None])
                     if end.error else None)
            settle(session, job, end.status, error, error_code=end.error_code, expect_worker=worker_id,
                   actor=worker_id)

        with_retry(f"settling job {job_id}", final, session)
        return end.status


def _failure(phase: Phase, outcome: PhaseOutcome, settings: Settings) -> JobEnd:
    code = outcome.error_codes[-1] if outcome.error_codes else None
    if outcome.driver_error:
        return JobEnd("failed", f"phase {phase.name} failed: {outcome.driver_error}", code or "driver_failed")
    if outcome.status == "timeout":
        limit = settings.phase_timeouts.get(phase.name, phase.timeout_s)
        return JobEnd("failed", f"phase {phase.name} timed out after {limit:.0f}s", "phase_timeout")
    why = "; ".join(outcome.failures[-3:] or outcome.tail) or f"ansible exited with rc={outcome.rc} ({outcome.status})"
    if outcome.host_key_refused:
        return JobEnd("failed", f"phase {phase.name}: the host's SSH host key is not the pinned one; nothing "
                                "was sent to it (re-pin with `provisioner hosts repin`)", KEY_CHANGED)
    if outcome.unreachable:
        return JobEnd("failed", f"phase {phase.name}: host unreachable over SSH: {why}", "host_unreachable")
    return JobEnd("failed", f"phase {phase.name} failed: {why}", code or "phase_failed")


def _run_phases(session: Session, engine: Any, settings: Settings, job: Job, hb: Heartbeat,
                worker_id: str) -> JobEnd:
    host = session.get(Host, job.host_id)
    if host is None:
        return JobEnd("failed", f"host {job.host_id} no longer exists", "host_missing")
    req = session.get(HostRequest, job.request_id) if job.request_id else None
    params = dict(req.params or {}) if req else dict(job.params or {})
    phases = list(job.phases or [])
    job.phases = phases
    phase_inputs.ensure_backup_secret(session, settings, job, host)
    key = phase_inputs.ssh_key(settings, host)
    try:
        # Every phase that gets the store's credentials checks its host key: refuse before the first.
        phase_inputs.backup_config(settings, job, host)
    except phase_inputs.BackupStoreUnpinned as exc:
        return JobEnd("failed", exc.detail, exc.code)
    key_checked = False
    for phase in phases_for(job.kind, host.driver):
        if any(p["name"] == phase.name and p["status"] in ("succeeded", "skipped") for p in phases):
            continue  # a retried job resumes after the phases it finished
        if DRAINING.is_set():
            return JobEnd("handback", f"worker {worker_id} stopping before phase {phase.name}")
        if not phase.action and phase.target == "os" and not key_checked:
            # Before anything (keys, passwords, tokens) goes to whoever answers at the address, and
            # before any phase is recorded as started.
            refused = _refuse_unpinned_or_changed(session, job, host, worker_id)
            if refused is not None:
                return refused
            key_checked = True
        rec = _phase_record(phases, phase.name)
        skip = phase_inputs.skip_reason(session, job, host, phase.name)
        if skip is not None:
            now = iso(utcnow())
            rec.update(status="skipped", reason=skip, started_at=now, ended_at=now, duration_s=0.0)
            _save_progress(session, job, worker_id)
            continue
        if phase.name == "handover":
            session.refresh(host)
            try:
                handover_gate.check(session, host, job)
            except handover_gate.HandoverRefused as exc:
                now = iso(utcnow())
                rec.update(status="failed", reason=exc.detail, started_at=now, ended_at=now, duration_s=0.0)
                _save_progress(session, job, worker_id)
                return JobEnd("failed", exc.detail, exc.code)
        phase_params = params
        if phase.target == "ramdisk":
            try:
                phase_params = {**params, **deploy.ramdisk_params(session, settings, job, host, phase.name)}
            except DomainError as exc:
                return JobEnd("failed", f"phase {phase.name}: {exc.detail}", exc.code)
        if phase.name == "image":
            try:
                phase_params = phase_inputs.image_params(session, settings, job, host, req, params)
            except ImageUnavailable as exc:
                return JobEnd("failed", f"phase image: {exc}", exc.code)
        outcome = _run_phase(session, engine, settings, job, host, phase, rec, phase_params, key, hb, worker_id)
        if hb.lost.is_set():
            return JobEnd("failed", "claim lost", "claim_lost")
        if hb.cancel.is_set():
            return JobEnd("cancelled", f"cancelled during phase {phase.name}")
        if outcome.host_key_refused:
            host_keys.record_key_changed(session, host, None, actor=worker_id, job_id=job.id)
            session.commit()
        if not outcome.ok and DRAINING.is_set() and phase.idempotent:
            # Stopped by us (or by the same SIGTERM reaching ansible): not the phase's failure.
            return JobEnd("handback", f"worker {worker_id} stopping during phase {phase.name}")
        if not outcome.ok:
            return _failure(phase, outcome, settings)
        def apply(host: Host = host, outcome: PhaseOutcome = outcome) -> None:
            session.refresh(host)
            apply_phase_result(session, host, outcome.result, job_id=job.id)

        with_retry(f"result of phase {phase.name}", apply, session)
        if phase.action == "vm_create":
            # The service created this VM a moment ago on the lab's own network: its first contact is
            # the pin, before any playbook talks to it.
            try:
                host_keys.pin_created_vm(session, host, actor=worker_id, job_id=job.id)
            except host_keys.HostUnreachable as exc:
                return JobEnd("failed", f"phase {phase.name}: {exc.detail}", "host_unreachable")
            session.commit()
    return JobEnd("succeeded")


def _refuse_unpinned_or_changed(session: Session, job: Job, host: Host, worker_id: str) -> JobEnd | None:
    try:
        code, presented = host_keys.verify(host)
    except host_keys.HostUnreachable as exc:
        return JobEnd("failed", f"{exc.detail}; nothing was sent to it", "host_unreachable")
    if code == KEY_UNPINNED:
        return JobEnd("failed", f"host {host.name} has no pinned SSH host key; nothing was sent to it",
                      KEY_UNPINNED)
    if code == KEY_CHANGED:
        host_keys.record_key_changed(session, host, presented, actor=worker_id, job_id=job.id)
        session.commit()
        view = host_keys.host_key_view(host)
        return JobEnd("failed", f"host {host.name} presented the SSH host key "
                                f"{fingerprint(presented or '')}, not the pinned "
                                f"{view['host_key_fingerprint']}; nothing was sent to it (if the change is "
                                "expected, re-pin with `provisioner hosts repin`)", KEY_CHANGED)
    return None


def _run_phase(session: Session, engine: Any, settings: Settings, job: Job, host: Host, phase: Phase,
               rec: dict[str, Any], params: dict[str, Any], key: str | None, hb: Heartbeat,
               worker_id: str) -> PhaseOutcome:
    if phase.name in settings.phase_timeouts:
        phase = replace(phase, timeout_s=float(settings.phase_timeouts[phase.name]))
    max_tries = settings.max_attempts if phase.idempotent else 1
    hb.interruptible = phase.idempotent
    outcome = PhaseOutcome(status="failed", rc=None)
    first_start = utcnow()
    t0 = time.monotonic()
    for _ in range(max_tries):
        # A phase's time covers all its attempts in this run: retries are part of the install time.
        rec.update(status="running", started_at=iso(first_start), ended_at=None, duration_s=None,
                   attempts=rec.get("attempts", 0) + 1)
        job.current_phase = phase.name
        _save_progress(session, job, worker_id)
        sink = EventSink(engine, job.id or 0, job.event_count,
                         scrub=private_dirs.scrubber(settings, [host.credential_path]),
                         stdout_max=settings.event_stdout_max)
        host_d = host.model_dump()
        job_d = {"id": job.id, "kind": job.kind, "keep_data": (job.params or {}).get("keep_data", True)}
        try:
            if phase.action and host.driver == deploy.DRIVER:
                outcome = _run_bare_metal(session, settings, job, host, phase, hb, sink)
            elif phase.action:
                outcome = _run_driver(settings, phase, host, hb, sink)
            else:
                # A playbook in the deploy ramdisk reaches it with this job's keys, not the host's.
                ssh = _ssh_identity(session, settings, job, host, phase, key)
                def on_event(ev: dict[str, Any], sink: EventSink = sink) -> None:
                    sink.add(event_row(ev, job_id=job.id or 0, seq=0, phase=phase.name,
                                       stdout_max=settings.event_stdout_max))

                host_d["host_key"] = ssh.host_key

                def inventory(known_hosts_file: str | None, host_d: dict[str, Any] = host_d,
                              key_file: str | None = ssh.key_file) -> dict[str, Any]:
                    return inventory_for(host_d, key_file, known_hosts_file)

                remote = (Remote(address=host.address, port=host.port, user=host.ssh_user, host_key=ssh.host_key,
                                 tag=new_tag(job.id or 0), private_key=ssh.private_key, key_file=ssh.key_file)
                          if host.connection == "ssh" else None)
                outcome = run_playbook(
                    playbook=Path(settings.playbook_dir) / (phase.playbook or ""),
                    inventory=inventory,
                    known_hosts=(known_hosts_line(host.address, host.port, ssh.host_key)
                                 if ssh.host_key and host.connection == "ssh" else None),
                    extravars=extravars_for(job_d, host_d, params,
                                            phase_inputs.backup_inputs(session, settings, job, host, phase.name)),
                    ssh_key=ssh.private_key,
                    timeout_s=phase.timeout_s,
                    should_cancel=hb.should_stop,
                    on_event=on_event,
                    work_root=private_dirs.owner_dir(settings),
                    remote=remote,
                )
        finally:
            sink.close()
            job.event_count = sink.seq
        rec.update(status="succeeded" if outcome.ok else ("cancelled" if hb.should_stop() else "failed"),
                   ended_at=iso(utcnow()), duration_s=round(time.monotonic() - t0, 3))
        _save_progress(session, job, worker_id)
        if (outcome.ok or hb.should_stop() or outcome.status == "timeout" or outcome.unreachable
                or not outcome.retry_can_help):
            break
    return outcome


@dataclass(frozen=True)
class _SshIdentity:
    host_key: str | None
    private_key: str | None
    key_file: str | None


def _ssh_identity(session: Session, settings: Settings, job: Job, host: Host, phase: Phase,
                  key: str | None) -> _SshIdentity:
    if phase.target == "ramdisk":
        keys = deploy.job_keys(session, settings, job)
        return _SshIdentity(keys.ramdisk_host_key.public, keys.ramdisk_login_key.private.decode(), None)
    # A bare-metal host's management key is made during its first deploy, after the job started.
    return _SshIdentity(host.host_key, key or phase_inputs.ssh_key(settings, host), host.credential_path)


def _run_bare_metal(session: Session, settings: Settings, job: Job, host: Host, phase: Phase, hb: Heartbeat,
                    sink: EventSink) -> PhaseOutcome:
    started = time.monotonic()

    def note(line: str) -> None:
        sink.add({"job_id": sink.job_id, "phase": phase.name, "event": "driver_output", "host": host.name,
                  "task": f"bmc {phase.action}", "status": None, "duration_s": round(time.monotonic() - started, 3),
                  "stdout": line, "created_at": utcnow()})

    res = bare_metal.run_action(session, settings, job, host, phase, hb.should_stop, note)
    if not res.ok:
        out = PhaseOutcome(status="failed", rc=1, retry_can_help=res.retry_can_help)
        out.driver_error = res.error
        if res.code:
            out.error_codes.append(res.code)
        if res.code == deploy.BOOT_TIMEOUT and host.console_log:
            out.driver_error = f"{res.error}; {_attach_console(settings, host.console_log, phase, host, sink)}"
        return out
    return PhaseOutcome(status="successful", rc=0, result=res.result)


def _attach_console(settings: Settings, path: str, phase: Phase, host: Host, sink: EventSink) -> str:
    """The end of the host's serial console log as one of the job's events: what the machine showed
    while nothing answered. Returns what the job's error says about it."""
    try:
        tail = console_log.read_tail(settings, path)
    except (DomainError, OSError) as exc:
        return f"its serial console log {path} could not be read: {exc}"
    sink.add({"job_id": sink.job_id, "phase": phase.name, "event": "console", "host": host.name,
              "task": f"serial console: last {tail.lines} line(s) of {path}", "status": "failed",
              "duration_s": None, "stdout": tail.text, "created_at": utcnow()})
    return (f"the last {tail.lines} line(s) of its serial console ({path}) are in the job's events "
            f"(task 'serial console')")


def _run_driver(settings: Settings, phase: Phase, host: Host, hb: Heartbeat, sink: EventSink) -> PhaseOutcome:
    from workers.vagrant_driver import run_lab

    verb = {"vm_create": "vm-up", "vm_destroy": "vm-destroy"}[phase.action or ""]
    started = time.monotonic()

    def on_line(line: str) -> None:
        sink.add({"job_id": sink.job_id, "phase": phase.name, "event": "driver_output", "host": host.name,
                  "task": f"lab {verb}", "status": None, "duration_s": round(time.monotonic() - started, 3),
                  "stdout": line, "created_at": utcnow()})

    res = run_lab(settings.lab_cmd, [verb, host.name], timeout_s=phase.timeout_s, should_cancel=hb.should_stop,
                  on_line=on_line)
    if not res.ok:
        out = PhaseOutcome(status="timeout" if res.timed_out else "failed", rc=1)
        out.driver_error = res.error
        return out
    return PhaseOutcome(status="successful", rc=0, result={"vm": res.record})
