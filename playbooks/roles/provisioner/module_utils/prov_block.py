"""Shared helpers for the provisioner modules (block devices, md arrays).

Runs on the managed host (Debian 12: util-linux 2.38, mdadm 4.2, python3.11),
imported by the modules in ../library as ansible.module_utils.prov_block.
"""
from __future__ import annotations

import json
import os
import re

SYSTEM_MOUNTS = ("/", "/usr", "/var", "/boot", "/boot/efi", "[SWAP]")
SKIP_PREFIXES = ("/dev/zram", "/dev/ram", "/dev/loop", "/dev/nbd", "/dev/sr", "/dev/fd")
LSBLK_COLS = "NAME,KNAME,SIZE,SERIAL,ROTA,MODEL,TYPE,MAJ:MIN,UUID,PARTUUID,LABEL,FSTYPE,MOUNTPOINT,WWN"


def run(module, args, check=True, data=None, **kw):
    rc, out, err = module.run_command(args, data=data, **kw)
    if check and rc != 0:
        module.fail_json(msg="command failed: %s" % " ".join(args), rc=rc,
                         stdout=out, stderr=err)
    return rc, out, err


def read(path, default=None):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return default


def as_bool(value):
    if isinstance(value, bool):
        return value
    return str(value).strip() in ("1", "true", "True")


def lsblk(module):
    _, out, _ = run(module, ["lsblk", "-J", "-b", "-p", "-o", LSBLK_COLS])
    return json.loads(out).get("blockdevices", [])


def walk(node):
    yield node
    for child in node.get("children") or []:
        yield from walk(child)


def mountinfo():
    """[(major:minor, mountpoint)] of the current mount namespace + active swaps."""
    res = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                parts = line.split()
                res.append((parts[2], parts[4].replace("\\040", " ")))
    except OSError:
        pass
    try:
        with open("/proc/swaps") as fh:
            next(fh, None)
            for line in fh:
                dev = line.split()[0]
                try:
                    st = os.stat(dev)
                    res.append(("%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)), "[SWAP]"))
                except OSError:
                    pass
    except OSError:
        pass
    return res


def is_system_mount(mp):
    return mp in SYSTEM_MOUNTS or mp.startswith("/boot/")


def disk_links(folder):
    """{/dev/<disk>: /dev/disk/<folder>/<link>} for the whole disks udev named there (none without udev).
    The first name in sorted order wins, so the choice is stable; wwn-* links sort after the bus ones."""
    res = {}
    base = "/dev/disk/%s" % folder
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return res
    for name in names:
        if re.search(r"-part\d+$", name):
            continue
        res.setdefault(os.path.realpath(os.path.join(base, name)), os.path.join(base, name))
    return res


def disk_table(tree, mounts=None, loop_disks=False):
    """Whole disks with subtree mount info: {path: info}. With loop_disks, loop devices count as
    whole disks (the tests' stand-in for disks on a machine that has none to spare)."""
    mounts = mountinfo() if mounts is None else mounts
    types = ("disk", "loop") if loop_disks else ("disk",)
    by_majmin = {}
    for majmin, mp in mounts:
        by_majmin.setdefault(majmin, []).append(mp)
    disks = {}
    for top in tree:
        if top.get("type") not in types:
            continue
        name = top["name"]
        mps = []
        for node in walk(top):
            mps.extend(by_majmin.get(node.get("maj:min"), []))
            if node.get("mountpoint") and node["mountpoint"] not in mps:
                mps.append(node["mountpoint"])
        disks[name] = {
            "name": name,
            "size_bytes": int(top.get("size") or 0),
            "serial": top.get("serial"),
            "rotational": as_bool(top.get("rota")),
            "model": (top.get("model") or None) and top["model"].strip(),
            "mountpoints": sorted(set(mps)),
            "system": any(is_system_mount(mp) for mp in mps),
            "root": "/" in mps,
            "removable": read("/sys/block/%s/removable" % os.path.basename(name), "0") == "1",
            "wwn": top.get("wwn") or None,
            "loop": top.get("type") == "loop",
            "node": top,
        }
    return disks


def resolve_disk_path(path):
    """/dev/disk/by-id/... -> /dev/vdb"""
    return os.path.realpath(path) if path.startswith("/dev/") else path


def candidate(info):
    """A disk that may be a data disk: no system mount, fixed, not zram/loop/ram/nbd (a loop device
    only when the table was made with loop_disks)."""
    return (not info["system"] and not info["removable"] and info["size_bytes"] > 0
            and (info.get("loop") or not info["name"].startswith(SKIP_PREFIXES)))


def parent_disk(kname):
    """kernel name of a block device (vdb1, vdb, md0) -> /dev/<whole disk>"""
    path = os.path.realpath("/sys/class/block/%s" % kname)
    if os.path.exists(os.path.join(path, "partition")):
        return "/dev/" + os.path.basename(os.path.dirname(path))
    return "/dev/" + kname


def md_arrays():
    """Arrays known to the kernel (active or inactive), from sysfs."""
    res = {}
    for kname in sorted(os.listdir("/sys/block")) if os.path.isdir("/sys/block") else []:
        if not kname.startswith("md") or not os.path.isdir("/sys/block/%s/md" % kname):
            continue
        base = "/sys/block/%s/md/" % kname
        try:
            slaves = sorted(os.listdir("/sys/block/%s/slaves" % kname))
        except OSError:
            slaves = []
        res["/dev/" + kname] = {
            "device": "/dev/" + kname,
            "level": read(base + "level", ""),
            "array_state": read(base + "array_state", ""),
            "raid_disks": int(read(base + "raid_disks", "0") or 0),
            "degraded": int(read(base + "degraded", "0") or 0),
            "sync_action": read(base + "sync_action"),
            "sync_completed": read(base + "sync_completed"),
            "slaves": ["/dev/" + s for s in slaves],
            "members": sorted({parent_disk(s) for s in slaves}),
            "whole_disk_members": all(parent_disk(s) == "/dev/" + s for s in slaves),
        }
    return res


def mdstat_block(device):
    """The /proc/mdstat stanza of one array (text), '' if absent."""
    name = os.path.basename(device)
    text = read("/proc/mdstat", "") or ""
    lines, grab = [], False
    for line in text.splitlines():
        if re.match(r"^%s\s*:" % re.escape(name), line):
            grab = True
        elif grab and (not line.strip() or re.match(r"^\S", line)):
            break
        if grab:
            lines.append(line.rstrip())
    return "\n".join(lines)


def mdadm_export(module, args):
    rc, out, _ = run(module, ["mdadm"] + args + ["--export"], check=False)
    if rc != 0:
        return {}
    res = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            res[k.strip()] = v.strip().strip("'\"")
    return res


def mdadm_conf_update(path, remove_uuids=(), remove_devices=(), add_lines=()):
    """Return (old, new) text of mdadm.conf with ARRAY stanzas filtered/added."""
    old = None
    try:
        with open(path) as fh:
            old = fh.read()
    except OSError:
        pass
    src = old if old is not None else "# mdadm.conf written by provisioner\nHOMEHOST <system>\nMAILADDR root\n"
    out, skip = [], False
    uuids = {u.lower() for u in remove_uuids if u}
    devs = set(remove_devices)
    for line in src.splitlines():
        if skip and line[:1] in (" ", "\t") and line.strip():
            continue  # continuation of a removed ARRAY stanza
        skip = False
        if line.startswith("ARRAY"):
            fields = line.split()
            dev = fields[1] if len(fields) > 1 else ""
            m = re.search(r"UUID=([0-9a-fA-F:]+)", line)
            if dev in devs or (m and m.group(1).lower() in uuids):
                skip = True
                continue
        out.append(line)
    for line in add_lines:
        out.append(line)
    new = "\n".join(out).rstrip("\n") + "\n"
    return old, new


def write_atomic(path, content, mode=0o644):
    d = os.path.dirname(path)
    if d and not os.path.isdir(d):
        os.makedirs(d, 0o755)
    tmp = "%s.prov-tmp" % path
    with open(tmp, "w") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
