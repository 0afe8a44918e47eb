"""The driver actions of a host enrolled by its BMC (driver `redfish`): boot the deploy ramdisk from a
per-job ISO this worker serves to the BMC, wait for the ramdisk and for the deployed OS to answer SSH
with the keys the service generated, boot the disk, power off, re-read the BMC's facts.

The per-job ISO holds the ramdisk's private host key: it lives in this worker's private directory
(0600) only while the ramdisk boots, is served at an unguessable URL by `workers.media_server`, and
is deleted when the ramdisk answered (or the job ended). The BMC keeps its own copy while the ISO is
in its virtual CD: the job takes it out when it boots the disk or powers the host off, and, when the
job ended before either (a failure, a cancel), at the job's end (`eject_left_media`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session

from provisioner.core.errors import DomainError, Unavailable
from provisioner.core.pipeline import DISK_BOOT, POWER_OFF, RAMDISK_BOOT, Phase
from provisioner.imaging.boot_iso import write_boot_iso_file
from provisioner.services import deploy
from provisioner.services.bmc_client import UNREACHABLE
from provisioner.store.config import Settings
from provisioner.store.models import Host, Job
from workers import private_dirs
from workers.media_server import MediaServer

log = logging.getLogger("provisioner.bare_metal")


@dataclass
class ActionResult:
    ok: bool
    result: dict[str, Any]
    error: str | None = None
    code: str | None = None
    # Whether running the action again could succeed: only a BMC that did not answer may answer a
    # moment later. Refused credentials, a certificate that is not the pinned one, a refusal of the
    # request or a ramdisk that never answered on this boot stay so on a second try.
    retry_can_help: bool = False


@dataclass
class _Served:
    serving: ExitStack  # the media server's `with`, held open past the phase that started it
    path: Path


_SERVED: dict[int, _Served] = {}
_LOCK = threading.Lock()


def ramdisk_iso(settings: Settings) -> Path:
    path = settings.ramdisk_iso
    if path is None or not Path(path).is_file():
        raise Unavailable("deploy.no_ramdisk", f"the deploy ramdisk ISO {path or '(not set)'} is not there",
                          hint="build it with images/build-ramdisk.sh and point PROVISIONER_RAMDISK_ISO at its "
                               "deploy-ramdisk.iso")
    return Path(path)


def stop_serving(job_id: int) -> None:
    """Stops serving the job's ISO and deletes it (idempotent; also called when the job ends)."""
    with _LOCK:
        served = _SERVED.pop(job_id, None)
    if served is not None:
        served.serving.close()
        served.path.unlink(missing_ok=True)


def eject_left_media(session: Session, settings: Settings, job_id: int) -> None:
    """At the end of a job that does not go on elsewhere: takes its ISO out of the BMC's virtual CD
    when the job's phases say it may still be there (a BMC deletes its downloaded copy, with the
    ramdisk's private host key, on eject). The phases, not this worker's memory, decide: the job may
    have booted the ramdisk on another worker before it was handed back. Best effort: a BMC that
    refuses is logged."""
    job = session.get(Job, job_id)
    host = session.get(Host, job.host_id) if job is not None and job.host_id else None
    if job is None or host is None or host.driver != deploy.DRIVER or not media_may_be_in(job.phases or []):
        return
    try:
        deploy.eject_media(settings, host)
    except DomainError as exc:
        log.warning("job %s: the boot ISO could not be taken out of %s's virtual CD: %s", job_id, host.name,
                    exc.detail)


def media_may_be_in(phases: list[dict[str, Any]]) -> bool:
    """Whether a job's boot ISO may still be in the BMC's virtual CD, by its phase records: the
    ramdisk boot started (it inserts the ISO before it fails, if it fails) and neither the disk boot
    nor the power-off (which take it out) succeeded."""
    status = {p.get("name"): p.get("status") for p in phases}
    started = status.get(RAMDISK_BOOT.name) not in (None, "pending")
    taken_out = any(status.get(p.name) == "succeeded" for p in (DISK_BOOT, POWER_OFF))
    return started and not taken_out


def _serve(settings: Settings, job: Job, host: Host, keys: deploy.DeployKeys) -> str:
    stop_serving(job.id or 0)
    path = private_dirs.owner_dir(settings) / f"boot-job-{job.id}.iso"
    path.unlink(missing_ok=True)  # a previous attempt's (the writer never replaces a file)
    write_boot_iso_file(ramdisk_iso(settings), deploy.ramdisk_files(host, keys), path)
    # Served past this phase (a BMC may read the CD while it boots): stop_serving ends it.
    serving = ExitStack()
    url = serving.enter_context(MediaServer(path, settings))
    with _LOCK:
        _SERVED[job.id or 0] = _Served(serving, path)
    return url


def run_action(session: Session, settings: Settings, job: Job, host: Host, phase: Phase,
               should_stop: Callable[[], bool], note: Callable[[str], None]) -> ActionResult:
    """Runs one action; a refusal of the BMC or the service is a failed result with its code."""
    started = time.monotonic()
    try:
        result = _dispatch(session, settings, job, host, phase, should_stop, note)
        note(f"{phase.name}: done in {time.monotonic() - started:.1f} s")
        return ActionResult(True, result)
    except deploy.BootTimeout as exc:
        # The boot ISO stops being served when the wait ends: a second wait on this boot is only
        # another phase timeout spent. The job fails, and a new job boots the host again.
        return ActionResult(False, {}, exc.detail, exc.code)
    except DomainError as exc:
        return ActionResult(False, {}, f"{exc.detail}" + (f" ({exc.hint})" if exc.hint else ""), exc.code,
                            retry_can_help=exc.code == UNREACHABLE)
    finally:
        if phase.action == "ramdisk_wait":
            stop_serving(job.id or 0)


def _dispatch(session: Session, settings: Settings, job: Job, host: Host, phase: Phase,
              should_stop: Callable[[], bool], note: Callable[[str], None]) -> dict[str, Any]:
    action = phase.action
    if action == "bmc_check":
        return deploy.bmc_check(session, settings, host)
    if action == "power_off":
        return {"power": deploy.power_off(settings, host)}
    if action == "ramdisk_boot":
        keys = deploy.job_keys(session, settings, job)
        url = _serve(settings, job, host, keys)
        note(f"{phase.name}: serving the job's boot ISO to the BMC")
        return {"ramdisk_boot": deploy.boot_ramdisk(settings, host, url)}
    if action == "ramdisk_wait":
        keys = deploy.job_keys(session, settings, job)
        took = deploy.wait_for_ssh(deploy.require_address(host), keys.ramdisk_host_key.public,
                                   what="the deploy ramdisk", timeout_s=phase.timeout_s, should_stop=should_stop,
                                   on_note=note)
        return {"ramdisk": {"answered_after_s": round(took, 1)}}
    if action == "disk_boot":
        keys = deploy.job_keys(session, settings, job)
        return {"disk_boot": deploy.boot_disk(session, settings, host, keys)}
    if action == "os_wait":
        assert host.host_key, "disk-boot pinned the deployed OS's key"
        took = deploy.wait_for_ssh(deploy.require_address(host), host.host_key, what="the deployed OS",
                                   timeout_s=phase.timeout_s, should_stop=should_stop, on_note=note)
        booted = deploy.booted_identity(settings, host)
        return {"booted": {**booted, "answered_after_s": round(took, 1)}}
    raise Unavailable("driver.unknown_action", f"no bare-metal action {action!r}", hint="a bug: report it")
