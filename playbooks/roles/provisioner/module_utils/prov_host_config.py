"""Write the host's configuration bundle into a root filesystem: the freshly written image's root,
mounted by the deploy ramdisk, or the ramdisk's own root at boot (from its per-job config ISO).

The bundle is what ``provisioner/core/host_config.py`` makes: JSON ``{"version": 1, "files": [{"path":
"/etc/hostname", "mode": "0644", "dir_mode": "0755", "content_b64": "..."}]}``. Every file is
written atomically (a temporary file in the same folder, fsync, rename), owned by root (uid/gid 0
are root in every Debian root), with the given mode; missing folders are made with ``dir_mode``.
Paths are resolved one component at a time without following symlinks, so a root that holds a
symlink (``/root/.ssh -> /somewhere``) cannot send a write outside it: that is refused.

Runs on the managed host (stdlib only), imported as ansible.module_utils.prov_host_config, and
as a program in the deploy ramdisk: ``python3 prov_host_config.py BUNDLE.json ROOT``.
"""
from __future__ import annotations

import base64
import json
import os
import sys

BUNDLE_VERSION = 1


class ConfigError(ValueError):
    pass


def load_bundle(data: bytes) -> list[dict]:
    """The file entries of a bundle, checked (paths absolute, no '..', modes octal, content base64)."""
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise ConfigError(f"the bundle is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("version") != BUNDLE_VERSION:
        raise ConfigError(f"unknown bundle version {doc.get('version') if isinstance(doc, dict) else doc!r}")
    entries = []
    for f in doc.get("files", []):
        path = f.get("path", "")
        parts = path.split("/")
        if not path.startswith("/") or any(p in ("", ".", "..") for p in parts[1:]):
            raise ConfigError(f"refused path {path!r}: absolute, no empty, '.' or '..' components")
        try:
            content = base64.b64decode(f.get("content_b64", ""), validate=True)
            mode, dir_mode = int(f.get("mode", "0644"), 8), int(f.get("dir_mode", "0755"), 8)
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None
        if mode > 0o7777 or dir_mode > 0o7777:
            raise ConfigError(f"{path}: mode out of range")
        entries.append({"path": path, "content": content, "mode": mode, "dir_mode": dir_mode})
    return entries


def _open_dir(parent_fd: int, name: str, dir_mode: int) -> int:
    try:
        os.mkdir(name, dir_mode, dir_fd=parent_fd)
        os.chmod(name, dir_mode, dir_fd=parent_fd, follow_symlinks=False)
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as e:
        raise ConfigError(f"{name!r} is not a plain folder (a symlink?): {e.strerror}") from None


def write_file(root: str, path: str, content: bytes, mode: int, dir_mode: int = 0o755) -> bool:
    """Write one file under root; True when its content or mode changed."""
    parts = path.strip("/").split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in parts[:-1]:
            nfd = _open_dir(fd, name, dir_mode)
            os.close(fd)
            fd = nfd
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            with open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd), "rb") as old:
                if old.read() == content and (st.st_mode & 0o7777) == mode and st.st_uid == 0 == st.st_gid:
                    return False
        except FileNotFoundError:
            pass
        except OSError as e:
            raise ConfigError(f"{path}: {e.strerror} (a symlink?)") from None
        tmp = f".{name}.prov-tmp"
        try:
            os.unlink(tmp, dir_fd=fd)
        except FileNotFoundError:
            pass
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(out, view):]
            os.fchown(out, 0, 0)
            os.fchmod(out, mode)
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


def apply_bundle(root: str, data: bytes) -> list[str]:
    """Write every file of the bundle under root; the paths that changed."""
    if not os.path.isdir(root):
        raise ConfigError(f"root {root} is not a folder")
    entries = load_bundle(data)
    return [e["path"] for e in entries
            if write_file(root, e["path"], e["content"], e["mode"], e["dir_mode"])]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: prov_host_config.py BUNDLE.json ROOT", file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        data = f.read()
    try:
        changed = apply_bundle(argv[2], data)
    except ConfigError as e:
        print(f"prov_host_config: {e}", file=sys.stderr)
        return 1
    print(f"prov_host_config: wrote {len(changed)} file(s) under {argv[2]}: {' '.join(changed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
