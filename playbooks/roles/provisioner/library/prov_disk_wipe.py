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
  - Refuses disks that hold system mounts (/, /boot, /usr, /var, swap) and, unless I(unmount),
    disks with mounted filesystems.
  - Supports check mode - the disks are inspected read-only and the result lists the actions a
    real run would take; nothing is unmounted, stopped, wiped, zeroed, discarded or written.
options:
  disks:
    description: Whole-disk device paths to wipe (/dev/disk/by-* links are resolved).
    type: list
    elements: str
    required: true
  unmount:
    description: Unmount/swapoff filesystems on the disks (else fail), remove device-mapper maps on them
      and comment out their fstab lines.
    type: bool
    default: false
  zero_mib:
    description: MiB at the start and at the end of every disk that must read as zeros afterwards.
    type: int
    default: 1
  discard:
    description: blkdiscard the whole disk when it supports discard and was not already blank.
    type: bool
    default: false
  erase:
    description:
      - Verified erase of every disk, blank-looking or not (data without a signature is still data) -
        blkdiscard where then every byte reads back zeros, else blkdiscard -z (BLKZEROOUT), else zeros
        written with O_DIRECT, checked by an O_DIRECT read-back of I(erase_samples) random spots
        spread over the whole disk. Fails (error erase_unverified) when none reads back zeros.
      - Makes I(discard) and I(zero_mib) redundant (the head and tail are then zeros already).
    type: bool
    default: false
  erase_samples:
    description: Strata of the disk, one random 64 KiB read-back in each (plus the first and last 64 KiB).
    type: int
    default: 1024
  loop_disks:
    description: Accept loop devices as whole disks (tests on a machine without spare disks).
    type: bool
    default: false
  mdadm_conf:
    description: mdadm.conf from which the stopped arrays' ARRAY lines are removed.
    type: str
    default: /etc/mdadm/mdadm.conf
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
- name: Wipe the data disks
  prov_disk_wipe:
    disks: [/dev/vdb, /dev/vdc]
    zero_mib: 1

- name: Release - unmount what the customer mounted, discard, zero the first/last 16 MiB
  prov_disk_wipe:
    disks: "{{ provisioner_probe.data_disks }}"
    unmount: true
    zero_mib: 16
    discard: true

- name: Release with a verified erase of the whole disk
  prov_disk_wipe:
    disks: "{{ provisioner_probe.data_disks }}"
    unmount: true
    erase: true

- name: Show what would be wiped (changes nothing)
  prov_disk_wipe:
    disks: [/dev/vdb]
  check_mode: true
"""

RETURN = r"""
disks:
  description: One entry per disk with the actions taken (in check mode, the actions a real run would take).
  returned: always
  type: list
  elements: dict
  sample: [{name: /dev/vdb, size_bytes: 1073741824, actions: ["wipefs /dev/vdb (ext4)", "zeroed first 1 MiB"],
            was_blank: false}]
  contains:
    erase:
      description: With I(erase) - the method that verified (discard, zeroout, overwrite), seconds taken,
        read-back samples, and every method tried with its verdict.
      returned: when erase is true and not in check mode
      type: dict
      sample: {method: zeroout, seconds: 0.9, samples: 1026,
               tried: [{method: discard, verified: false, nonzero_at: 536870912}, {method: zeroout, verified: true}]}
stopped_arrays:
  description: md arrays stopped (or that would be stopped) because they use the disks.
  returned: success
  type: list
  elements: dict
  sample: [{device: /dev/md0, level: raid1, members: [/dev/vdb, /dev/vdc]}]
unmounted:
  description: Filesystems/swap unmounted (or that would be unmounted); only with I(unmount=true).
  returned: success
  type: list
  elements: dict
  sample: [{device: /dev/vdb1, mountpoint: /srv/data}]
fstab_disabled:
  description: Number of fstab lines commented out (or that would be).
  returned: success
  type: int
  sample: 0
dm_removed:
  description: Device-mapper devices removed (or that would be removed).
  returned: success
  type: list
  elements: str
  sample: []
mdadm_conf_changed:
  description: Whether mdadm.conf was (or would be) rewritten.
  returned: success
  type: bool
  sample: false
check_mode:
  description: True when the module ran in check mode and changed nothing.
  returned: in check mode
  type: bool
  sample: true
msg:
  description: Human-readable note (check mode, or no data disks given).
  returned: in check mode or when I(disks) is empty
  type: str
  sample: "check mode: nothing was changed; actions list what a real run would do"
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
from ansible.module_utils.prov_erase import erase_disk

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


def drop_fstab(sources, check_mode=False):
    """Comment out fstab lines whose source is one of `sources`; return removed lines.

    In check mode the lines are only reported, /etc/fstab is not written."""
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
    if removed and not check_mode:
        write_atomic("/etc/fstab", "\n".join(out) + "\n", 0o644)
    return removed


def main():
    module = AnsibleModule(argument_spec=dict(
        disks=dict(type="list", elements="str", required=True),
        unmount=dict(type="bool", default=False),
        zero_mib=dict(type="int", default=1),
        discard=dict(type="bool", default=False),
        erase=dict(type="bool", default=False),
        erase_samples=dict(type="int", default=1024),
        mdadm_conf=dict(type="str", default="/etc/mdadm/mdadm.conf"),
        loop_disks=dict(type="bool", default=False),
    ), supports_check_mode=True)
    p = module.params
    # Check mode: the same inspection (lsblk, mountinfo, sysfs, mdadm --detail/--examine, wipefs
    # listing, reading the head/tail regions read-only), but nothing that changes the host runs.
    # The result has the normal shape; its actions are the ones a real run would take.
    check = module.check_mode
    disks = list(dict.fromkeys(resolve_disk_path(d) for d in p["disks"]))  # a link and its target: once
    if not disks:
        module.exit_json(changed=False, disks=[], msg="no data disks")
    mounts = mountinfo()
    table = disk_table(lsblk(module), mounts, loop_disks=p["loop_disks"])
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
        if check:
            pass  # reported as unmounted below; nothing is unmounted in check mode
        elif mp == "[SWAP]":
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
        removed_fstab = drop_fstab(sources, check_mode=check)
        changed = changed or bool(removed_fstab)

    # 2. device-mapper maps (LVM/crypt) on the disks, deepest first (release only)
    dm_nodes = [n for n in nodes.values() if n.get("type") in ("lvm", "crypt", "dm")
                or (n.get("kname") or "").startswith("/dev/dm-")]
    if dm_nodes and not p["unmount"]:
        module.fail_json(msg="device-mapper devices on data disks: %s" % ", ".join(n["name"] for n in dm_nodes))
    for n in sorted(dm_nodes, key=lambda n: -len(n["name"])):
        rc, err = 0, ""
        if not check:
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
            if not check:
                rc, _, err = run(module, ["mdadm", "--stop", dev], check=False)
                if rc != 0:
                    module.fail_json(msg="cannot stop %s: %s" % (dev, err.strip()))
            stopped.append({"device": dev, "level": arr["level"], "members": arr["members"]})
            for m in ours:
                actions[m].append("stopped %s" % dev)
            changed = True
        if not found:
            break
        if check:
            break  # nothing was stopped, so nothing can re-assemble: one pass reports every array
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
                if not check:
                    run(module, ["mdadm", "--zero-superblock", "--force", dev])
                actions[d].append("zeroed md superblock on %s" % dev)
            # listing only (no -a): read-only, also in check mode. --output (-O), not -o (= --offset)
            _, out, _ = run(module, ["wipefs", "--noheadings", "--output", "TYPE", dev], check=False)
            sigs = [s.strip() for s in out.splitlines() if s.strip()]
            if sigs:
                if not check:
                    run(module, ["wipefs", "-a", "-f", dev])
                actions[d].append("wipefs %s (%s)" % (dev, ",".join(sorted(set(sigs)))))
        if parts:
            actions[d].append("removed %d partition(s)" % len(parts))

    # 5. verified erase of the whole disk (release): every disk, since data needs no signature
    erased = {}
    for d in disks:
        if not p["erase"]:
            break
        kname = os.path.basename(d)
        can_discard = int(read("/sys/block/%s/queue/discard_max_bytes" % kname, "0") or 0) > 0
        if check:
            actions[d].append("erase (%sverified by read-back)" % ("discard or zeros, " if can_discard else "zeros, "))
            continue
        erased[d] = erase_disk(module, d, table[d]["size_bytes"], can_discard, max(1, p["erase_samples"]))
        actions[d].append("erased (%s, %d samples read back as zeros)" % (erased[d]["method"], erased[d]["samples"]))

    # 6. head/tail zeroing (+ optional discard when the disk was not blank)
    zero = p["zero_mib"] * MIB
    for d in disks:
        size = table[d]["size_bytes"]
        length = min(zero, size // 2)
        # check mode reads only; no O_EXCL either (arrays that a real run would stop still hold the disk)
        fd = os.open(d, os.O_RDONLY if check else os.O_RDWR | os.O_EXCL)
        try:
            dirty = bool(actions[d])
            head = region_is_zero(fd, 0, length)
            tail = region_is_zero(fd, size - length, length)
            if p["discard"] and not p["erase"] and (dirty or not (head and tail)):
                kname = os.path.basename(d)
                can_discard = int(read("/sys/block/%s/queue/discard_max_bytes" % kname, "0") or 0) > 0
                if can_discard and check:
                    actions[d].append("blkdiscard")
                elif can_discard:
                    os.close(fd)
                    fd = -1
                    rc, _, _ = run(module, ["blkdiscard", "-f", d], check=False)
                    if rc == 0:
                        actions[d].append("blkdiscard")
                    fd = os.open(d, os.O_RDWR | os.O_EXCL)
                    head = region_is_zero(fd, 0, length)
                    tail = region_is_zero(fd, size - length, length)
            if not head:
                if not check:
                    zero_region(fd, 0, length)
                actions[d].append("zeroed first %d MiB" % (length // MIB))
            if not tail:
                if not check:
                    zero_region(fd, size - length, length)
                actions[d].append("zeroed last %d MiB" % (length // MIB))
        finally:
            if fd >= 0:
                os.close(fd)
        if actions[d]:
            changed = True
            if not check:
                run(module, ["blockdev", "--rereadpt", d], check=False)
    if changed and not check:
        run(module, ["udevadm", "settle", "--timeout=30"], check=False)

    # 7. forget the arrays in mdadm.conf
    conf_changed = False
    if uuids or stopped:
        old, new = mdadm_conf_update(p["mdadm_conf"], remove_uuids=uuids,
                                     remove_devices=[s["device"] for s in stopped])
        if old is not None and old != new:
            if not check:
                write_atomic(p["mdadm_conf"], new, 0o644)
            conf_changed = changed = True

    result = dict(
        changed=changed,
        disks=[dict({"name": d, "size_bytes": table[d]["size_bytes"], "actions": actions[d],
                     "was_blank": not [a for a in actions[d] if not a.startswith("erase")]},
                    **({"erase": erased[d]} if d in erased else {})) for d in disks],
        stopped_arrays=stopped, unmounted=unmounted, fstab_disabled=len(removed_fstab),
        dm_removed=dm_removed, mdadm_conf_changed=conf_changed)
    if check:
        result.update(check_mode=True, msg="check mode: nothing was changed; actions list what a real run would do")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
