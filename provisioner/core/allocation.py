"""Choosing hosts for a request: pure, so the rule is tested without a database."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from provisioner.core.pipeline import BARE_METAL_DRIVER


@dataclass(frozen=True)
class Constraints:
    pool: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    min_cpus: int = 0
    min_memory_mb: int = 0
    min_disks: int = 0
    # Whether the request brings an OS image. Hosts and requests pair up by it: a host enrolled by
    # its BMC (driver redfish) has no OS until a deploy writes one, so it serves image requests only;
    # an image is written only by the deploy ramdisk, which only a BMC can boot, so a host reached
    # over SSH alone (its own OS, never overwritten) serves requests without an image only.
    with_image: bool = False


@dataclass(frozen=True)
class Candidate:
    id: int
    name: str
    pool: str
    labels: Mapping[str, str]
    hardware: Mapping[str, Any]
    driver: str = "static"


def data_disk_count(hardware: Mapping[str, Any]) -> int:
    if isinstance(hardware.get("data_disks"), list):
        return len(hardware["data_disks"])
    return len(hardware.get("disks") or [])


def matches(c: Candidate, want: Constraints) -> bool:
    hw = c.hardware or {}
    return (
        c.pool == want.pool
        and all(c.labels.get(k) == v for k, v in want.labels.items())
        and int(hw.get("cpus") or 0) >= want.min_cpus
        and int(hw.get("memory_mb") or 0) >= want.min_memory_mb
        and data_disk_count(hw) >= want.min_disks
        and (c.driver == BARE_METAL_DRIVER) == want.with_image
    )


def _waste(c: Candidate, want: Constraints) -> tuple[int, int, int, str]:
    # Best fit: keep big hosts for the requests that need them.
    hw = c.hardware or {}
    return (
        int(hw.get("cpus") or 0) - want.min_cpus,
        int(hw.get("memory_mb") or 0) - want.min_memory_mb,
        data_disk_count(hw) - want.min_disks,
        c.name,
    )


def rank(candidates: Iterable[Candidate], want: Constraints) -> list[Candidate]:
    """Every matching host, best fit first (the order the allocator tries them in)."""
    return sorted((c for c in candidates if matches(c, want)), key=lambda c: _waste(c, want))


def choose(candidates: Iterable[Candidate], want: Constraints, count: int) -> list[Candidate]:
    """The `count` best-fitting matching hosts, or an empty list if there are not enough."""
    fitting = rank(candidates, want)
    if len(fitting) < count:
        return []
    return fitting[:count]
