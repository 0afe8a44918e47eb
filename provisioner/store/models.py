"""The database tables (SQLModel). State lives here; the broker only carries job ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from provisioner.core.timeutil import utcnow

# Documents the database queries into (allocation filters and ranks on host labels and hardware)
# are JSONB on PostgreSQL: json is re-parsed on every -> and made ranking 1,000 hosts cost ~14 ms.
QUERIED_JSON = JSON().with_variant(JSONB(), "postgresql")


def _json(default: Any = None, *, queried: bool = False) -> Any:
    factory = (lambda: dict(default)) if isinstance(default, dict) else (
        (lambda: list(default)) if isinstance(default, list) else (lambda: default))
    return Field(default_factory=factory, sa_column=Column(QUERIED_JSON if queried else JSON, nullable=True))


class Tenant(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    quota: dict = _json({})
    created_at: datetime = Field(default_factory=utcnow)


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    role: str = Field(max_length=16)
    tenant_id: int | None = Field(default=None, foreign_key="tenant.id", index=True)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    token_id: str = Field(index=True, unique=True, max_length=32)
    secret_hash: str = Field(max_length=128)
    user_id: int = Field(foreign_key="user.id", index=True)
    name: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked: bool = False


class Host(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    address: str = Field(max_length=255)
    port: int = 22
    ssh_user: str = Field(default="root", max_length=64)
    connection: str = Field(default="ssh", max_length=8)
    # Exactly one of the two credential forms; the ciphertext never leaves the service.
    credential_ciphertext: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    credential_path: str | None = Field(default=None, max_length=1024)
    backup_secret_ciphertext: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The pinned SSH host key ("TYPE BASE64"): every phase connects with strict checking against it.
    host_key: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    host_key_pinned_at: datetime | None = None
    # A redfish host's BMC: https URL, the SHA-256 of its pinned TLS certificate, and the user and
    # password (JSON, encrypted with the key set like the SSH key; never returned, logged or audited).
    bmc_url: str | None = Field(default=None, max_length=255)
    bmc_cert_sha256: str | None = Field(default=None, max_length=95)
    bmc_credential_ciphertext: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The host's serial console log on the worker machines (inside PROVISIONER_CONSOLE_LOG_DIR): its
    # end is attached to a job whose ramdisk or deployed OS never answered (boot.timeout).
    console_log: str | None = Field(default=None, max_length=1024)
    labels: dict = _json({}, queried=True)
    pool: str = Field(default="default", index=True, max_length=64)
    driver: str = Field(default="static", max_length=16)
    state: str = Field(default="enrolled", index=True, max_length=16)
    hardware: dict = _json({}, queried=True)
    results: dict = _json({})
    tenant_id: int | None = Field(default=None, foreign_key="tenant.id", index=True)
    request_id: int | None = Field(default=None, foreign_key="hostrequest.id", index=True)
    last_restore_at: datetime | None = None
    last_restore_passed: bool | None = None
    compliance: dict = _json({})
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class HostRequest(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    requested_by: int = Field(foreign_key="user.id")
    # A catalogue image's name, or None: no image is written, the hosts keep their installed OS.
    image: str | None = Field(default=None, max_length=128)
    count: int
    pool: str = Field(default="default", max_length=64)
    constraints: dict = _json({})
    params: dict = _json({})
    status: str = Field(default="provisioning", index=True, max_length=16)
    accepted_at: datetime = Field(default_factory=utcnow)
    ready_at: datetime | None = None
    released_at: datetime | None = None
    lease_expires_at: datetime | None = None


class Job(SQLModel, table=True):
    # finished_at: the service review and the SLO report count a period's finished jobs.
    __table_args__ = (Index("ix_job_status_enqueued", "status", "enqueued_at"),
                      Index("ix_job_finished_at", "finished_at"))
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True, max_length=16)
    host_id: int = Field(foreign_key="host.id", index=True)
    request_id: int | None = Field(default=None, foreign_key="hostrequest.id", index=True)
    tenant_id: int | None = Field(default=None, foreign_key="tenant.id", index=True)
    status: str = Field(default="queued", index=True, max_length=16)
    attempts: int = 0
    max_attempts: int = 2
    accepted_at: datetime = Field(default_factory=utcnow)
    queued_at: datetime = Field(default_factory=utcnow)
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    claim_until: datetime | None = None
    worker_id: str | None = Field(default=None, max_length=128)
    cancel_requested: bool = False
    current_phase: str | None = Field(default=None, max_length=32)
    # JSONB on PostgreSQL: the phase SLOs read one phase's record of every job in SQL.
    phases: list = _json([], queried=True)
    params: dict = _json({})
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # A phase's machine-readable failure (e.g. the image writer's "image_corrupt").
    error_code: str | None = Field(default=None, max_length=64)
    event_count: int = 0
    sli: dict = _json({})
    slo_target_s: float | None = None
    slo_met: bool | None = None
    # Whether the restore test this job ran passed (provision's restore-verify, a compliance check).
    restore_passed: bool | None = None
    # A bare-metal deploy's keys for this job (JSON, encrypted with the key set like SSH keys): the
    # ramdisk's host key and login key, the deployed OS's host key. Never returned or logged; a
    # retried job finds them here. Cleared when the job settles.
    deploy_secret_ciphertext: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class JobEvent(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_jobevent_job_seq"),)
    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(
        __import__("sqlalchemy").Integer(), "sqlite"), primary_key=True, autoincrement=True))
    job_id: int = Field(foreign_key="job.id", index=True)
    seq: int
    phase: str = Field(max_length=32)
    event: str = Field(max_length=64)
    host: str | None = Field(default=None, max_length=64)
    task: str | None = Field(default=None, max_length=512)
    status: str | None = Field(default=None, max_length=16)
    duration_s: float | None = None
    stdout: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class AuditEntry(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor_id: int | None = None
    actor_name: str = Field(max_length=64)
    action: str = Field(index=True, max_length=64)
    object_type: str = Field(max_length=32)
    object_id: str | None = Field(default=None, max_length=64)
    tenant_id: int | None = Field(default=None, index=True)
    before: dict | None = _json(None)
    after: dict | None = _json(None)
    request_id: str | None = Field(default=None, max_length=64)


class JobTally(SQLModel, table=True):
    """Running totals of settled jobs, written by settle() in the job's own transaction: the job and
    phase duration histograms, outcomes and SLO events /metrics reports. Any process reads the same
    totals in one small query, whatever the size of the job history."""

    __table_args__ = (UniqueConstraint("metric", "kind", "phase", "status", "reason", "le",
                                       name="uq_jobtally_series"),)
    id: int | None = Field(default=None, primary_key=True)
    # "job" and "phase" durations, "slo" events (kind = the SLO's name, status = good | bad).
    metric: str = Field(max_length=16)
    kind: str = Field(max_length=64)
    phase: str = Field(default="", max_length=32)
    status: str = Field(max_length=16)
    reason: str = Field(default="", max_length=64)
    # The histogram bucket's upper bound as Prometheus writes it ("30.0", "+Inf"); not cumulative.
    le: str = Field(default="+Inf", max_length=16)
    count: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))
    sum_s: float = 0.0
