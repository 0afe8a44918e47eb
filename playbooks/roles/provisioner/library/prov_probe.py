#!/usr/bin/python
"""Read-only host probe: hardware facts and data-disk resolution in one round trip."""
from __future__ import annotations

DOCUMENTATION = r"""
module: prov_probe
short_description: Inventory a host (CPU, memory, disks, NICs, OS) and resolve the data disks
description:
  - Read-only. Uses lsblk, ip -j and /proc; returns in a single module run (cheap under emulation).
  - Data disks are the given device paths (validated - whole disks, no system mount) or,
    when none are given, every whole disk that holds no system mount (/, /boot, /usr, /var, swap).
  - Supports check mode (it changes nothing anyway).
  - The same facts serve the commission phase (a host with an OS) and the inspect phase (the deploy
    ramdisk, where no disk holds a mount, so every disk is a candidate).
options:
  data_disks:
    description: Data disk device paths to validate; empty = find them.
    type: list
    elements: str
    default: []
  min_data_disks:
    description: Fail when fewer data disks resolve.
    type: int
    default: 0
  loop_disks:
    description: Count loop devices as whole disks (tests on a machine without spare disks).
    type: bool
    default: false
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
- name: Probe the host and resolve the data disks
  prov_probe:
    data_disks: []
    min_data_disks: 2
  register: provisioner_probe
"""

RETURN = r"""
facts:
  description:
    - Host inventory - hostname, cpus, cpu_model, memory_mb, root_disk (the disk holding /, null in
      the deploy ramdisk), system_disks, disks, nics, os, system (DMI).
    - A disk's wwn, by_id and by_path are null when the disk has none (by-* links need udev).
    - A NIC's link is its carrier (null when the kernel does not say), speed_mbps null when unknown.
  returned: success
  type: dict
  sample: {hostname: node1, cpus: 2, cpu_model: "QEMU Virtual CPU version 2.5+", memory_mb: 2048,
           root_disk: /dev/vda, system_disks: [/dev/vda],
           disks: [{name: /dev/vdb, size_bytes: 1073741824, serial: null, rotational: false, model: null,
                    wwn: null, by_id: null, by_path: /dev/disk/by-path/pci-0000:00:05.0}],
           nics: [{name: eth0, mac: "52:54:00:12:34:56", link: true, state: UP, speed_mbps: null,
                   mtu: 1500, addresses: [192.168.121.10/24]}],
           os: {name: Debian GNU/Linux, version: "12.5", id: debian, version_id: "12",
                codename: bookworm, kernel: 6.1.0-18-amd64, arch: x86_64},
           system: {vendor: QEMU, product: Standard PC (i440FX + PIIX, 1996), serial: null, uuid: null}}
data_disks:
  description: The resolved data disks.
  returned: success
  type: list
  elements: str
  sample: [/dev/vdb, /dev/vdc]
data_disks_discovered:
  description: True when the data disks were found rather than given.
  returned: success
  type: bool
  sample: true
data_disk_mounts:
  description: Mount points under each data disk.
  returned: success
  type: dict
  sample: {/dev/vdb: [], /dev/vdc: []}
md_arrays:
  description: md arrays known to the kernel (sysfs).
  returned: success
  type: list
  elements: dict
  sample: []
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prov_block import (
    candidate,
    disk_links,
    disk_table,
    lsblk,
    md_arrays,
    read,
    resolve_disk_path,
    run,
)


def os_release():
    res = {}
    for line in (read("/etc/os-release", "") or "").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            res[k] = v.strip().strip('"')
    return res


def as_int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def nics(module):
    _, out, _ = run(module, ["ip", "-j", "addr", "show"])
    res = []
    for link in json.loads(out or "[]"):
        if link.get("link_type") == "loopback" or link.get("ifname") == "lo":
            continue
        sysfs = "/sys/class/net/%s/" % link.get("ifname")
        carrier = read(sysfs + "carrier")  # unreadable (EINVAL) while the interface is down
        speed = as_int(read(sysfs + "speed"))  # -1 or unreadable when the driver does not know
        res.append({
            "name": link.get("ifname"),
            "mac": link.get("address"),
            "link": None if carrier is None else carrier == "1",
            "state": link.get("operstate"),
            "speed_mbps": speed if speed is not None and speed > 0 else None,
            "mtu": link.get("mtu"),
            "addresses": ["%s/%s" % (a["local"], a["prefixlen"])
                          for a in link.get("addr_info", []) if a.get("local")],
        })
    return res


def cpu_model():
    for line in (read("/proc/cpuinfo", "") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "cpu model", "Model"):
            return value.strip() or None
    return None


def dmi():
    """What the firmware says the machine is (product_serial and uuid are readable by root only)."""
    base = "/sys/class/dmi/id/"
    return {k: (read(base + f) or None) for k, f in (
        ("vendor", "sys_vendor"), ("product", "product_name"), ("serial", "product_serial"), ("uuid", "product_uuid"))}


def main():
    module = AnsibleModule(argument_spec=dict(
        data_disks=dict(type="list", elements="str", default=[]),
        min_data_disks=dict(type="int", default=0),
        loop_disks=dict(type="bool", default=False),
    ), supports_check_mode=True)

    loops = module.params["loop_disks"]
    disks = disk_table(lsblk(module), loop_disks=loops)
    by_id, by_path = disk_links("by-id"), disk_links("by-path")
    root = sorted(n for n, d in disks.items() if d["root"])
    system = sorted(n for n, d in disks.items() if d["system"])

    requested = [resolve_disk_path(p) for p in module.params["data_disks"] or []]
    if requested:
        bad = [p for p in requested if p not in disks]
        if bad:
            module.fail_json(msg="not whole disks on this host: %s (disks: %s)"
                             % (", ".join(bad), ", ".join(sorted(disks))))
        sysd = [p for p in requested if disks[p]["system"]]
        if sysd:
            module.fail_json(msg="refusing: %s hold(s) system mounts (%s)" % (
                ", ".join(sysd), "; ".join("%s: %s" % (p, ",".join(disks[p]["mountpoints"])) for p in sysd)))
        if len(set(requested)) != len(requested):
            module.fail_json(msg="duplicate data disks: %s" % requested)
        data = requested
    else:
        data = sorted(n for n, d in disks.items() if candidate(d))
    if len(data) < module.params["min_data_disks"]:
        module.fail_json(msg="need at least %d data disk(s), found %d: %s"
                         % (module.params["min_data_disks"], len(data), data), data_disks=data)

    meminfo = {}
    for line in (read("/proc/meminfo", "") or "").splitlines():
        k, _, v = line.partition(":")
        meminfo[k] = v.strip()
    osr = os_release()
    version = osr.get("VERSION_ID")
    if osr.get("ID") == "debian":
        version = read("/etc/debian_version", version) or version

    facts = {
        "hostname": os.uname()[1],
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_mb": int(meminfo.get("MemTotal", "0 kB").split()[0]) // 1024,
        "root_disk": root[0] if root else None,
        "system_disks": system,
        "disks": [dict({k: d[k] for k in ("name", "size_bytes", "serial", "rotational", "model", "wwn")},
                       by_id=by_id.get(n), by_path=by_path.get(n))
                  for n, d in sorted(disks.items())
                  if d["loop"] or not n.startswith(("/dev/zram", "/dev/ram", "/dev/loop"))],
        "nics": nics(module),
        "os": {"name": osr.get("NAME"), "version": version, "id": osr.get("ID"),
               "version_id": osr.get("VERSION_ID"), "codename": osr.get("VERSION_CODENAME"),
               "kernel": os.uname()[2], "arch": os.uname()[4]},
        "system": dmi(),
    }
    module.exit_json(changed=False, facts=facts, data_disks=data,
                     data_disks_discovered=not requested,
                     data_disk_mounts={p: disks[p]["mountpoints"] for p in data},
                     md_arrays=list(md_arrays().values()))


if __name__ == "__main__":
    main()
