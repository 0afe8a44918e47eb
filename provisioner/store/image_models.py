"""The image catalogue table: one row per published OS image, with its channel and integrity data.

Channels: candidate (published, not yet proven) → stable (a canary install passed) → deprecated
(no new requests) → retired (bytes removed once no host uses them). ``flagged`` is orthogonal: a
writer reported that the served bytes do not match the block map; flagged images can't be
requested until re-verified.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from provisioner.core.timeutil import utcnow


class ImageFormat(StrEnum):
    """What an image is published as (the raw content is what lands on the disk)."""

    raw = "raw"
    raw_zst = "raw.zst"
    qcow2 = "qcow2"


class Channel(StrEnum):
    candidate = "candidate"
    stable = "stable"
    deprecated = "deprecated"
    retired = "retired"


FORMATS = tuple(f.value for f in ImageFormat)
CHANNELS = tuple(c.value for c in Channel)
COMPRESSIONS = ("none", "zstd")


class Image(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    version: str = Field(max_length=64)
    os_name: str = Field(max_length=64)
    os_version: str = Field(max_length=64)
    format_in: str = Field(max_length=8, description="format it was published in: raw, raw.zst or qcow2")
    channel: str = Field(default="candidate", index=True, max_length=16)
    # Integrity data of the raw content (what ends up on the disk), whatever the stored encoding.
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    bmap: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Relative to the image store; None once a retired image's bytes were removed.
    stored_path: str | None = Field(default=None, max_length=512)
    stored_compression: str = Field(default="none", max_length=8)
    stored_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    published_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    promoted_at: datetime | None = None
    flagged: bool = False
    flag_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    canary_job_id: int | None = Field(default=None, index=True)
    canary_result: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
