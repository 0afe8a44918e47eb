"""The shared key set: where keys come from, how a key file is read (byte for byte), and rotation of
stored secrets and image tokens (newest key encrypts and signs, every key decrypts and verifies)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from provisioner.api.error_table import status_for
from provisioner.core.errors import DomainError
from provisioner.imaging import tokens
from provisioner.store import secrets
from provisioner.store.config import Settings
from provisioner.store.keyset import KeyConfigError, key_set, kid_for

OLD, NEW = Fernet.generate_key(), Fernet.generate_key()


def keys_env(*keys: bytes) -> str:
    return ",".join(k.decode() for k in keys)


def test_env_keys_newest_first(tmp_path: Path) -> None:
    ks = key_set(Settings(data_dir=tmp_path, secret_key=keys_env(NEW, OLD)))
    assert [k.material for k in ks.keys] == [NEW, OLD]
    assert ks.newest.kid == kid_for(NEW) and ks.by_kid(kid_for(OLD)) is not None
    # The kid names the key without revealing it.
    assert NEW.decode() not in ks.newest.kid and len(ks.newest.kid) == 12
    assert not (tmp_path / "secret.key").exists()  # a configured key set makes no key file


def test_key_file_is_read_byte_for_byte(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_bytes(NEW + b"\n" + OLD + b"\n")
    ks = key_set(Settings(data_dir=tmp_path, secret_key_file=f))
    assert [k.material for k in ks.keys] == [NEW, OLD]
    f.write_bytes(NEW)  # no final newline: the same key
    assert [k.material for k in key_set(Settings(data_dir=tmp_path, secret_key_file=f)).keys] == [NEW]
    # Nothing is stripped or normalised: a CR, a space or a blank line is refused, never guessed at,
    # and the message never contains the key bytes.
    for raw in (NEW + b"\r\n", b" " + NEW + b"\n", NEW + b"\n\n" + OLD, NEW + b"\n" + NEW, b"", b"\n"):
        f.write_bytes(raw)
        with pytest.raises(KeyConfigError) as exc:
            key_set(Settings(data_dir=tmp_path, secret_key_file=f))
        assert exc.value.code == "secrets.key_config" and status_for(exc.value) == 503
        assert NEW.decode()[:20] not in exc.value.detail and "PROVISIONER_SECRET_KEY_FILE" in exc.value.detail
        assert exc.value.hint and "new-secret-key" in exc.value.hint


def test_key_file_edited_in_place_is_read_again(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_bytes(OLD + b"\n")
    s = Settings(data_dir=tmp_path, secret_key_file=f)
    assert key_set(s).newest.material == OLD
    f.write_bytes(NEW + b"\n" + OLD + b"\n")
    os.utime(f, ns=(1, 10**18))  # a distinct mtime even on a coarse clock
    assert key_set(s).newest.material == NEW


def test_bad_configuration_is_refused(tmp_path: Path) -> None:
    cases = [
        Settings(data_dir=tmp_path, secret_key=keys_env(NEW), secret_key_file=tmp_path / "k"),
        Settings(data_dir=tmp_path, secret_key="not-a-key"),
        Settings(data_dir=tmp_path, secret_key=keys_env(NEW) + ","),
        Settings(data_dir=tmp_path, secret_key=keys_env(NEW) + " "),
        Settings(data_dir=tmp_path, secret_key_file=tmp_path / "missing"),
    ]
    for s in cases:
        with pytest.raises(KeyConfigError):
            key_set(s)


def test_embedded_default_key_file(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "d")
    ct = secrets.encrypt(s, "x")
    path = tmp_path / "d" / "secret.key"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert secrets.decrypt(Settings(data_dir=tmp_path / "d"), ct) == "x"
    # The same key given explicitly reads the same ciphertext: moving to a shared key set is a copy.
    assert secrets.decrypt(Settings(data_dir=tmp_path, secret_key=path.read_bytes().decode()), ct) == "x"


def test_rotation_of_stored_secrets(tmp_path: Path) -> None:
    before = Settings(data_dir=tmp_path, secret_key=keys_env(OLD))
    during = Settings(data_dir=tmp_path, secret_key=keys_env(NEW, OLD))
    after = Settings(data_dir=tmp_path, secret_key=keys_env(NEW))
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\r\n  bytes as given \n"
    old_ct = secrets.encrypt(before, key)
    assert secrets.decrypt(during, old_ct) == key  # old ciphertexts still decrypt, byte for byte
    new_ct = secrets.encrypt(during, "fresh")
    assert secrets.decrypt(after, new_ct) == "fresh"  # the new key encrypts
    with pytest.raises(DomainError) as exc:
        secrets.decrypt(before, new_ct)
    assert exc.value.code == "secrets.undecryptable" and "PROVISIONER_SECRET_KEY" in (exc.value.hint or "")
    assert not secrets.is_current(during, old_ct) and secrets.is_current(during, new_ct)
    rotated = secrets.reencrypt(during, old_ct)
    assert secrets.is_current(during, rotated) and secrets.decrypt(after, rotated) == key
    with pytest.raises(DomainError):
        secrets.decrypt(after, old_ct)  # without the old key, only re-encrypted secrets remain readable
    with pytest.raises(DomainError):
        secrets.reencrypt(Settings(data_dir=tmp_path, secret_key=keys_env(Fernet.generate_key())), old_ct)


def test_rotation_of_image_tokens(tmp_path: Path) -> None:
    before = Settings(data_dir=tmp_path, secret_key=keys_env(OLD))
    during = Settings(data_dir=tmp_path, secret_key=keys_env(NEW, OLD))
    after = Settings(data_dir=tmp_path, secret_key=keys_env(NEW))
    old_tok = tokens.issue(before, job_id=1, image_id=2)
    assert tokens.verify(during, old_tok, 2).job_id == 1  # issued before the rotation: still valid
    new_tok = tokens.issue(during, job_id=3, image_id=2)
    import jwt

    assert jwt.get_unverified_header(new_tok[len(tokens.PREFIX):])["kid"] == kid_for(NEW)
    assert tokens.verify(after, new_tok, 2).job_id == 3
    for settings, tok in ((after, old_tok), (before, new_tok)):
        with pytest.raises(DomainError) as exc:
            tokens.verify(settings, tok, 2)
        assert exc.value.code == "image.token_invalid" and "does not have" in exc.value.detail


def test_the_default_key_file_made_by_many_threads_at_once_is_one_whole_key(tmp_path: Path) -> None:
    """Jobs starting together in one worker each ask for the key set first: none may read the
    default key file before its key is in it, and all must get the same key."""
    rounds, threads = 20, 8
    for n in range(rounds):
        settings = Settings(data_dir=tmp_path / f"data{n}")
        barrier = threading.Barrier(threads)
        got: list[object] = []

        def ask(settings: Settings = settings, barrier: threading.Barrier = barrier, got: list[object] = got) -> None:
            barrier.wait()
            try:
                got.append(key_set(settings).newest.kid)
            except KeyConfigError as exc:
                got.append(exc)

        pool = [threading.Thread(target=ask) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        assert len(set(map(str, got))) == 1 and not any(isinstance(g, Exception) for g in got), got
        assert [p.name for p in (tmp_path / f"data{n}").iterdir()] == ["secret.key"]  # no temporary left
