"""The restore test's steps, shared by the restore-verify phase (prov_restore_verify: fails the job)
and continuous compliance (prov_compliance: reports): write marker files with known checksums,
back them up, restore them elsewhere, compare. Runs on the managed host; imported as
ansible.module_utils.prov_restore.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

TAG = "provisioner-restore-test"
MANIFEST = "SHA256SUMS"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_job(job_id):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id) or "manual"


def make_scratch(label):
    """A fresh 0700 restore target with an unpredictable name (mkdtemp): a fixed name such as
    /var/tmp/prov-restore-<job> could be made (or symlinked) beforehand by any local user."""
    base = "/var/tmp" if os.path.isdir("/var/tmp") else None
    return tempfile.mkdtemp(prefix="prov-restore-%s-" % label, dir=base)


def write_markers(marker, files, size_kib):
    """Fresh random marker files (fsynced) and their manifest -> ({name: sha256}, manifest checksum)."""
    shutil.rmtree(marker, ignore_errors=True)
    os.makedirs(marker, 0o700)
    expected = {}
    for i in range(files):
        name = "marker-%02d.bin" % i
        path = os.path.join(marker, name)
        with open(path, "wb") as fh:
            fh.write(os.urandom(size_kib * 1024))
            fh.flush()
            os.fsync(fh.fileno())
        expected[name] = sha256(path)
    manifest = "".join("%s  %s\n" % (expected[n], n) for n in sorted(expected))
    with open(os.path.join(marker, MANIFEST), "w") as fh:
        fh.write(manifest)
    return expected, hashlib.sha256(manifest.encode()).hexdigest()


def snapshot_of(backup_json_output):
    """The snapshot id from `restic backup --json` output, or None."""
    snapshot = None
    for line in backup_json_output.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("message_type") == "summary":
            snapshot = msg.get("snapshot_id")
    return snapshot


def compare_restored(restored_dir, expected):
    """-> (per-file details, names restored that were never written). A file passes when it exists
    and its sha256 equals the one written."""
    details = []
    for name in sorted(expected):
        path = os.path.join(restored_dir, name)
        got = sha256(path) if os.path.isfile(path) else None
        details.append({"name": name, "sha256": expected[name], "restored_sha256": got,
                        "ok": got == expected[name]})
    extra = sorted(set(os.listdir(restored_dir)) - set(expected) - {MANIFEST}) if os.path.isdir(restored_dir) else []
    return details, extra
