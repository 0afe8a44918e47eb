"""Which phases (playbooks) each job kind runs, with their timeouts and whether a re-run is safe."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class Phase:
    name: str
    playbook: str | None
    timeout_s: float
    idempotent: bool = True
    # A driver action (Python, e.g. creating a VM) instead of a playbook.
    action: str | None = None


# The image phase skips itself when the request names no image from the catalogue.
PIPELINES: dict[str, tuple[Phase, ...]] = {
    "commission": (Phase("commission", "commission.yml", 600),),
    "provision": (
        Phase("wipe", "wipe.yml", 600),
        Phase("raid", "raid.yml", 900),
        Phase("image", "image.yml", 3600),
        Phase("firewall", "firewall.yml", 600),
        Phase("backup", "backup.yml", 1200),
        Phase("restore-verify", "restore-verify.yml", 1200),
        Phase("handover", "handover.yml", 600),
    ),
    "release": (Phase("release", "release.yml", 1200),),
    "compliance": (Phase("compliance", "compliance.yml", 1200),),
}

JOB_KINDS = frozenset(PIPELINES)


class JobKind(StrEnum):
    commission = "commission"
    provision = "provision"
    release = "release"
    compliance = "compliance"


assert set(JobKind) == JOB_KINDS, "every pipeline is a job kind"

# Hosts of the `vagrant` driver are created for a request and destroyed at release: their
# provision job starts by creating the VM (its own phase in the SLIs) and commissioning it.
VM_CREATE = Phase("vm-create", None, 900, action="vm_create")
VM_DESTROY = Phase("vm-destroy", None, 600, action="vm_destroy")


def phases_for(kind: str, driver: str = "static") -> tuple[Phase, ...]:
    try:
        phases = PIPELINES[kind]
    except KeyError:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(sorted(PIPELINES))}") from None
    if driver == "vagrant":
        if kind == "provision":
            return (VM_CREATE, PIPELINES["commission"][0], *phases)
        if kind == "release":
            return (VM_DESTROY,)
    return phases


def next_phase(kind: str, done: set[str], driver: str = "static") -> Phase | None:
    """The first phase not yet finished: a retried job resumes where it stopped."""
    for phase in phases_for(kind, driver):
        if phase.name not in done:
            return phase
    return None
