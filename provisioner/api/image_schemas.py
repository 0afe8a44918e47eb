"""Request and response bodies of the image catalogue routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from provisioner.api.bounds import BodyId
from provisioner.api.schemas import SSH_PUBLIC_KEY_PATTERN, Name, Out, Strict, Timestamp
from provisioner.store.image_models import Channel, ImageFormat

Label = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")]
Sha256 = Annotated[str, Field(max_length=64, pattern=r"^[0-9a-fA-F]{64}$", description="hex sha256 of the RAW content")]


class ImageOut(Out):
    id: int
    name: str
    version: str
    os_name: str
    os_version: str
    format_in: ImageFormat
    channel: Channel
    size: int = Field(description="bytes of the raw image (what lands on the disk)")
    sha256: str = Field(description="sha256 of the raw image")
    data_bytes: int = Field(description="bytes covered by the block map's data ranges")
    ranges: int = Field(description="number of block-map ranges")
    stored_path: str | None = Field(description="file in the image store; None once a retired image was purged")
    stored_compression: str
    stored_bytes: int = Field(description="disk space the stored file takes (sparse files take less)")
    published_by: str
    created_at: Timestamp
    promoted_at: Timestamp | None
    flagged: bool
    flag_reason: str | None
    canary_job_id: int | None
    canary_result: dict[str, Any] | None


class RegisterIn(Strict):
    path: str = Field(min_length=1, max_length=512, description="file path relative to the image store")
    name: Name
    version: Label
    os_name: Label
    os_version: Label
    expected_sha256: Sha256 | None = None


class PromoteIn(Strict):
    to: Literal["stable", "deprecated", "retired"]
    reason: str = Field(default="", max_length=500)


class PromoteOut(ImageOut):
    purge: dict[str, Any] | None = Field(default=None, description="retirement: whether the bytes were removed")


class CanaryIn(Strict):
    pool: Name = "lab"
    tenant_id: BodyId | None = Field(default=None,
                                     description="tenant owning the canary host (admins; imagers use their own)")
    ssh_public_key: str | None = Field(default=None, max_length=8192,
                                       pattern=SSH_PUBLIC_KEY_PATTERN,
                                       description="to log into the canary host (user 'canary'); default: none usable")


class CanaryOut(Out):
    image: ImageOut
    request_id: int
    job_id: int
    host_id: int
    host: str
    release_hint: str


class FlagIn(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class VerifyOut(Out):
    image: ImageOut
    ok: bool
    detail: str
