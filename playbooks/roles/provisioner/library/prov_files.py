#!/usr/bin/python
"""Write several small files (or directories) in one module run; atomic, mode/owner enforced."""
from __future__ import annotations

DOCUMENTATION = r"""
module: prov_files
short_description: Ensure a list of files/directories with exact content, mode and owner
description:
  - One round trip for many files (cheap under emulation). Content is no_log.
  - Supports check mode (reports the paths that would change).
options:
  files:
    description: The files and directories to ensure, in order.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path.
        type: str
        required: true
      content:
        description: Exact file content (state=file). Never logged.
        type: str
        default: ""
      mode:
        description: Octal mode as a string, e.g. "0600"; unset keeps the default for new files.
        type: str
      owner:
        description: Owner user name.
        type: str
        default: root
      group:
        description: Owner group name.
        type: str
        default: root
      state:
        description: file (exact content), directory, or absent (removed, recursively for directories).
        type: str
        default: file
        choices: [file, directory, absent]
notes:
  - Supports check mode.
"""

EXAMPLES = r"""
- name: Backup credentials
  prov_files:
    files:
      - {path: /etc/provisioner/backup, state: directory, mode: "0700"}
      - {path: /etc/provisioner/backup/password, mode: "0600", content: "secret"}
      - {path: /etc/sudoers.d/provisioner-customer-alice, state: absent}
"""

RETURN = r"""
changed_paths:
  description: Paths that were (or in check mode would be) created, changed or removed.
  returned: always
  type: list
  elements: str
  sample: [/etc/provisioner/backup/password]
"""

import grp
import os
import pwd
import shutil

from ansible.module_utils.basic import AnsibleModule


def ensure_meta(path, mode, uid, gid):
    st = os.lstat(path)
    changed = False
    if (st.st_mode & 0o7777) != mode:
        os.chmod(path, mode)
        changed = True
    if st.st_uid != uid or st.st_gid != gid:
        os.chown(path, uid, gid)
        changed = True
    return changed


def main():
    module = AnsibleModule(argument_spec=dict(
        files=dict(type="list", elements="dict", required=True, options=dict(
            path=dict(type="str", required=True),
            content=dict(type="str", no_log=True, default=""),
            mode=dict(type="str", default=None),
            owner=dict(type="str", default="root"),
            group=dict(type="str", default="root"),
            state=dict(type="str", default="file", choices=["file", "directory", "absent"]),
        )),
    ), supports_check_mode=True)
    changed_paths = []
    for item in module.params["files"]:
        path = item["path"]
        state = item["state"]
        if state == "absent":
            if os.path.lexists(path):
                if not module.check_mode:
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                changed_paths.append(path)
            continue
        mode = int(item["mode"] or ("0755" if state == "directory" else "0644"), 8)
        try:
            uid = int(item["owner"]) if str(item["owner"]).isdigit() else pwd.getpwnam(item["owner"]).pw_uid
            gid = int(item["group"]) if str(item["group"]).isdigit() else grp.getgrnam(item["group"]).gr_gid
        except KeyError as exc:
            module.fail_json(msg="unknown owner/group for %s: %s" % (path, exc))
        if state == "directory":
            changed = False
            if not os.path.isdir(path):
                if not module.check_mode:
                    os.makedirs(path, mode)
                changed = True
            if not module.check_mode:
                changed = ensure_meta(path, mode, uid, gid) or changed
            if changed:
                changed_paths.append(path)
            continue
        content = item["content"].encode()
        current = None
        try:
            with open(path, "rb") as fh:
                current = fh.read()
        except OSError:
            pass
        changed = False
        if current != content:
            changed = True
            if not module.check_mode:
                d = os.path.dirname(path)
                if d and not os.path.isdir(d):
                    os.makedirs(d, 0o755)
                tmp = path + ".prov-tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(content)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chown(tmp, uid, gid)
                os.chmod(tmp, mode)
                os.replace(tmp, path)
        if not module.check_mode and os.path.exists(path):
            changed = ensure_meta(path, mode, uid, gid) or changed
        if changed:
            changed_paths.append(path)
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths)


if __name__ == "__main__":
    main()
