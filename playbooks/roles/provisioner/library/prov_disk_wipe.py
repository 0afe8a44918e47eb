#!/usr/bin/python
"""Wipe data disks: stop md arrays/dm maps on them, zero md superblocks, wipefs, clear head/tail."""
from __future__ import annotations

DOCUMENTATION = r"""
module: prov_disk_wipe
short_description: Return data disks to a blank state (idempotent)
description:
  - Stops md arrays (and device-mapper maps when I(unmount)) built on the disks; refuses arrays
    that also use disks outside the list.
  - mdadm --zero-superblock and wipefs -a on every partition and the disk, then makes sure the
    first and last I(zero_mib) MiB read as zeros (partition tables, GPT backup header).
  - Optional blkdiscard of the whole disk (only if it supports discard and something was found).
  - Removes the stopped arrays' ARRAY lines from mdadm.conf.
  - changed is false when the disks were already blank.
options:
  disks: {type: list, elements: str, required: true}
  unmount: {type: bool, default: false, description: unmount/swapoff filesystems on the disks (else fail) and drop their fstab lines}
  zero_mib: {type: int, default: 1}
  discard: {type: bool, default: false}
  mdadm_conf: {type: str, default: /etc/mdadm/mdadm.conf}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prov_block import (
    disk_table,
    lsblk,
    md_arrays,
    mdadm_conf_update,
    mdadm_export,
    mountinfo,
    read,
    resolve_disk_path,
    run,
    walk,
    write_atomic,
)

MIB = 1024 * 1024


def region_is_zero(fd, offset, length):
    os.lseek(fd, offset, os.SEEK_SET)
    left = length
    while left > 0:
        chunk = os.read(fd, min(left, MIB))
        if not chunk:
            break
        if chunk.count(0) != len(chunk):
            return False
        left -= len(chunk)
    return True


def zero_region(fd, offset, length):
    os.lseek(fd, offset, os.SEEK_SET)
    buf = bytes(MIB)
    left = length
    while left > 0:
        n = os.write(fd, buf[:min(left, MIB)])
        left -= n
    os.fsync(fd)


def drop_fstab(sources):
    """Comment out fstab lines whose source is one of `sources`; return removed lines."""
    try:
        with open("/etc/fstab") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    out, removed = [], []
    for line in lines:
        first = line.split()[0] if line.strip() and not line.lstrip().startswith("#") else None
        if first and (first in sources or resolve_disk_path(first) in sources):
            out.append("# disabled by provisioner (data disk wiped): " + line)
            removed.append(line)
        else:
            out.append(line)
    if removed:
        write_atomic("/etc/fstab", "\n".join(out) + "\n", 0o644)
    return removed


def main():
    module = AnsibleModule(argument_spec=dict(
        disks=dict(type="list", elements="str", required=True),
        unmount=dict(type="bool", default=False),
        zero_mib=dict(type="int", default=1),
        discard=dict(type="bool", default=False),
        mdadm_conf=dict(type="str", default="/etc/mdadm/mdadm.conf"),
    ))
    p = module.params
    disks = [resolve_disk_path(d) for d in p["disks"]]
    if not disks:
        module.exit_json(changed=False, disks=[], msg="no data disks")
    mounts = mountinfo()
    table = disk_table(lsblk(module), mounts)
    missing = [d for d in disks if d not in table]
    if missing:
        module.fail_json(msg="not whole disks on this host: %s" % ", ".join(missing))
    system = [d for d in disks if table[d]["system"]]
    if system:
        module.fail_json(msg="refusing to wipe disks holding system mounts: %s" % ", ".join(system))

    actions = {d: [] for d in disks}
    changed = False
    unmounted, stopped, removed_fstab, dm_removed = [], [], [], []

    # 1. filesystems / swap on the disks (or on arrays/maps built on them)
    nodes = {}
    for d in disks:
        for node in walk(table[d]["node"]):
            nodes[node["name"]] = node
    majmins = {n.get("maj:min"): n for n in nodes.values()}
    mounted = [(mp, majmins[mm]["name"]) for mm, mp in mounts if mm in majmins]
    if mounted and not p["unmount"]:
        module.fail_json(msg="data disks are in use (mounted): %s; release (unmount=true) or unmount first"
                         % ", ".join("%s on %s" % (dev, mp) for mp, dev in mounted))
    for mp, dev in sorted(mounted, key=lambda x: -len(x[0])):
        if mp == "[SWAP]":
            run(module, ["swapoff", dev])
        else:
            rc, _, err = run(module, ["umount", mp], check=False)
            if rc != 0:
                module.fail_json(msg="cannot unmount %s (%s): %s" % (mp, dev, err.strip()))
        unmounted.append({"device": dev, "mountpoint": mp})
        changed = True
    if p["unmount"]:
        sources = set()
        for n in nodes.values():
            sources.add(n["name"])
            for key, pre in (("uuid", "UUID="), ("partuuid", "PARTUUID="), ("label", "LABEL=")):
                if n.get(key):
                    sources.add(pre + n[key])
        removed_fstab = drop_fstab(sources)
        changed = changed or bool(removed_fstab)

    # 2. device-mapper maps (LVM/crypt) on the disks, deepest first (release only)
    dm_nodes = [n for n in nodes.values() if n.get("type") in ("lvm", "crypt", "dm")
                or (n.get("kname") or "").startswith("/dev/dm-")]
    if dm_nodes and not p["unmount"]:
        module.fail_json(msg="device-mapper devices on data disks: %s" % ", ".join(n["name"] for n in dm_nodes))
    for n in sorted(dm_nodes, key=lambda n: -len(n["name"])):
        rc, _, err = run(module, ["dmsetup", "remove", "--retry", n["name"]], check=False)
        if rc != 0 and os.path.exists(n["name"]):
            module.fail_json(msg="cannot remove device-mapper device %s: %s" % (n["name"], err.strip()))
        dm_removed.append(n["name"])
        changed = True

    # 3. md arrays using the disks (active or inactive); repeat: udev may re-assemble
    #    a just-stopped array incrementally (as inactive mdNNN) before superblocks are gone
    uuids = set()
    for _attempt in range(3):
        found = False
        for dev, arr in sorted(md_arrays().items(), key=lambda x: x[0], reverse=True):
            ours = [m for m in arr["members"] if m in disks]
            if not ours:
                continue
            found = True
            foreign = [m for m in arr["members"] if m not in disks and not m.startswith("/dev/md")]
            if foreign:
                module.fail_json(msg="%s also uses disks outside the data disks (%s); not touching it"
                                 % (dev, ", ".join(foreign)))
            info = mdadm_export(module, ["--detail", dev])
            if info.get("MD_UUID"):
                uuids.add(info["MD_UUID"])
            rc, _, err = run(module, ["mdadm", "--stop", dev], check=False)
            if rc != 0:
                module.fail_json(msg="cannot stop %s: %s" % (dev, err.strip()))
            stopped.append({"device": dev, "level": arr["level"], "members": arr["members"]})
            for m in ours:
                actions[m].append("stopped %s" % dev)
            changed = True
        if not found:
            break
        run(module, ["udevadm", "settle", "--timeout=30"], check=False)
        # zero member superblocks right away so udev cannot assemble them again
        for arr in stopped:
            for m in [x for x in arr["members"] if x in table]:
                parts = [n["name"] for n in walk(table[m]["node"]) if n.get("type") == "part"]
                for dev in parts + [m]:
                    exam = mdadm_export(module, ["--examine", dev])
                    if exam.get("MD_UUID"):
                        uuids.add(exam["MD_UUID"])
                        rc, _, _ = run(module, ["mdadm", "--zero-superblock", "--force", dev], check=False)
                        if rc == 0:
                            actions[m].append("zeroed md superblock on %s" % dev)

    # 4. signatures: partitions first, then the whole disk
    for d in disks:
        parts = [n["name"] for n in walk(table[d]["node"]) if n.get("type") == "part"]
        for dev in parts + [d]:
            if not os.path.exists(dev):
                continue
            exam = mdadm_export(module, ["--examine", dev])
            if exam.get("MD_UUID"):
                uuids.add(exam["MD_UUID"])
                run(module, ["mdadm", "--zero-superblock", "--force", dev])
                actions[d].append("zeroed md superblock on %s" % dev)
            _, out, _ = run(module, ["wipefs", "--noheadings", "-o", "TYPE", dev], check=False)
            sigs = [s.strip() for s in out.splitlines() if s.strip()]
            if sigs:
                run(module, ["wipefs", "-a", "-f", dev])
                actions[d].append("wipefs %s (%s)" % (dev, ",".join(sorted(set(sigs)))))
        if parts:
            actions[d].append("removed %d partition(s)" % len(parts))

    # 5. head/tail zeroing (+ optional discard when the disk was not blank)
    zero = p["zero_mib"] * MIB
    for d in disks:
        size = table[d]["size_bytes"]
        length = min(zero, size // 2)
        fd = os.open(d, os.O_RDWR | os.O_EXCL)
        try:
            dirty = bool(actions[d])
            head = region_is_zero(fd, 0, length)
            tail = region_is_zero(fd, size - length, length)
            if p["discard"] and (dirty or not (head and tail)):
                kname = os.path.basename(d)
                if int(read("/sys/block/%s/queue/discard_max_bytes" % kname, "0") or 0) > 0:
                    os.close(fd)
                    fd = -1
                    rc, _, _ = run(module, ["blkdiscard", "-f", d], check=False)
                    if rc == 0:
                        actions[d].append("blkdiscard")
                    fd = os.open(d, os.O_RDWR | os.O_EXCL)
                    head = region_is_zero(fd, 0, length)
                    tail = region_is_zero(fd, size - length, length)
            if not head:
                zero_region(fd, 0, length)
                actions[d].append("zeroed first %d MiB" % (length // MIB))
            if not tail:
                zero_region(fd, size - length, length)
                actions[d].append("zeroed last %d MiB" % (length // MIB))
        finally:
            if fd >= 0:
                os.close(fd)
        if actions[d]:
            changed = True
            run(module, ["blockdev", "--rereadpt", d], check=False)
    if changed:
        run(module, ["udevadm", "settle", "--timeout=30"], check=False)

    # 6. forget the arrays in mdadm.conf
    conf_changed = False
    if uuids or stopped:
        old, new = mdadm_conf_update(p["mdadm_conf"], remove_uuids=uuids,
                                     remove_devices=[s["device"] for s in stopped])
        if old is not None and old != new:
            write_atomic(p["mdadm_conf"], new, 0o644)
            conf_changed = changed = True

    module.exit_json(
        changed=changed,
        disks=[{"name": d, "size_bytes": table[d]["size_bytes"], "actions": actions[d],
                "was_blank": not actions[d]} for d in disks],
        stopped_arrays=stopped, unmounted=unmounted, fstab_disabled=len(removed_fstab),
        dm_removed=dm_removed, mdadm_conf_changed=conf_changed)


if __name__ == "__main__":
    main()
