#!/usr/bin/python
"""Write the host's configuration bundle into the root filesystem of a freshly written disk image."""
from __future__ import annotations

DOCUMENTATION = r"""
module: prov_root_config
short_description: Write the host's configuration into the root filesystem of a written disk image
description:
  - Runs in the deploy ramdisk after the image phase wrote a whole-disk image onto I(disk).
  - Re-reads the disk's partition table (blockdev --rereadpt, then partx -u, which also works where
    the kernel cannot parse the table itself), finds the one partition whose filesystem is
    I(fstype) with label I(label) (blkid -p, straight from the disk, no cache), mounts it on a fresh
    folder under /run, writes the bundle's files with module_utils/prov_host_config.py (the same
    writer the ramdisk applies its own config with: atomic, root-owned, exact modes, no symlink
    followed), reads the image-identity file, flushes and unmounts.
  - No fsck - the image phase read back every written range against the image's sha256 block map,
    so the filesystem is bit for bit the one the image build made; mounting still checks the
    superblock.
  - Refuses a disk any of whose partitions is mounted elsewhere (the deployed OS's own root, say);
    a mount left under /run/prov-root.* by an interrupted run is unmounted first.
  - Supports check mode - the partition is found and mounted read-only, the bundle is checked and the
    identity read; nothing is written (files lists what a real run would write).
options:
  disk:
    description: The whole disk the image was written to (/dev/disk/by-* links are resolved).
    type: str
    required: true
  bundle_b64:
    description:
      - Base64 of the bundle made by provisioner/core/host_config.py (JSON, version 1). A secret - it
        holds the host's private SSH host keys; never logged or returned.
    type: str
    required: true
  label:
    description: The filesystem label of the image's root partition.
    type: str
    default: root
  fstype:
    description: The filesystem type of the image's root partition.
    type: str
    default: ext4
  identity_path:
    description: The image-identity file inside the root (JSON with name, version, build_id).
    type: str
    default: /etc/provisioner-image.json
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
- name: Write the host's configuration into the new root
  prov_root_config:
    disk: /dev/vda
    bundle_b64: "{{ prov_config_bundle_b64 }}"
  no_log: true
  register: prov_cfg
"""

RETURN = r"""
disk:
  description: The disk, resolved.
  returned: success
  type: str
  sample: /dev/vda
partition:
  description: The root partition that was configured.
  returned: success
  type: str
  sample: /dev/vda1
fs_uuid:
  description: The root filesystem's UUID.
  returned: success
  type: str
  sample: 3f1c0d4e-8d1b-4d33-9a55-0f4c2b1e7a10
files:
  description: The bundle's paths whose content or mode changed (in check mode, every path of the bundle).
  returned: success
  type: list
  elements: str
  sample: [/etc/hostname, /etc/ssh/ssh_host_ed25519_key, /root/.ssh/authorized_keys]
identity:
  description: The image-identity file's content.
  returned: success
  type: dict
  sample: {name: debian-12-boot, version: "2026.12", build_id: 9f0c1a, os_name: debian, os_version: "12",
           kernel: 6.1.0-28-cloud-amd64}
error:
  description: >-
    Why it failed, for the service - configure.not_a_disk, configure.disk_in_use,
    configure.no_root_partition, configure.ambiguous_root, configure.mount_failed,
    configure.bundle_invalid, configure.no_identity.
  returned: failure
  type: str
  sample: configure.no_root_partition
"""

import base64
import binascii
import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prov_block import mountinfo, read, resolve_disk_path, run
from ansible.module_utils.prov_host_config import ConfigError, apply_bundle, load_bundle

MOUNT_PREFIX = "prov-root."


def partitions(kname):
    """[(/dev/<part>, maj:min)] of a whole disk, from sysfs (what the kernel knows now)."""
    base = "/sys/block/%s" % kname
    res = []
    for name in sorted(os.listdir(base)):
        if os.path.exists(os.path.join(base, name, "partition")):
            res.append(("/dev/" + name, read(os.path.join(base, name, "dev"), "")))
    return res


def reread(module, disk):
    """The partition table the image brought, as the kernel's partitions. blockdev --rereadpt is the
    kernel's own parse (refused while a partition is busy); partx -u adds, updates and removes
    partitions from util-linux's parse, so it works on kernels without that table type too."""
    run(module, ["blockdev", "--rereadpt", disk], check=False)
    rc, _, err = run(module, ["partx", "-u", disk], check=False)
    run(module, ["udevadm", "settle", "--timeout=30"], check=False)
    return err.strip() if rc != 0 else ""


def probe(module, dev):
    _, out, _ = run(module, ["blkid", "-p", "-o", "export", dev], check=False)
    res = {}
    for line in out.splitlines():
        k, _, v = line.partition("=")
        res[k.strip()] = v.strip()
    return res


def read_identity(module, root, path):
    """The identity file under root, refusing symlinks on the way (the image is data, not trusted paths)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        parts = path.strip("/").split("/")
        for name in parts[:-1]:
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        with open(os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd), "rb") as fh:
            doc = json.loads(fh.read(65536))
    except (OSError, ValueError) as e:
        module.fail_json(msg="the image has no readable identity file %s: %s" % (path, e),
                         error="configure.no_identity")
    finally:
        os.close(fd)
    if not isinstance(doc, dict):
        doc = {}
    missing = [k for k in ("name", "version", "build_id") if not isinstance(doc.get(k), str) or not doc[k]]
    if missing:
        module.fail_json(msg="the image's identity file %s lacks %s" % (path, ", ".join(missing)),
                         error="configure.no_identity")
    return {k: v for k, v in doc.items() if isinstance(v, (str, int, float, bool)) or v is None}


def main():
    module = AnsibleModule(argument_spec=dict(
        disk=dict(type="str", required=True),
        bundle_b64=dict(type="str", required=True, no_log=True),
        label=dict(type="str", default="root"),
        fstype=dict(type="str", default="ext4"),
        identity_path=dict(type="str", default="/etc/provisioner-image.json"),
    ), supports_check_mode=True)
    p = module.params
    check = module.check_mode
    disk = resolve_disk_path(p["disk"])
    kname = os.path.basename(disk)
    if not disk.startswith("/dev/") or not os.path.isdir("/sys/block/%s" % kname):
        module.fail_json(msg="%s is not a whole disk on this host" % p["disk"], error="configure.not_a_disk")
    try:
        data = base64.b64decode(p["bundle_b64"], validate=True)
        entries = load_bundle(data)
    except (binascii.Error, ValueError) as e:  # ConfigError is a ValueError
        module.fail_json(msg="the configuration bundle is invalid: %s" % e, error="configure.bundle_invalid")

    # A mount of ours left by an interrupted run goes; any other mount means this is not the ramdisk.
    run_dir = os.path.realpath("/run")
    for majmin, mp in mountinfo():
        if os.path.dirname(mp) == run_dir and os.path.basename(mp).startswith(MOUNT_PREFIX) \
                and majmin in {mm for _, mm in partitions(kname)}:
            run(module, ["umount", mp])
            os.rmdir(mp)
    table_err = reread(module, disk)
    parts = partitions(kname)
    busy = sorted({"%s on %s" % (dev, mp) for majmin, mp in mountinfo() for dev, mm in parts if mm == majmin}
                  | {"%s on %s" % (disk, mp) for majmin, mp in mountinfo()
                     if majmin == read("/sys/block/%s/dev" % kname, "")})
    if busy:
        module.fail_json(msg="refusing: %s is in use (%s); configure runs in the deploy ramdisk"
                         % (disk, ", ".join(busy)), error="configure.disk_in_use")
    seen = [(dev, probe(module, dev)) for dev, _ in parts]
    roots = [(dev, info) for dev, info in seen
             if info.get("TYPE") == p["fstype"] and info.get("LABEL") == p["label"]]
    if len(roots) != 1:
        found = "; ".join("%s: %s %s" % (dev, info.get("TYPE") or "no filesystem",
                                         "label " + info["LABEL"] if info.get("LABEL") else "no label")
                          for dev, info in seen) or "no partitions" + (" (partx: %s)" % table_err if table_err else "")
        module.fail_json(msg="%s has %s %s partition labelled %r (%s)" % (
            disk, "no" if not roots else "more than one", p["fstype"], p["label"], found),
            error="configure.no_root_partition" if not roots else "configure.ambiguous_root")
    part, info = roots[0]

    mnt = tempfile.mkdtemp(prefix=MOUNT_PREFIX, dir="/run")
    mounted = False
    try:
        rc, _, err = run(module, ["mount", "-t", p["fstype"], "-o", "ro" if check else "rw,noatime", part, mnt],
                         check=False)
        if rc != 0:
            module.fail_json(msg="cannot mount %s: %s" % (part, err.strip()), error="configure.mount_failed")
        mounted = True
        if check:
            files = [e["path"] for e in entries]
        else:
            try:
                files = apply_bundle(mnt, data)
            except (ConfigError, OSError) as e:
                module.fail_json(msg="writing the configuration into %s failed: %s" % (part, e),
                                 error="configure.bundle_invalid")
        identity = read_identity(module, mnt, p["identity_path"])
        os.sync()
    finally:
        if mounted:
            rc, _, err = run(module, ["umount", mnt], check=False)
            if rc != 0:
                module.fail_json(msg="cannot unmount %s from %s: %s" % (part, mnt, err.strip()),
                                 error="configure.mount_failed")
        os.rmdir(mnt)
    result = dict(changed=bool(files) and not check, disk=disk, partition=part, fs_uuid=info.get("UUID"),
                  files=files, identity=identity)
    if check:
        result.update(check_mode=True, msg="check mode: nothing was written; files lists the bundle's paths")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
