"""A host's BMC as the service uses it: enroll (pin the certificate, store the credentials encrypted,
record the system facts the BMC knows), read and change power state (audited, never with a secret),
and the boot override / virtual media calls the deploy flow drives. The Redfish calls themselves are
`bmc_client.py`; the rules (URLs, fingerprints, actions) are `core/bmc_rules.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from provisioner.core.bmc_rules import BootDevice, PowerAction, check_url, pinned_fingerprint
from provisioner.core.errors import Conflict
from provisioner.core.pipeline import BARE_METAL_DRIVER
from provisioner.core.timeutil import utcnow
from provisioner.services import audit
from provisioner.services.bmc_client import BmcCredentials, RedfishBmc
from provisioner.services.host_transitions import refuse_retired
from provisioner.store.config import Settings
from provisioner.store.models import Host
from provisioner.store.secrets import decrypt, encrypt

DRIVER = BARE_METAL_DRIVER


@dataclass(frozen=True)
class BmcEnrollment:
    url: str
    username: str
    password: str
    cert_pem: str | None = None
    cert_fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"BmcEnrollment(url={self.url!r}, username={self.username!r})"


def connect(given: BmcEnrollment) -> tuple[BmcCredentials, dict[str, Any]]:
    """Checks the URL, pins the certificate and asks the BMC for its system's facts: a BMC that cannot
    be reached, presents another certificate or refuses the credentials is refused before anything is
    stored."""
    creds = BmcCredentials(url=check_url(given.url), username=given.username, password=given.password,
                           cert_sha256=pinned_fingerprint(given.cert_pem, given.cert_fingerprint))
    return creds, RedfishBmc(creds).facts()


def attach(settings: Settings, host: Host, creds: BmcCredentials, facts: dict[str, Any]) -> None:
    """Stores the BMC on the host: URL, pinned fingerprint, credentials encrypted, facts as hardware."""
    host.driver = DRIVER
    host.bmc_url = creds.url
    host.bmc_cert_sha256 = creds.cert_sha256
    host.bmc_credential_ciphertext = encrypt(
        settings, json.dumps({"username": creds.username, "password": creds.password}))
    host.hardware = dict(facts)


def credentials(settings: Settings, host: Host) -> BmcCredentials:
    if not (host.bmc_url and host.bmc_cert_sha256 and host.bmc_credential_ciphertext):
        raise Conflict("host.no_bmc", f"host {host.name} has no BMC (driver {host.driver})",
                       hint="only hosts enrolled by their BMC (driver redfish) have power control")
    secret = json.loads(decrypt(settings, host.bmc_credential_ciphertext))
    return BmcCredentials(url=host.bmc_url, username=secret["username"], password=secret["password"],
                          cert_sha256=host.bmc_cert_sha256)


def client(settings: Settings, host: Host) -> RedfishBmc:
    return RedfishBmc(credentials(settings, host))


def view(host: Host) -> dict[str, Any]:
    """What may be shown of a host's BMC (no credentials)."""
    return {"bmc_url": host.bmc_url, "bmc_cert_sha256": host.bmc_cert_sha256,
            "bmc_credential": "stored" if host.bmc_credential_ciphertext else "none"}


def power_state(settings: Settings, host: Host) -> str:
    return client(settings, host).power_state()


def set_power(session: Session, settings: Settings, host: Host, action: PowerAction, *, actor_id: int | None,
              actor_name: str, request_id: str | None = None, reason: str = "") -> str:
    """Asks the BMC for the action and audits it (the caller commits); returns the state after."""
    refuse_retired(host)
    bmc = client(settings, host)
    before = bmc.power_state()
    after = bmc.power(action)
    host.updated_at = utcnow()
    session.add(host)
    audit.record(session, actor_id=actor_id, actor_name=actor_name, action="host.power", object_type="host",
                 object_id=host.id, tenant_id=host.tenant_id, before={"power_state": before},
                 after={"action": action.value, "power_state": after, "bmc_url": host.bmc_url, "reason": reason},
                 request_id=request_id)
    return after


def boot_from(settings: Settings, host: Host, device: BootDevice, *, media_url: str | None = None,
              bmc: RedfishBmc | None = None) -> str:
    """For the deploy flow: insert media_url (cd) and set the boot override; returns the BMC's target.
    `bmc`: the caller's client (its connection), else a new one.

    The override is asked Once; a BMC that keeps it (sushy-tools' libvirt driver) boots the device
    again until the caller sets hdd back, which it must do before the reboot into the deployed OS."""
    bmc = bmc or client(settings, host)
    if device == BootDevice.cd and media_url:
        bmc.eject_media()
        bmc.insert_media(media_url)
    return bmc.boot_override(device)
