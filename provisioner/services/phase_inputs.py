"""What a phase gets besides the request's parameters: the host's SSH key, the backup store's
credentials (only for the phases that use them), and a fresh image download token."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sqlmodel import Session

from provisioner.core.errors import Unavailable
from provisioner.imaging.serving import image_spec_for, image_target_for
from provisioner.store import secrets
from provisioner.store.config import Settings
from provisioner.store.models import Host, HostRequest, Job

# The job kinds whose phases talk to the backup store.
BACKUP_KINDS = ("provision", "compliance")


class BackupStoreUnpinned(Unavailable):
    def __init__(self, path: str) -> None:
        super().__init__("backup.host_key_missing",
                         f"the backup store description {path} has no known_hosts_line: its SSH host key "
                         "would not be checked", hint="add \"known_hosts_line\": \"[host]:port TYPE BASE64\" "
                         "(the store's host key) to the file named by PROVISIONER_BACKUP_STORE")


def ensure_backup_secret(session: Session, settings: Settings, job: Job, host: Host) -> None:
    """One restic password per host, made before any phase needs it and kept encrypted."""
    if job.kind == "provision" and not host.backup_secret_ciphertext:
        host.backup_secret_ciphertext = secrets.encrypt(settings, secrets.new_token()[0])
        session.add(host)
        session.commit()


def ssh_key(settings: Settings, host: Host) -> str | None:
    return secrets.decrypt(settings, host.credential_ciphertext) if host.credential_ciphertext else None


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
    ImageUnavailable when the catalogue image must not be written; names outside the catalogue
    get no spec and the phase skips itself."""
    spec = image_spec_for(session, settings, job, req.image if req else None, image_target_for(host))
    return {**params, "image_spec": spec}
