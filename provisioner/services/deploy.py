"""A bare-metal host's deploy, as the service sees it: the keys one job generates (the ramdisk's SSH
host key and login key, the deployed OS's host key; kept encrypted on the job so a retried job finds
them), the configuration the ramdisk and the deployed OS get (``core/host_config.py``), the BMC steps
(boot the ramdisk from a virtual CD, boot the disk, power off), and waiting for a host to answer SSH
with exactly the key the service pinned.

The worker runs these (``workers/bare_metal.py``); the ISO it serves to the BMC and the playbooks that
run in the ramdisk are not here.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from sqlmodel import Session

from provisioner.core.bmc_rules import BootDevice, PowerAction
from provisioner.core.errors import Conflict, DomainError, Unavailable
from provisioner.core.host_config import ConfigFile, HostConfig, HostKeyPair, bundle, check_hostname, config_files
from provisioner.core.host_keys import canonical, fingerprint
from provisioner.core.timeutil import utcnow
from provisioner.imaging.serving import root_disk_target
from provisioner.services import bmc, host_keys
from provisioner.services.host_key_gen import new_host_key
from provisioner.store import secrets
from provisioner.store.config import Settings
from provisioner.store.models import Host, Job

DRIVER = bmc.DRIVER
SSH_PORT = 22
PROBE_EVERY_S = 3.0
IDENTITY_FILE = "/etc/provisioner-image.json"
BOOT_TIMEOUT = "boot.timeout"


class BootTimeout(DomainError):
    def __init__(self, what: str, address: str, waited_s: float, last: str) -> None:
        super().__init__(BOOT_TIMEOUT, f"{what} did not answer SSH at {address} with its pinned key within "
                         f"{waited_s:.0f} s (last seen: {last})",
                         hint="look at the host's console (the BMC's or the lab's serial log); the phase "
                              "timeout is PROVISIONER_PHASE_TIMEOUTS")


class NoAddress(Conflict):
    def __init__(self, host: Host) -> None:
        super().__init__("host.address_required", f"host {host.name} has no address to reach its ramdisk and OS at",
                         hint="enroll it with the address its NIC gets on the provisioning network "
                              "(a DHCP reservation for its MAC)")


@dataclass(frozen=True)
class DeployKeys:
    """One job's keys. The login key is an SSH client key: its private half logs in to the ramdisk."""

    ramdisk_host_key: HostKeyPair
    ramdisk_login_key: HostKeyPair
    os_host_key: HostKeyPair

    def __repr__(self) -> str:
        return (f"DeployKeys(ramdisk={fingerprint(self.ramdisk_host_key.public)}, "
                f"os={fingerprint(self.os_host_key.public)})")


def _pair_doc(pair: HostKeyPair) -> dict[str, str]:
    return {"private_b64": base64.b64encode(pair.private).decode(), "public": pair.public}


def _pair(doc: dict[str, str]) -> HostKeyPair:
    return HostKeyPair(private=base64.b64decode(doc["private_b64"]), public=doc["public"])


def job_keys(session: Session, settings: Settings, job: Job) -> DeployKeys:
    """The job's keys: made and stored (encrypted, committed) the first time, read back afterwards."""
    if job.deploy_secret_ciphertext:
        doc = json.loads(secrets.decrypt(settings, job.deploy_secret_ciphertext))
        return DeployKeys(*(_pair(doc[k]) for k in ("ramdisk_host_key", "ramdisk_login_key", "os_host_key")))
    keys = DeployKeys(new_host_key(f"provisioner-ramdisk-job-{job.id}"), new_host_key(f"provisioner-job-{job.id}"),
                      new_host_key(f"provisioner-host-job-{job.id}"))
    job.deploy_secret_ciphertext = secrets.encrypt(settings, json.dumps(
        {"ramdisk_host_key": _pair_doc(keys.ramdisk_host_key), "ramdisk_login_key": _pair_doc(keys.ramdisk_login_key),
         "os_host_key": _pair_doc(keys.os_host_key)}))
    session.add(job)
    session.commit()
    return keys


def management_public_key(session: Session, settings: Settings, host: Host) -> str:
    """The public half of the key the service logs in to the host's OS with. A host enrolled by its
    BMC brought none: one is made the first time (ed25519, stored encrypted like an enrolled key)."""
    if not host.credential_ciphertext and not host.credential_path:
        pair = new_host_key(f"provisioner-{host.name}")
        host.credential_ciphertext = secrets.encrypt(settings, pair.private.decode())
        session.add(host)
        session.commit()
    if host.credential_ciphertext:
        private = secrets.decrypt(settings, host.credential_ciphertext).encode()
    else:
        with open(host.credential_path or "", "rb") as f:
            private = f.read()
    key = serialization.load_ssh_private_key(private, password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _hostname(host: Host) -> str:
    try:
        return check_hostname(host.name)
    except DomainError:
        return f"host-{host.id}"


def ramdisk_files(host: Host, keys: DeployKeys) -> list[ConfigFile]:
    """The ramdisk's per-job configuration: the job's login key may log in; it presents the job's host key."""
    return config_files(HostConfig(hostname=_hostname(host), authorized_keys=(keys.ramdisk_login_key.public,),
                                   host_keys=(keys.ramdisk_host_key,)))


def os_bundle(host: Host, keys: DeployKeys, management_key: str) -> bytes:
    """What the ramdisk writes into the deployed root: the host's name, the service's management key,
    the host key the service pins before the first boot, DHCP on every NIC."""
    return bundle(config_files(HostConfig(hostname=_hostname(host), authorized_keys=(management_key,),
                                          host_keys=(keys.os_host_key,))))


def ramdisk_params(session: Session, settings: Settings, job: Job, host: Host, phase: str) -> dict[str, Any]:
    """What a playbook in the ramdisk gets besides the request's parameters: the root disk the inspect
    phase chose (wipe, image, configure, clean) and, for configure, the bundle for the new root."""
    if phase == "inspect":
        return {}
    root = root_disk_target(host)
    if root is None and phase != "clean":
        why = (host.hardware or {}).get("root_disk_error") or {}
        raise Conflict("deploy.no_root_disk", f"host {host.name} has no root disk: {why.get('detail', 'none chosen')}",
                       hint=why.get("hint") or "the inspect phase chooses it; re-run the job")
    if phase != "configure":
        return {"prov_root_disk": root} if root else {}
    keys = job_keys(session, settings, job)
    doc = os_bundle(host, keys, management_public_key(session, settings, host))
    return {"prov_root_disk": root, "prov_config_bundle_b64": base64.b64encode(doc).decode()}


def require_address(host: Host) -> str:
    if not host.address:
        raise NoAddress(host)
    return host.address


def boot_ramdisk(settings: Settings, host: Host, media_url: str) -> dict[str, Any]:
    """Off, the job's ISO in the virtual CD, boot once from it, on. Off first: a host still running an
    OS would otherwise keep it until the next reset, and the CD applies at power-on."""
    require_address(host)
    client = bmc.client(settings, host)
    if client.power_state() != "Off":
        client.power(PowerAction.off)
    target = bmc.boot_from(settings, host, BootDevice.cd, media_url=media_url, bmc=client)
    state = client.power(PowerAction.on)
    return {"boot_target": target, "power_state": state}


def boot_disk(session: Session, settings: Settings, host: Host, keys: DeployKeys) -> dict[str, Any]:
    """Pin the deployed OS's host key, take the CD out, boot the disk from now on, restart."""
    host_keys.pin(host, keys.os_host_key.public)
    host.updated_at = utcnow()
    session.add(host)
    session.commit()
    client = bmc.client(settings, host)
    client.eject_media()
    # Continuous: a BMC that kept the CD override (sushy-tools' libvirt driver ignores Once) boots the disk.
    target = client.boot_override(BootDevice.hdd, once=False)
    state = client.power(PowerAction.reset if client.power_state() == "On" else PowerAction.on)
    return {"boot_target": target, "power_state": state, "host_key_fingerprint": fingerprint(keys.os_host_key.public)}


def eject_media(settings: Settings, host: Host) -> None:
    """Takes whatever is in the host's virtual CD out (nothing happens when it is empty)."""
    bmc.client(settings, host).eject_media()


def power_off(settings: Settings, host: Host) -> dict[str, Any]:
    client = bmc.client(settings, host)
    client.eject_media()
    state = client.power_state()
    if state != "Off":
        state = client.power(PowerAction.off)
    return {"power_state": state}


def bmc_check(session: Session, settings: Settings, host: Host) -> dict[str, Any]:
    """Commission of a host enrolled by its BMC: its facts read again, and powered off (known state)."""
    client = bmc.client(settings, host)
    facts = client.facts()
    host.hardware = {**(host.hardware or {}), **facts}
    session.add(host)
    session.commit()
    return {"bmc": {"facts": facts, **power_off(settings, host)}}


def wait_for_ssh(address: str, expected_key: str, *, what: str, timeout_s: float,
                 should_stop: Callable[[], bool], on_note: Callable[[str], None]) -> float:
    """Seconds until address:22 presents expected_key in a key exchange (nothing is sent to it). Another
    key (the previous OS still up) or no answer: wait on. BootTimeout after timeout_s."""
    want = canonical(expected_key)
    t0 = time.monotonic()
    last = "nothing yet"
    while True:
        try:
            got = canonical(host_keys.fetch_host_key(address, SSH_PORT, timeout_s=5.0))
            if got == want:
                return time.monotonic() - t0
            seen = f"SSH answers with another host key ({fingerprint(got)})"
        except host_keys.HostUnreachable as exc:
            seen = exc.detail.split(": ", 1)[-1]
        if seen != last:
            on_note(f"{what}: {seen}")
            last = seen
        if should_stop():
            raise Unavailable("job.stopping", f"stopped while waiting for {what}")
        waited = time.monotonic() - t0
        if waited >= timeout_s:
            raise BootTimeout(what, address, waited, last)
        time.sleep(min(PROBE_EVERY_S, max(0.0, timeout_s - waited)))


def booted_identity(settings: Settings, host: Host) -> dict[str, Any]:
    """What the deployed OS says it booted: the image-identity file, the kernel command line, the root
    device, os-release. Read over SSH with the management key, the host key checked against the pin."""
    require_address(host)
    if not host.host_key:
        raise Conflict("host.key_unpinned", f"host {host.name} has no pinned host key", hint="deploy it first")
    client = host_keys.pinned_client(host.address, SSH_PORT, host.host_key)
    private = secrets.decrypt(settings, host.credential_ciphertext) if host.credential_ciphertext else None
    pkey = host_keys.load_private_key(private) if private else None
    try:
        client.connect(host.address, SSH_PORT, username=host.ssh_user or "root", pkey=pkey,
                       key_filename=None if pkey else host.credential_path, timeout=15, banner_timeout=15,
                       auth_timeout=15, look_for_keys=False, allow_agent=False)
        out: dict[str, Any] = {}
        for name, cmd in (("identity", f"cat {IDENTITY_FILE}"), ("cmdline", "cat /proc/cmdline"),
                          ("root", "findmnt -no SOURCE /"), ("os_release", "cat /etc/os-release")):
            _, stdout, _ = client.exec_command(cmd, timeout=30)
            out[name] = stdout.read().decode(errors="replace").strip()
        try:
            out["identity"] = json.loads(out["identity"])
        except json.JSONDecodeError:
            out["identity"] = None
        out["os_release"] = dict(line.split("=", 1) for line in out["os_release"].splitlines() if "=" in line)
        out["os_release"] = {k: v.strip('"') for k, v in out["os_release"].items()}
        return out
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise Unavailable("host.unreachable", f"could not read what host {host.name} booted: {exc}",
                          hint="the host answered with its pinned key a moment ago; retry the job") from None
    finally:
        client.close()

