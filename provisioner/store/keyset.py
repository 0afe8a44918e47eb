"""The service's key set: the Fernet keys every API and worker process shares.

Where the keys come from, first match wins:
- ``PROVISIONER_SECRET_KEY``: one or more Fernet keys separated by commas, newest first;
- ``PROVISIONER_SECRET_KEY_FILE``: a file with one Fernet key per line, newest first;
- neither (the embedded default): ``data_dir/secret.key``, made on first use. It belongs to one
  machine, so processes on other machines cannot read what it encrypted: the distributed shape
  needs one of the two settings above, with the same keys everywhere.

The newest key encrypts and signs; every key decrypts and verifies, so a key is rotated by putting
a new one first, re-encrypting (``provisioner admin rotate-secrets``), then dropping the old one.
Keys are bytes: a key file is read byte for byte and split at line ends only. A stray space or
``\\r`` is not stripped away but refused, so two machines can never disagree about what a key is.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import tempfile
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, MultiFernet

from provisioner.core.errors import Unavailable
from provisioner.store.config import Settings

HINT = ("set PROVISIONER_SECRET_KEY (comma-separated Fernet keys, newest first) or PROVISIONER_SECRET_KEY_FILE "
        "(one key per line, newest first) to the same keys on every API and worker machine; "
        "`provisioner admin new-secret-key` prints a fresh key")


class KeyConfigError(Unavailable):
    """The configured keys cannot be used (unreadable file, not a Fernet key, both settings given)."""

    def __init__(self, detail: str) -> None:
        super().__init__("secrets.key_config", detail, hint=HINT)


@dataclass(frozen=True)
class SecretKey:
    material: bytes  # the Fernet key as configured (url-safe base64 of 32 bytes)
    kid: str  # public name of the key: tokens carry it, the key cannot be recovered from it


@dataclass(frozen=True)
class KeySet:
    keys: tuple[SecretKey, ...]  # newest first
    source: str  # where they came from, for messages (never the key itself)

    @property
    def newest(self) -> SecretKey:
        return self.keys[0]

    def by_kid(self, kid: str) -> SecretKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    # Cached: key sets are cached per configuration, and a hot path (rotation, image Range
    # requests) should not rebuild ciphers on every call.
    @cached_property
    def _multi(self) -> MultiFernet:
        return MultiFernet([Fernet(k.material) for k in self.keys])

    @cached_property
    def _newest(self) -> Fernet:
        return Fernet(self.newest.material)

    def fernet(self) -> MultiFernet:
        return self._multi

    def newest_fernet(self) -> Fernet:
        return self._newest


def kid_for(material: bytes) -> str:
    # A one-way name: 48 bits of a keyed hash tell keys apart without revealing them.
    return hmac.new(material, b"provisioner key id v1", hashlib.sha256).hexdigest()[:12]


# Fernet's own check (base64 decoding) skips characters outside the alphabet, so " key" would pass.
_FERNET_KEY = re.compile(rb"[A-Za-z0-9_-]{43}=")


def parse_keys(raw: bytes, separator: bytes, source: str, *, terminated: bool = False) -> KeySet:
    """Fernet keys from ``raw``, split at ``separator``; with ``terminated`` the last one may end with it."""
    body = raw[:-len(separator)] if terminated and raw.endswith(separator) else raw
    parts = body.split(separator) if body else []
    if not parts:
        raise KeyConfigError(f"{source} holds no key")
    keys: list[SecretKey] = []
    for n, part in enumerate(parts, 1):
        if not _FERNET_KEY.fullmatch(part):
            # Never echo the bytes: a near-miss key is still most of a secret.
            raise KeyConfigError(f"{source}: key {n} of {len(parts)} is not a Fernet key "
                                 f"(44 url-safe base64 characters; {len(part)} bytes given, no spaces "
                                 "or carriage returns allowed)") from None
        keys.append(SecretKey(part, kid_for(part)))
    if len({k.kid for k in keys}) != len(keys):
        raise KeyConfigError(f"{source} names the same key twice")
    return KeySet(tuple(keys), source)


@lru_cache(maxsize=16)
def _from_env(value: str) -> KeySet:
    return parse_keys(value.encode(), b",", "PROVISIONER_SECRET_KEY")


@lru_cache(maxsize=16)
def _from_file(path: str, _mtime_ns: int, _size: int, source: str) -> KeySet:
    # Cached per (path, mtime, size): a file edited in place is read again on the next use.
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise KeyConfigError(f"{source}: cannot read the key file ({exc.strerror})") from None
    return parse_keys(raw, b"\n", source, terminated=True)


def _load_file(path: Path, source: str) -> KeySet:
    try:
        st = path.stat()
    except OSError as exc:
        raise KeyConfigError(f"{source}: cannot read the key file ({exc.strerror})") from None
    return _from_file(str(path), st.st_mtime_ns, st.st_size, source)


def _ensure_default_file(path: Path) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked into place: a reader (another job's thread,
    # another process) never sees the file before its key is in it, and link() fails when someone
    # got there first, so everybody ends up with that one key. (Created with O_EXCL and then
    # written, the file was empty for a moment, and a job starting beside it failed.)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
        # The key encrypts every stored secret: its name must survive a crash too.
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        os.unlink(tmp)


def key_set(settings: Settings) -> KeySet:
    """The keys this process uses, newest first; raises KeyConfigError when they are unusable."""
    if settings.secret_key and settings.secret_key_file:
        raise KeyConfigError("both PROVISIONER_SECRET_KEY and PROVISIONER_SECRET_KEY_FILE are set; "
                             "keep one, so every process reads the same keys")
    if settings.secret_key:
        return _from_env(settings.secret_key)
    if settings.secret_key_file:
        return _load_file(Path(settings.secret_key_file), f"PROVISIONER_SECRET_KEY_FILE ({settings.secret_key_file})")
    path = settings.data_dir / "secret.key"
    _ensure_default_file(path)
    return _load_file(path, f"the embedded default key file {path}")
