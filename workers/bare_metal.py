"""The driver actions of a host enrolled by its BMC (driver `redfish`): boot the deploy ramdisk from a
per-job ISO this worker serves to the BMC, wait for the ramdisk and for the deployed OS to answer SSH
with the keys the service generated, boot the disk, power off, re-read the BMC's facts.

The per-job ISO holds the ramdisk's private host key: it lives in this worker's private directory
(0600) only while the ramdisk boots, is served at an unguessable URL by `workers.media_server`, and
is deleted when the ramdisk answered (or the job ended).
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
from provisioner.core.pipeline import Phase
from provisioner.imaging.boot_iso import write_boot_iso_file
from provisioner.services import deploy
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
    timed_out: bool = False


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
        return ActionResult(False, {}, exc.detail, exc.code, timed_out=False)
    except DomainError as exc:
        return ActionResult(False, {}, f"{exc.detail}" + (f" ({exc.hint})" if exc.hint else ""), exc.code)
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
