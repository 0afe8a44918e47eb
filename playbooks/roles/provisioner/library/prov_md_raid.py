#!/usr/bin/python
"""Create (or adopt) an md RAID array over the data disks, wait boundedly, persist mdadm.conf."""
from __future__ import annotations

DOCUMENTATION = r"""
module: prov_md_raid
short_description: Idempotent md RAID over whole data disks
description:
  - If I(device) exists with the same level and members, nothing is changed (conf is still ensured).
  - If the disks carry superblocks of one complete array of that level, it is re-assembled as I(device).
  - Otherwise the array is created (mdadm --create --run, metadata 1.2). Disks with foreign md
    superblocks or another layout make the module fail (run the wipe phase first).
  - With I(keep_data) (a reimage keeping the host's data) the array is only ever adopted or
    assembled from the disks' superblocks, never created: no array there fails the module.
  - Waits up to I(wait_seconds) for the initial resync/recovery; state is reported either way.
options:
  device:
    description: md device to create or verify (/dev/mdN).
    type: str
    default: /dev/md0
  level:
    description: RAID level - 0, 1, 4, 5, 6 or 10 (minimum disks 2, 2, 3, 3, 4, 4).
    type: str
    default: "1"
  disks:
    description: Whole-disk member device paths.
    type: list
    elements: str
    required: true
  wait_seconds:
    description: Upper bound for waiting on the initial resync/recovery.
    type: int
    default: 300
  assume_clean:
    description: Create with --assume-clean (skips the initial resync; only for blank disks).
    type: bool
    default: false
  keep_data:
    description: Assemble the existing array (and keep its data) instead of creating one; fail when there is none.
    type: bool
    default: false
  name:
    description: Array name (mdadm --name).
    type: str
  mdadm_conf:
    description: mdadm.conf in which the array's ARRAY line is persisted.
    type: str
    default: /etc/mdadm/mdadm.conf
"""

EXAMPLES = r"""
- name: RAID1 over two data disks
  prov_md_raid:
    device: /dev/md0
    level: "1"
    disks: [/dev/vdb, /dev/vdc]
    wait_seconds: 300
"""

RETURN = r"""
action:
  description: What was done - present (already there), assembled or created.
  returned: success
  type: str
  sample: created
device:
  description: The md device.
  returned: success
  type: str
  sample: /dev/md0
level:
  description: Requested level.
  returned: success
  type: str
  sample: "1"
md_level:
  description: Level as the kernel reports it.
  returned: success
  type: str
  sample: raid1
members:
  description: Member disks.
  returned: success
  type: list
  elements: str
  sample: [/dev/vdb, /dev/vdc]
state:
  description: clean, resync N%, degraded or inactive.
  returned: success
  type: str
  sample: clean
members_up:
  description: The [UU] member flags from /proc/mdstat.
  returned: success
  type: str
  sample: UU
degraded:
  description: Number of missing members (sysfs md/degraded).
  returned: success
  type: int
  sample: 0
sync_action:
  description: sysfs md/sync_action.
  returned: success
  type: str
  sample: idle
sync_completed:
  description: sysfs md/sync_completed.
  returned: success
  type: str
  sample: none
uuid:
  description: The array UUID (MD_UUID).
  returned: success
  type: str
  sample: "4f8e1c2a:9b3d6e71:0a5c2f48:71d3e9b6"
mdstat:
  description: The array's /proc/mdstat stanza.
  returned: success
  type: str
mdadm_conf_changed:
  description: Whether mdadm.conf was rewritten.
  returned: success
  type: bool
  sample: false
"""

import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prov_block import (
    md_arrays,
    mdadm_conf_update,
    mdadm_export,
    mdstat_block,
    resolve_disk_path,
    run,
    write_atomic,
)

MIN_DISKS = {0: 2, 1: 2, 4: 3, 5: 3, 6: 4, 10: 4}


def state_of(arr, block):
    m = re.search(r"\[(\d+)/(\d+)\]\s+\[([U_]+)\]", block)
    flags = m.group(3) if m else None
    sync = arr.get("sync_action")
    if arr["array_state"] in ("inactive", "clear", ""):
        return "inactive", flags
    if arr["degraded"] and sync not in ("recover", "resync", "reshape"):
        return "degraded", flags
    if sync and sync not in ("idle", "frozen"):
        done = arr.get("sync_completed") or ""
        pct = ""
        mm = re.match(r"(\d+)\s*/\s*(\d+)", done)
        if mm and int(mm.group(2)):
            pct = " %.1f%%" % (100.0 * int(mm.group(1)) / int(mm.group(2)))
        return "%s%s" % (sync, pct), flags
    return "clean" if arr["array_state"] in ("clean", "active", "active-idle", "write-pending") else arr["array_state"], flags


def main():
    module = AnsibleModule(argument_spec=dict(
        device=dict(type="str", default="/dev/md0"),
        level=dict(type="str", default="1"),
        disks=dict(type="list", elements="str", required=True),
        wait_seconds=dict(type="int", default=300),
        assume_clean=dict(type="bool", default=False),
        keep_data=dict(type="bool", default=False),
        name=dict(type="str", default=None),
        mdadm_conf=dict(type="str", default="/etc/mdadm/mdadm.conf"),
    ))
    p = module.params
    device = p["device"]
    if not re.match(r"^/dev/md\d+$", device):
        module.fail_json(msg="device must look like /dev/mdN, got %r" % device)
    lvl = str(p["level"]).lower().replace("raid", "")
    if not lvl.isdigit() or int(lvl) not in MIN_DISKS:
        module.fail_json(msg="unsupported RAID level %r (supported: %s)" % (p["level"], sorted(MIN_DISKS)))
    level = int(lvl)
    disks = [resolve_disk_path(d) for d in p["disks"]]
    if len(disks) < MIN_DISKS[level]:
        module.fail_json(msg="RAID%d needs at least %d disks, got %d (%s)"
                         % (level, MIN_DISKS[level], len(disks), ", ".join(disks) or "none"))
    want_level = "raid%d" % level
    changed = False
    action = "present"

    arrays = md_arrays()
    cur = arrays.get(device)
    if cur and cur["array_state"] in ("inactive", "clear", ""):
        run(module, ["mdadm", "--stop", device])  # half-assembled leftover (e.g. after a crash)
        changed = True
        cur = None
    if cur:
        if cur["level"] != want_level or sorted(cur["members"]) != sorted(disks) or not cur["whole_disk_members"]:
            module.fail_json(msg="%s already exists with a different layout (%s over %s); run the wipe phase first"
                             % (device, cur["level"], ", ".join(cur["members"])))
    else:
        for dev, arr in arrays.items():
            used = [d for d in disks if d in arr["members"]]
            if not used:
                continue
            if arr["level"] == want_level and sorted(arr["members"]) == sorted(disks) and arr["whole_disk_members"] \
                    and arr["array_state"] not in ("inactive",):
                # our array, auto-assembled under another name (e.g. /dev/md127 after a reboot)
                run(module, ["mdadm", "--stop", dev])
            elif arr["array_state"] == "inactive":
                run(module, ["mdadm", "--stop", dev])
            else:
                module.fail_json(msg="%s is in use by %s (%s over %s); run the wipe phase first"
                                 % (", ".join(used), dev, arr["level"], ", ".join(arr["members"])))
            changed = True
        exams = {d: mdadm_export(module, ["--examine", d]) for d in disks}
        uuids = {e.get("MD_UUID") for e in exams.values()}
        if uuids == {None} and p["keep_data"]:
            # Creating would write new superblocks over the disks the customer asked to keep.
            module.fail_json(msg="keep_data: no md array on the data disks (%s) to assemble; reimage without "
                                 "keep_data to create a new one" % ", ".join(disks))
        if uuids == {None}:
            cmd = ["mdadm", "--create", device, "--run", "--metadata=1.2", "--level=%d" % level,
                   "--raid-devices=%d" % len(disks)]
            if p["assume_clean"]:
                cmd.append("--assume-clean")
            if p["name"]:
                cmd.append("--name=%s" % p["name"])
            run(module, cmd + disks, data="y")  # --run suppresses the prompts; answer yes anyway
            action = "created"
        elif None not in uuids and len(uuids) == 1 and all(
                e.get("MD_LEVEL") == want_level and e.get("MD_DEVICES") == str(len(disks)) for e in exams.values()):
            run(module, ["mdadm", "--assemble", device, "--run"] + disks)
            action = "assembled"
        else:
            module.fail_json(msg="data disks carry md superblocks of another array; run the wipe phase first"
                             + (" (keep_data: they are left as they are)" if p["keep_data"] else ""),
                             superblocks={d: {k: e.get(k) for k in ("MD_UUID", "MD_LEVEL", "MD_DEVICES")}
                                          for d, e in exams.items()})
        changed = True
        run(module, ["udevadm", "settle", "--timeout=30"], check=False)

    # wait (bounded) for the initial resync / recovery
    deadline = time.time() + max(0, p["wait_seconds"])
    while True:
        arr = md_arrays().get(device)
        if not arr:
            module.fail_json(msg="%s vanished" % device)
        if arr.get("sync_action") in (None, "idle", "frozen") or time.time() >= deadline:
            break
        time.sleep(2)
    block = mdstat_block(device)
    state, flags = state_of(arr, block)
    if state in ("inactive", "degraded"):
        module.fail_json(msg="%s is %s" % (device, state), mdstat=block)
    if flags is not None and "_" in flags and not state.startswith(("recover", "resync", "reshape")):
        module.fail_json(msg="%s has failed members: [%s]" % (device, flags), mdstat=block)

    # persist mdadm.conf
    _, brief, _ = run(module, ["mdadm", "--detail", "--brief", device])
    lines = [ln for ln in brief.splitlines() if ln.startswith("ARRAY")]
    info = mdadm_export(module, ["--detail", device])
    old, new = mdadm_conf_update(p["mdadm_conf"], remove_uuids=[info.get("MD_UUID")],
                                 remove_devices=[device], add_lines=lines)
    conf_changed = old != new
    if conf_changed:
        write_atomic(p["mdadm_conf"], new, 0o644)
        changed = True

    module.exit_json(changed=changed, action=action, device=device, level=str(level), md_level=arr["level"],
                     members=disks, state=state, members_up=flags, degraded=arr["degraded"],
                     sync_action=arr.get("sync_action"), sync_completed=arr.get("sync_completed"),
                     uuid=info.get("MD_UUID"), mdstat=block, mdadm_conf_changed=conf_changed)


if __name__ == "__main__":
    main()
