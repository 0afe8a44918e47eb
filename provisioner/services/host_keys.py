"""Pinning SSH host keys: fetch the key a host presents (paramiko), pin it at enrollment or when the
Vagrant driver creates the VM, check it before a job touches the host, re-pin on an operator's
audited call. The rules (fingerprints, mismatches) are `core/host_keys.py`.
"""

from __future__ import annotations

import io
import socket

import paramiko
from sqlmodel import Session

from provisioner.core.errors import Conflict, Invalid
from provisioner.core.host_keys import KEY_CHANGED, KEY_UNPINNED, canonical, expect, fingerprint, known_hosts_line
from provisioner.core.timeutil import utcnow
from provisioner.services import audit
from provisioner.services.host_transitions import refuse_retired
from provisioner.store.models import Host

FETCH_TIMEOUT_S = 15.0


class HostUnreachable(Invalid):
    # 422, not 503: the request names a host the service cannot verify, and nothing was written; the
    # caller decides whether to retry once the host answers (a 5xx would say the service is at fault).
    def __init__(self, address: str, port: int, why: str) -> None:
        super().__init__("host.unreachable", f"could not read the SSH host key of {address}:{port}: {why}",
                         hint="check the address and port and that sshd runs; the key is read before "
                              "anything is sent to the host")


def fetch_host_key(address: str, port: int, timeout_s: float = FETCH_TIMEOUT_S) -> str:
    """The host key ("TYPE BASE64") the server at address:port proves it holds in a key exchange.

    No authentication happens: nothing secret is sent before the key is known."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout_s)
    except (OSError, UnicodeError, ValueError) as exc:  # a name IDNA cannot encode is as unreachable
        raise HostUnreachable(address, port, getattr(exc, "strerror", None) or str(exc)) from None
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout_s
        transport.handshake_timeout = timeout_s
        transport.start_client(timeout=timeout_s)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise HostUnreachable(address, port, str(exc) or type(exc).__name__) from None
    finally:
        transport.close()


def pinned_client(address: str, port: int, host_key: str | None) -> paramiko.SSHClient:
    """An SSH client that trusts exactly the pinned key for address:port (the known_hosts line the
    phases' ansible runs get), and refuses any other. ValueError without a readable pin."""
    if not host_key:
        raise ValueError("the host has no pinned SSH host key")
    line = known_hosts_line(address, port, host_key).strip()
    entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
    if entry is None or entry.key is None:
        raise ValueError("the pinned SSH host key cannot be read")
    client = paramiko.SSHClient()
    for name in entry.hostnames:
        client.get_host_keys().add(name, entry.key.get_name(), entry.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def load_private_key(text: str) -> paramiko.PKey:
    """A private key from its text, in memory (the key is never written anywhere)."""
    last: Exception | None = None
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError) as exc:
            last = exc
    raise ValueError(f"cannot load the host's SSH key: {last}")


def host_key_view(host: Host) -> dict[str, str | None]:
    return {"host_key": host.host_key, "host_key_fingerprint": fingerprint(host.host_key) if host.host_key else None}


def fetch_for_enrollment(name: str, address: str, port: int, expected_fingerprint: str | None) -> str:
    """The key to pin for a host being enrolled; HostKeyMismatch when it is not the expected one."""
    key = canonical(fetch_host_key(address, port))
    expect(name, key, expected_fingerprint)
    return key


def pin(host: Host, key: str) -> None:
    host.host_key = canonical(key)
    host.host_key_pinned_at = utcnow()


def repin(session: Session, host: Host, expected_fingerprint: str | None, *, actor_id: int | None,
          actor_name: str, request_id: str | None = None) -> None:
    """Fetch the host's current key and pin it (audited). The host's state is left alone: a host a
    changed key took out of the pool comes back through a commission job, which checks the new pin."""
    if host.connection != "ssh":
        raise Conflict("host.not_ssh", f"host {host.name} is reached with connection={host.connection}, not ssh",
                       hint="only ssh hosts have a host key to pin")
    refuse_retired(host)
    key = canonical(fetch_host_key(host.address, host.port))
    got = expect(host.name, key, expected_fingerprint)
    before = host_key_view(host)
    pin(host, key)
    session.add(host)
    audit.record(session, actor_id=actor_id, actor_name=actor_name, action="host.repin", object_type="host",
                 object_id=host.id, tenant_id=host.tenant_id, before=before,
                 after={"host_key_fingerprint": got, "expected": expected_fingerprint}, request_id=request_id)


def pin_created_vm(session: Session, host: Host, *, actor: str, job_id: int | None) -> None:
    """A VM the service just created is pinned at its first contact (audited); the caller commits."""
    key = canonical(fetch_host_key(host.address, host.port))
    pin(host, key)
    session.add(host)
    audit.record(session, actor_id=None, actor_name=actor, action="host.pin", object_type="host",
                 object_id=host.id, tenant_id=host.tenant_id,
                 after={"host_key_fingerprint": fingerprint(key), "job_id": job_id, "driver": host.driver})


def verify(host: Host) -> tuple[str | None, str | None]:
    """(error code, presented key) before a job talks to the host: KEY_UNPINNED, KEY_CHANGED or None.

    Raises HostUnreachable when the key cannot be read: the job must not go on unchecked, as ssh
    would still reuse a connection master opened before the key changed."""
    if host.connection != "ssh":
        return None, None
    if not host.host_key:
        return KEY_UNPINNED, None
    presented = canonical(fetch_host_key(host.address, host.port))
    return (None if presented == host.host_key else KEY_CHANGED), presented


def record_key_changed(session: Session, host: Host, presented: str | None, *, actor: str,
                       job_id: int | None) -> None:
    """Audit a refused key (the job's settlement moves the host); the caller commits."""
    audit.record(session, actor_id=None, actor_name=actor, action="host.key_changed", object_type="host",
                 object_id=host.id, tenant_id=host.tenant_id, before=host_key_view(host),
                 after={"presented_fingerprint": fingerprint(presented) if presented else None, "job_id": job_id})
