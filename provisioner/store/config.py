"""Service settings, read from PROVISIONER_* environment variables (pydantic-settings).

With nothing set, the service runs embedded: SQLite in the data directory and an in-process
Dramatiq broker with worker threads. A PostgreSQL URL and a Redis URL give the distributed shape.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]  # provisioner/store/config.py -> the checkout
WILDCARD_HOSTS = ("0.0.0.0", "::")


def split_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets, ``[::1]:0``) as (host, port)."""
    host, sep, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if (not sep or not host or not port.isdigit() or int(port) > 65535 or "[" in host or "]" in host
            or (":" in host and not bracketed)):
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:0, 0.0.0.0:8081, [::1]:0)")
    return host, int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROVISIONER_", extra="ignore")

    data_dir: Path = Field(default=Path.home() / ".local/share/provisioner")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    broker_url: str | None = Field(default=None, description="redis://...; default in-process broker")
    host: str = "127.0.0.1"
    port: int = 8080
    worker_threads: int = 4
    api_workers: int = 1
    # Per-request access lines cost ~10% of a small request; the audit log records every mutation.
    access_log: bool = False
    # API processes remember token lookups this long; a revocation reaches other processes within it.
    auth_cache_seconds: float = 5.0
    playbook_dir: Path = REPO_ROOT / "playbooks"
    # The key set that encrypts stored secrets and signs image tokens (provisioner/store/keyset.py):
    # Fernet keys, newest first, the same on every API and worker machine. Default: data_dir/secret.key.
    secret_key: str | None = Field(default=None, description="comma-separated Fernet keys, newest first")
    secret_key_file: Path | None = Field(default=None, description="file with one Fernet key per line, newest first")
    max_body_bytes: int = 1_048_576
    claim_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    reconcile_seconds: float = 10.0
    requeue_after_seconds: float = 60.0
    max_attempts: int = 2
    slo_provision_seconds: float = 30 * 60
    slo_reclaim_seconds: float = 15 * 60
    slo_commission_seconds: float = 10 * 60
    event_stdout_max: int = 4000
    # Per-phase timeout overrides in seconds, e.g. {"backup": 3600} (JSON in the environment).
    phase_timeouts: dict[str, float] = Field(default_factory=dict)
    # Only for tests and local demos of the job runner: hosts with connection=local run on this machine.
    allow_local_connection: bool = False
    run_reconciler: bool = True
    # How often every active host gets a compliance check (restore test, RAID, firewall); 0 = never.
    compliance_interval_seconds: float = 86_400
    # A lease's owner is warned this long before the lease expires and its hosts are released.
    lease_warning_minutes: float = 60
    # Webhooks: how often the dispatcher looks for due deliveries, the first retry's wait (doubling
    # up to the cap), the attempts before a delivery is given up, and one attempt's timeout.
    webhook_poll_seconds: float = 1.0
    webhook_backoff_seconds: float = 10.0
    webhook_backoff_cap_seconds: float = 3600.0
    webhook_max_attempts: int = 8
    webhook_timeout_seconds: float = 10.0
    # Server-Sent Events: how often an open job stream looks for new event rows (the database is
    # what every API process shares; bench/bench_sse.py measures the delay this gives).
    sse_poll_seconds: float = 0.05
    lab_cmd: Path = REPO_ROOT / "vagrant" / "lab"
    # Requests for this pool get VMs created on demand by the vagrant driver (CI users).
    vagrant_pool: str = "vagrant"
    vagrant_max_vms: int = 2
    # JSON {host, port, user, private_key, base_path} of the SFTP store for restic backups.
    backup_store: Path | None = None
    # Disk images: the store (sparse raw / .raw.zst files), the largest image accepted (upload bytes
    # and raw size), and the base URL hosts use to fetch images (default http://{host}:{port}).
    image_store: Path | None = Field(default=None, description="default: data_dir / 'images'")
    image_max_bytes: int = 8 << 30
    public_url: str | None = None
    # Bare-metal deploys (hosts enrolled by their BMC): the deploy ramdisk ISO built by
    # images/build-ramdisk.sh, from which each job's boot ISO (plus its per-job config) is made.
    ramdisk_iso: Path | None = None
    # The per-job boot ISO server a worker runs while a deploy boots (workers/media_server.py):
    # HOST:PORT it listens on (port 0 = any free port), and the host name the BMC is told to fetch
    # the ISO from (default: the bind host; required when that is a wildcard such as 0.0.0.0).
    media_bind: str = "127.0.0.1:0"
    media_host: str | None = None
    # Where the console server writes hosts' serial console logs on the worker machines (conserver,
    # an `ipmitool sol` logger, the lab's libvirt: /var/log/libvirt/qemu). A host's `console_log` must
    # be a file inside it: the tail a boot timeout attaches to its job is shown to the job's readers,
    # so no other file of the worker can be named. Unset: no host may name a console log.
    console_log_dir: Path | None = None
    # How much of a console log's end a boot timeout attaches to the job.
    console_tail_bytes: int = Field(default=16384, ge=1024, le=1 << 20)

    @field_validator("media_bind")
    @classmethod
    def _check_media_bind(cls, value: str) -> str:
        split_host_port(value)
        return value

    @model_validator(mode="after")
    def _check_media_host(self) -> Settings:
        if not self.media_host and self.media_bind_address[0] in WILDCARD_HOSTS:
            raise ValueError(f"PROVISIONER_MEDIA_BIND={self.media_bind} listens on every address: set "
                             "PROVISIONER_MEDIA_HOST to the name or address the BMCs reach this worker by")
        return self

    @property
    def media_bind_address(self) -> tuple[str, int]:
        return split_host_port(self.media_bind)

    @property
    def media_url_host(self) -> str:
        """The host part of the boot ISO URLs handed to BMCs (IPv6 in brackets)."""
        host = self.media_host or self.media_bind_address[0]
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Users paste libpq URLs; SQLAlchemy needs the driver named.
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            return url
        return f"sqlite:///{self.data_dir / 'provisioner.store.db'}"

    @property
    def effective_image_store(self) -> Path:
        return self.image_store or self.data_dir / "images"

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    def slo_seconds(self, kind: str) -> float:
        return {
            "provision": self.slo_provision_seconds,
            # A reimage is a provision of a host the customer already holds: the same target.
            "reimage": self.slo_provision_seconds,
            "release": self.slo_reclaim_seconds,
            "commission": self.slo_commission_seconds,
        }.get(kind, self.slo_provision_seconds)


@lru_cache
def get_settings() -> Settings:
    return Settings()
