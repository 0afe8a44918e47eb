"""What a phase gets besides the request's parameters: the host's SSH key, the request's backup
block with the backup store's credentials (only for the phases that use them), a fresh image
download token (only for the image phase), and whether a phase is switched off by the request."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sqlmodel import Session

from provisioner.core import backup_plan
from provisioner.core.errors import Unavailable
from provisioner.core.timeutil import utcnow
from provisioner.imaging.serving import image_spec_for, image_target_for
from provisioner.services import host_waivers
from provisioner.services.admission import load_policy
from provisioner.store import secrets
from provisioner.store.config import Settings
from provisioner.store.models import Host, HostRequest, Job

# The job kinds whose phases talk to the backup store.
BACKUP_KINDS = ("provision", "reimage", "compliance")
# The only phases whose playbooks open the backup repository: nothing else gets its password or key.
BACKUP_PHASES = frozenset({"backup", "restore-verify", "compliance"})
# The phases a request's `backup.enabled=false` switches off.
BACKUP_ONLY_PHASES = frozenset({"backup", "restore-verify"})


class BackupStoreUnpinned(Unavailable):
    def __init__(self, path: str) -> None:
        super().__init__("backup.host_key_missing",
                         f"the backup store description {path} has no known_hosts_line: its SSH host key "
                         "would not be checked", hint="add \"known_hosts_line\": \"[host]:port TYPE BASE64\" "
                         "(the store's host key) to the file named by PROVISIONER_BACKUP_STORE")


def ensure_backup_secret(session: Session, settings: Settings, job: Job, host: Host) -> None:
    """One restic password per host, made before any phase needs it and kept encrypted."""
    if job.kind in ("provision", "reimage") and not host.backup_secret_ciphertext:
        host.backup_secret_ciphertext = secrets.encrypt(settings, secrets.new_token()[0])
        session.add(host)
        session.commit()


def ssh_key(settings: Settings, host: Host) -> str | None:
    return secrets.decrypt(settings, host.credential_ciphertext) if host.credential_ciphertext else None


def backup_block(session: Session, job: Job, host: Host) -> dict[str, Any] | None:
    """The backup block of the request the host serves (a compliance job has no request of its own)."""
    request_id = job.request_id or host.request_id
    req = session.get(HostRequest, request_id) if request_id else None
    block = (req.params or {}).get("backup") if req is not None else None
    return block if isinstance(block, dict) else None


def backup_inputs(session: Session, settings: Settings, job: Job, host: Host, phase: str) -> dict[str, Any] | None:
    """`provisioner_backup` for one phase: the request's paths, retention and schedule over the
    store's credentials; None for phases that do not touch the backup (they never see the secrets)
    and for hosts whose request disabled backups."""
    if phase not in BACKUP_PHASES:
        return None
    block = backup_block(session, job, host)
    planned = backup_plan.plan(block) if block is not None else {}
    if planned is None:
        return None
    store = backup_config(settings, job, host)
    if store is None and not planned:
        return None
    return {**(store or {}), **planned}


def skip_reason(session: Session, job: Job, host: Host, phase: str) -> str | None:
    """Why a phase must not run for this host, or None. Only the backup phases can be switched off,
    and only by the request's `backup.enabled=false`, which admission let through either because the
    policy does not require backups or because a waiver of backup.required covers the request."""
    if phase not in BACKUP_ONLY_PHASES:
        return None
    block = backup_block(session, job, host)
    if block is None or block.get("enabled", True):
        return None
    waivers = host_waivers.active_rows(session, host, utcnow(), code="backup.required")
    if waivers:
        return "backups disabled by the request under " + host_waivers.as_reason(waivers[0])
    if not load_policy(session).backup_required:
        return "backups disabled by the request; the policy does not require them"
    # The waiver that admitted the request is gone: skip anyway (nothing was asked to be backed
    # up), and the handover gate refuses the host with backup.required.
    return "backups disabled by the request; no waiver of backup.required covers it any more"


def backup_config(settings: Settings, job: Job, host: Host) -> dict[str, Any] | None:
    """The restic repository, password, SFTP key and the store's pinned host key for this host, or
    None (no store configured). BackupStoreUnpinned when the store's host key is not known."""
    path = settings.backup_store
    if job.kind not in BACKUP_KINDS or not path or not Path(path).exists():
        return None
    store = json.loads(Path(path).read_text())
    key = Path(store["private_key"]).read_text()
    password = secrets.decrypt(settings, host.backup_secret_ciphertext) if host.backup_secret_ciphertext else ""
    known = store.get("known_hosts_line") or ""
    if " " not in known.strip():
        # Without it the hosts would trust whatever answers at the store's address on first use and
        # push the restic password and the store's key to it.
        raise BackupStoreUnpinned(str(path))
    # The repository is named after the host and its password: a re-enrolled host (new password)
    # gets a fresh repository instead of failing to open its predecessor's.
    repo = f"{host.name}-{hashlib.sha256(password.encode()).hexdigest()[:12]}"
    return {
        "repository": f"sftp:{store['user']}@{store['host']}:{store['base_path'].rstrip('/')}/{repo}",
        "port": store.get("port", 22),
        "password": password,
        "sftp_private_key": key,
        # The hosts check the store's host key strictly ("[host]:port keytype key" -> "keytype key").
        "host_key": known.strip().split(" ", 1)[1],
    }


def image_params(session: Session, settings: Settings, job: Job, host: Host, req: HostRequest | None,
                 params: dict[str, Any]) -> dict[str, Any]:
    """The image phase's parameters: a fresh, job-scoped download token each run. Raises
    ImageUnavailable when the catalogue image must not be written; a request without an image
    (and an old one naming a name outside the catalogue) gets no spec and the phase skips itself."""
    spec = image_spec_for(session, settings, job, req.image if req else None, image_target_for(host))
    return {**params, "image_spec": spec}
