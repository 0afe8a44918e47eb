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
    # A driver action (Python, e.g. creating a VM or a BMC call) instead of a playbook.
    action: str | None = None
    # Where a playbook runs on a bare-metal host: "os" (the host's own OS, reached with its pinned
    # host key) or "ramdisk" (the deploy ramdisk booted for this job, reached with the job's keys).
    target: str = "os"


# The driver of hosts enrolled by their BMC (Redfish): the one name every layer compares against.
BARE_METAL_DRIVER = "redfish"

# Hosts of the `redfish` driver (enrolled by their BMC) have no OS of ours until a deploy writes one:
# the BMC boots the deploy ramdisk from a per-job virtual CD, the ramdisk inspects, wipes and writes
# the image onto the root disk and writes the host's configuration into it, then the BMC boots the
# disk and the usual phases run inside the deployed OS. Release cleans every disk in the ramdisk.
RAMDISK_BOOT = Phase("ramdisk-boot", None, 300, action="ramdisk_boot")
RAMDISK_WAIT = Phase("ramdisk-wait", None, 900, action="ramdisk_wait")
DISK_BOOT = Phase("disk-boot", None, 300, action="disk_boot")
OS_WAIT = Phase("os-wait", None, 900, action="os_wait")
POWER_OFF = Phase("power-off", None, 300, action="power_off")
BMC_CHECK = Phase("bmc-check", None, 300, action="bmc_check")
DEPLOY_PHASES = (
    RAMDISK_BOOT,
    RAMDISK_WAIT,
    Phase("inspect", "inspect.yml", 600, target="ramdisk"),
    Phase("wipe", "wipe.yml", 600, target="ramdisk"),
    Phase("image", "image.yml", 3600, target="ramdisk"),
    Phase("configure", "configure.yml", 600, target="ramdisk"),
    DISK_BOOT,
    OS_WAIT,
)
CLEAN_PHASES = (RAMDISK_BOOT, RAMDISK_WAIT, Phase("clean", "clean.yml", 3600, target="ramdisk"), POWER_OFF)


# Hosts of the `vagrant` driver are created for a request and destroyed at release: their
# provision job starts by creating the VM (its own phase in the SLIs) and commissioning it.
VM_CREATE = Phase("vm-create", None, 900, action="vm_create")
VM_DESTROY = Phase("vm-destroy", None, 600, action="vm_destroy")


# A host reached over SSH keeps its own OS: no image is written under it (image requests go to hosts
# enrolled by their BMC, services/requests.py), so its provision has no image phase.
PIPELINES: dict[str, tuple[Phase, ...]] = {
    "commission": (Phase("commission", "commission.yml", 600),),
    "provision": (
        Phase("wipe", "wipe.yml", 600),
        Phase("raid", "raid.yml", 900),
        Phase("firewall", "firewall.yml", 600),
        Phase("backup", "backup.yml", 1200),
        Phase("restore-verify", "restore-verify.yml", 1200),
        Phase("handover", "handover.yml", 600),
    ),
    "release": (Phase("release", "release.yml", 1200),),
    "compliance": (Phase("compliance", "compliance.yml", 1200),),
}
# A bare-metal provision: the deploy, then the provision phases that run inside the deployed OS.
BARE_METAL_DEPLOY = (*DEPLOY_PHASES, *(p for p in PIPELINES["provision"] if p.name != "wipe"))
# A reimage writes an active host again with another image: the same deploy (the ramdisk wipes only
# the root disk and RAID assembles the existing array when the data is kept). Only hosts enrolled by
# their BMC are reimaged (services/reimage.py refuses the others), so it is the pipeline of every driver.
PIPELINES["reimage"] = BARE_METAL_DEPLOY

JOB_KINDS = frozenset(PIPELINES)


class JobKind(StrEnum):
    commission = "commission"
    provision = "provision"
    release = "release"
    reimage = "reimage"
    compliance = "compliance"


assert set(JobKind) == JOB_KINDS, "every pipeline is a job kind"


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
    if driver == BARE_METAL_DRIVER:
        if kind == "commission":
            return (BMC_CHECK,)  # the BMC's facts again, and a known power state (off)
        if kind == "provision":
            return BARE_METAL_DEPLOY
        if kind == "release":
            return CLEAN_PHASES
    return phases


def next_phase(kind: str, done: set[str], driver: str = "static") -> Phase | None:
    """The first phase not yet finished: a retried job resumes where it stopped."""
    for phase in phases_for(kind, driver):
        if phase.name not in done:
            return phase
    return None
