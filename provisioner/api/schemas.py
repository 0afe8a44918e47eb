"""Request and response bodies. Inputs forbid unknown fields: a typo is an error, not a silent no-op."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from provisioner.api.bounds import MAX_CONSTRAINT_LABELS, MAX_HOST_LABELS, MAX_POOLS, BodyId, QuotaCount
from provisioner.core.host_keys import FINGERPRINT_PATTERN
from provisioner.core.permissions import Role
from provisioner.core.timeutil import iso

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


def wants_number(annotation: object) -> bool:
    """True for an int/float field (optional or not); bool is an int subclass but not a number here."""
    if annotation in (int, float):
        return True
    args = get_args(annotation)
    return bool(args) and bool not in args and any(a in (int, float) for a in args)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, v: object, info: ValidationInfo) -> object:
        # JSON Schema's integer admits 954.0 but not true, and pydantic's lax int takes both: a
        # number field must refuse booleans itself, or `"count": true` would mean 1.
        if isinstance(v, bool) and info.field_name and wants_number(cls.model_fields[info.field_name].annotation):
            raise ValueError("must be a number, not a boolean")
        return v


# Times go out as ISO 8601 UTC with milliseconds and "Z". Typed per field: a serializer on every
# field ("*") ran Python code for each value of each object and was a third of a job list's cost.
Timestamp = Annotated[datetime, PlainSerializer(iso, return_type=str, when_used="json")]


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TenantIn(Strict):
    name: Name
    quota: dict[Name, QuotaCount] = Field(
        default_factory=dict, max_length=MAX_POOLS, description="max hosts at once per pool")


class TenantOut(Out):
    id: int
    name: str
    quota: dict
    created_at: Timestamp


class UserIn(Strict):
    name: Name
    role: Role
    tenant_id: BodyId | None = Field(default=None, description="required for customer and imager")


class UserOut(Out):
    id: int
    name: str
    role: str
    tenant_id: int | None
    active: bool
    created_at: Timestamp


class TokenIn(Strict):
    name: str = Field(default="", max_length=64)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenOut(Out):
    id: int
    token_id: str
    user_id: int
    name: str
    created_at: Timestamp
    expires_at: Timestamp | None
    token: str | None = Field(default=None, description="shown once, at creation; stored hashed")


# Strings are stripped before they are checked (Strict), so the pattern itself bounds the length and
# ends on a non-space: stripping can then never turn a key the description accepts into one refused.
SSH_PUBLIC_KEY_PATTERN = r"^(?:ssh|ecdsa)-[^\n\x00]{14,}[^\s\x00]$"

# An IP literal (v4, or v6 without a zone) or an RFC 1123 host name: anything else cannot be dialled.
ADDRESS_PATTERN = (r"^(?:[0-9A-Fa-f:.]+|(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?)$")


# A BMC secret is kept byte for byte (not stripped); the pattern only refuses NUL.
BmcSecret = Annotated[str, StringConstraints(strip_whitespace=False)]


class BmcIn(Strict):
    url: str = Field(min_length=1, max_length=255, pattern=r"^[^\s\x00]+$",
                     description="the BMC's base URL, https://HOST[:PORT] (plain http is refused: the password "
                     "goes with every request)")
    username: BmcSecret = Field(min_length=1, max_length=64, pattern=r"^[^\x00]+$",
                                description="stored encrypted with the password, never returned")
    password: BmcSecret = Field(min_length=1, max_length=1024, pattern=r"^[^\x00]+$",
                                description="byte for byte; stored encrypted, never returned, logged or audited")
    cert_pem: BmcSecret | None = Field(
        default=None, max_length=16384, pattern=r"^[^\x00]*-----BEGIN CERTIFICATE-----[^\x00]*$",
        description="the BMC's TLS certificate (PEM): its SHA-256 fingerprint is pinned")
    cert_fingerprint: str | None = Field(
        default=None, max_length=128, pattern=r"^[^\x00]+$",
        description="or the certificate's SHA-256 fingerprint as `openssl x509 -noout -fingerprint -sha256` "
        "prints it. One of the two is required: an unpinned BMC is not trusted")


class HostIn(Strict):
    name: Name
    address: str | None = Field(default=None, min_length=1, max_length=253, pattern=ADDRESS_PATTERN,
                                description="an IPv4/IPv6 address or a DNS name; required unless `bmc` is given "
                                "(a bare-metal host gets its address when it is deployed)")
    port: int = Field(default=22, ge=1, le=65535)
    ssh_user: str = Field(default="root", min_length=1, max_length=64, pattern=r"^[a-z_][a-z0-9_-]*$")
    # A secret is stored byte for byte: stripping the final newline makes OpenSSH keys unreadable.
    ssh_private_key: Annotated[str, StringConstraints(strip_whitespace=False)] | None = Field(
        default=None, max_length=16384, pattern=r"^[^\x00]*PRIVATE KEY-----[^\x00]*$",
        description="PEM/OpenSSH private key, byte for byte; stored encrypted, never returned")
    ssh_key_path: str | None = Field(default=None, max_length=1024,
                                     description="path of a key file on the worker machines")
    connection: Literal["ssh", "local"] = "ssh"
    labels: dict[Name, Annotated[str, Field(max_length=128)]] = Field(default_factory=dict, max_length=MAX_HOST_LABELS)
    pool: Name = "default"
    commission: bool | None = Field(default=None, description="start a commission job right away (default for "
                                    "ssh hosts; a host enrolled by its BMC only when true: its commission re-reads "
                                    "the BMC's facts and powers it off, and makes it available)")
    bmc: BmcIn | None = Field(default=None, description="enroll the host by its Redfish BMC (driver redfish): the "
                              "BMC is reached over https with the pinned certificate, its system facts (CPUs, "
                              "memory, serial, MACs) are recorded; no SSH key is needed. `address` is where its "
                              "NIC is reached on the provisioning network (its DHCP reservation): the deploy "
                              "ramdisk and the deployed OS answer there")
    console_log: str | None = Field(
        default=None, min_length=2, max_length=1024, pattern=r"^/[^\x00]*$",
        description="the host's serial console log on the worker machines (written by a console server: "
        "conserver, an `ipmitool sol` logger, the lab's libvirt), a file inside PROVISIONER_CONSOLE_LOG_DIR "
        "(else 422 host.console_log_outside). When its deploy ramdisk or deployed OS never answers "
        "(boot.timeout), the log's end is attached to the job's events")
    host_key_fingerprint: str | None = Field(
        default=None, pattern=FINGERPRINT_PATTERN, max_length=128,
        description="the SHA256 fingerprint the host's SSH host key must have (as `ssh-keygen -lf` prints it); "
        "the service reads the key from the host and refuses the enrollment (409 host.key_mismatch) when it "
        "differs. Without it the key read at enrollment is pinned as it is")

    @field_validator("ssh_private_key")
    @classmethod
    def _pem(cls, v: str | None) -> str | None:
        if v is not None and "PRIVATE KEY-----" not in v:
            raise ValueError("must be a PEM/OpenSSH private key (-----BEGIN ... PRIVATE KEY-----)")
        return v


class HostOut(Out):
    id: int
    name: str
    address: str
    port: int
    ssh_user: str
    connection: str
    credential: str = Field(description="'stored' (encrypted), 'path', or 'none'; the key is never returned")
    host_key: str | None = Field(description="the pinned SSH host key ('TYPE BASE64'); every job connects "
                                 "with strict checking against it")
    host_key_fingerprint: str | None = Field(description="its SHA256 fingerprint, as `ssh-keygen -lf` prints it")
    host_key_pinned_at: Timestamp | None
    bmc_url: str | None = Field(default=None, description="the BMC of a redfish host")
    bmc_cert_sha256: str | None = Field(default=None, description="the pinned SHA-256 of the BMC's TLS certificate")
    bmc_credential: str = Field(default="none", description="'stored' (encrypted) or 'none'; never returned")
    console_log: str | None = Field(default=None, description="the host's serial console log on the workers")
    labels: dict
    pool: str
    driver: str
    state: str
    hardware: dict
    results: dict
    tenant_id: int | None
    request_id: int | None
    last_restore_at: Timestamp | None
    last_restore_passed: bool | None
    compliance: dict
    created_at: Timestamp
    updated_at: Timestamp
    waivers: list[dict] = Field(
        default_factory=list,
        description="approved, unexpired waivers the host runs under (its own, its request's, its tenant's); "
                    "shown on GET /v1/hosts/{id}")


class RepinIn(Strict):
    fingerprint: str | None = Field(
        default=None, pattern=FINGERPRINT_PATTERN, max_length=128,
        description="the SHA256 fingerprint the host's new key must have; refused (409 host.key_mismatch) "
        "when the host presents another one. Check it on the host's console before you trust it")


class PowerIn(Strict):
    action: Literal["on", "off", "reset"] = Field(
        description="on; off (forced: a host without an OS ignores a graceful shutdown); reset (forced restart)")
    reason: str = Field(default="", max_length=256, pattern=r"^[^\x00]*$", description="kept in the audit log")


class PowerOut(Out):
    host_id: int
    power_state: str = Field(description="as the BMC reports it: On, Off, PoweringOn, PoweringOff, ...")
    bmc_url: str


class HostStateIn(Strict):
    state: Literal["maintenance", "available", "retired"]
    reason: str = Field(default="", max_length=500)


class ConstraintsIn(Strict):
    labels: dict[Name, Annotated[str, Field(max_length=128)]] = Field(default_factory=dict,
                                                                      max_length=MAX_CONSTRAINT_LABELS)
    min_cpus: int = Field(default=0, ge=0, le=4096)
    min_memory_mb: int = Field(default=0, ge=0, le=64 * 1024 * 1024)
    min_disks: int = Field(default=0, ge=0, le=256)


class PortIn(Strict):
    port: int = Field(ge=1, le=65535)
    proto: Literal["tcp", "udp"] = "tcp"
    sources: list[Annotated[str, Field(max_length=64, json_schema_extra={"format": "cidr"})]] = Field(
        default_factory=lambda: ["0.0.0.0/0"], min_length=1, max_length=32,
        description="CIDR networks (IPv4 or IPv6; host bits are ignored)")

    @field_validator("sources")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for s in v:
            try:
                ipaddress.ip_network(s, strict=False)
            except ValueError as exc:
                raise ValueError(f"{s!r} is not a CIDR network") from exc
        return v


class BackupIn(Strict):
    enabled: bool = True
    paths: list[Annotated[str, Field(min_length=1, max_length=512, pattern=r"^/[^\x00]*$")]] = Field(
        default_factory=lambda: ["/etc", "/srv/data"], min_length=1, max_length=32)
    retention_days: int = Field(default=14, ge=1, le=3650)
    schedule: str = Field(default="daily", max_length=32)


class RequestIn(Strict):
    image: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="a catalogue image you may request (GET /v1/images), written onto the host; an unknown "
                    "name is refused with 422 image.unknown listing the images you can request. Leave it out "
                    "to keep the host's installed OS (no image is written)")
    count: int = Field(default=1, ge=1, le=100)
    pool: Name = "default"
    constraints: ConstraintsIn = Field(default_factory=ConstraintsIn)
    raid_level: Literal["0", "1", "5", "6", "10"] | None = None
    firewall_ports: list[PortIn] = Field(default_factory=list, max_length=64)
    backup: BackupIn = Field(default_factory=BackupIn)
    ssh_public_key: str = Field(max_length=8192, pattern=SSH_PUBLIC_KEY_PATTERN,
                                description="installed for the customer user at handover")
    customer_user: str = Field(default="customer", max_length=32, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    lease_hours: int | None = Field(default=None, ge=1, le=24 * 365)


class ReimageIn(Strict):
    image: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
                       description="a catalogue image you may request (GET /v1/images); it becomes the request's "
                                   "image")
    keep_data: StrictBool = Field(default=True, description="keep the data array and its files: only the root "
                                  "disk is wiped and written, RAID assembles the existing array; false wipes every "
                                  "disk and creates a new array")
    host_id: BodyId | None = Field(default=None, description="reimage only this host of the request; left out: "
                                   "every host of the request")


class RequestOut(Out):
    id: int
    tenant_id: int
    requested_by: int
    image: str | None = Field(description="the catalogue image written onto the hosts; null: none, "
                                          "the hosts keep their installed OS")
    count: int
    pool: str
    constraints: dict
    params: dict
    status: str
    accepted_at: Timestamp
    ready_at: Timestamp | None
    released_at: Timestamp | None
    lease_expires_at: Timestamp | None
    host_ids: list[int] = Field(default_factory=list)
    job_ids: list[int] = Field(default_factory=list)


class JobOut(Out):
    id: int
    kind: str
    host_id: int
    request_id: int | None
    tenant_id: int | None
    status: str
    attempts: int
    max_attempts: int
    accepted_at: Timestamp
    queued_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    cancel_requested: bool
    current_phase: str | None
    phases: list
    error: str | None
    error_code: str | None = Field(default=None, description="machine-readable failure, e.g. image_corrupt, "
                                   "phase_timeout, host_unreachable")
    event_count: int
    sli: dict
    slo_target_s: float | None
    slo_met: bool | None


class EventOut(Out):
    seq: int
    phase: str
    event: str
    host: str | None
    task: str | None
    status: str | None
    duration_s: float | None
    stdout: str | None
    created_at: Timestamp


class AuditOut(Out):
    id: int
    at: Timestamp
    actor_id: int | None
    actor_name: str
    action: str
    object_type: str
    object_id: str | None
    tenant_id: int | None
    before: dict | None
    after: dict | None
    request_id: str | None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="matching items, counted up to 1,000 (see total_exact)")
    total_exact: bool = Field(True, description="false when more than `total` items match")
    limit: int
    offset: int
