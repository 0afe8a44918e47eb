"""Which disk of a bare-metal host gets the OS image: the root disk. Pure: no I/O.

The rule is OpenStack Ironic's default: the smallest disk of at least 4 GiB (smaller ones are
boot media, SD cards, controller scratch), ties broken by name so the choice does not depend on
the order the ramdisk listed the disks. An operator's hint wins: a disk named by its serial,
WWN, kernel name (``vda`` or ``/dev/vda``) or a ``/dev/disk/by-*`` link, as Ironic's root device
hints do; every given key must match, and the hint is not held to the 4 GiB floor (whoever names
a disk knows it). No disk qualifies → ``Invalid`` with the reason and the disks seen.

A disk is a dict as the inspect phase reports it (``prov_probe`` facts): ``name`` (``/dev/vda``),
``size_bytes``, and where known ``serial``, ``wwn``, ``by_id``, ``by_path``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from provisioner.core.errors import Invalid

GIB = 1 << 30
MIN_ROOT_BYTES = 4 * GIB
HINT_KEYS = ("serial", "wwn", "name", "by_path", "by_id")
# Host labels an operator sets to pin the root disk (label names allow dots: `root_disk.serial`).
LABEL_PREFIX = "root_disk."


def hint_from_labels(labels: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The root device hint in a host's labels (``root_disk.serial=S123``), or None."""
    hint = {k.removeprefix(LABEL_PREFIX): str(v) for k, v in (labels or {}).items()
            if k.startswith(LABEL_PREFIX) and k.removeprefix(LABEL_PREFIX) in HINT_KEYS and str(v).strip()}
    return hint or None


def _short(name: str) -> str:
    return name.removeprefix("/dev/")


def _matches(disk: Mapping[str, Any], key: str, want: str) -> bool:
    if key == "name":
        # A by-path or by-id link names the disk too (Ironic accepts both forms in `name`).
        names = [disk.get("name"), disk.get("by_path"), disk.get("by_id")]
        return any(isinstance(n, str) and _short(n) == _short(want) for n in names)
    have = disk.get(key)
    # Serials and WWNs: vendors pad them and tools differ in case, so compare trimmed, case-blind.
    return isinstance(have, str) and _short(have).strip().lower() == _short(want).strip().lower()


def stable_path(disk: Mapping[str, Any]) -> str:
    """The path that names the disk in every kernel booted on the machine: its /dev/disk/by-id link
    (serial or WWN), else its by-path link (the slot it sits in), else its kernel name. Kernel names
    follow probe order, which the deploy ramdisk and the deployed OS need not share: a data disk
    stored as ``/dev/vdb`` in the ramdisk may be the root disk after the reboot."""
    for key in ("by_id", "by_path", "name"):
        value = disk.get(key)
        if isinstance(value, str) and value.startswith("/dev/"):
            return value
    name = str(disk.get("name") or "")
    return name if name.startswith("/dev/") else f"/dev/{name}"


def _seen(disks: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(f"{d.get('name')} ({int(d.get('size_bytes') or 0) / GIB:.1f} GiB"
                     f"{', serial ' + str(d['serial']) if d.get('serial') else ''})" for d in disks) or "none"


def root_disk(disks: Sequence[Mapping[str, Any]], hint: Mapping[str, str] | None = None) -> Mapping[str, Any]:
    """The disk to write the OS image onto (one of ``disks``, unchanged)."""
    if hint:
        unknown = sorted(set(hint) - set(HINT_KEYS))
        if unknown:
            raise Invalid("root_disk.hint_invalid", f"unknown root disk hint key(s): {', '.join(unknown)}",
                          hint=f"use {', '.join(HINT_KEYS)}")
        found = [d for d in disks if all(_matches(d, k, v) for k, v in hint.items())]
        if not found:
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(hint.items()))
            raise Invalid("root_disk.hint_unmatched", f"no disk matches the root disk hint {wanted}; disks: "
                          f"{_seen(disks)}", hint="correct the host's root_disk.* label, or remove it to "
                          "take the smallest disk of at least 4 GiB")
        if len(found) > 1:
            raise Invalid("root_disk.hint_ambiguous", f"{len(found)} disks match the root disk hint: "
                          f"{_seen(found)}", hint="name the disk by its serial or WWN")
        return found[0]
    fit = [d for d in disks if int(d.get("size_bytes") or 0) >= MIN_ROOT_BYTES]
    if not fit:
        raise Invalid("root_disk.none", f"no disk of at least 4 GiB to write the OS image to; disks: {_seen(disks)}",
                      hint="add a disk of 4 GiB or more, or name one with a root_disk.name/serial label")
    return min(fit, key=lambda d: (int(d["size_bytes"]), str(d.get("name"))))
