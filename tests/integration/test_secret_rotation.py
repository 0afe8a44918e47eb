"""`rotate_secrets` on both databases: every stored secret ends under the newest key (batches
larger than one), secrets already current are left alone, what no key opens is named and kept,
and a secret changed by someone else meanwhile is not overwritten (the compare-and-set)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, update
from sqlmodel import Session, SQLModel, select

from provisioner.services import secret_rotation
from provisioner.store import secrets
from provisioner.store.config import Settings
from provisioner.store.models import Host

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def test_rotation_on_both_databases(bare_engine: Engine, tmp_path: Path) -> None:
    SQLModel.metadata.create_all(bare_engine)
    before = Settings(data_dir=tmp_path, secret_key=OLD)
    during = Settings(data_dir=tmp_path, secret_key=f"{NEW},{OLD}")
    foreign = Fernet(Fernet.generate_key()).encrypt(b"lost").decode()
    n = secret_rotation.BATCH + 50
    with Session(bare_engine) as s:
        s.add_all(Host(name=f"h{i}", address="x", credential_ciphertext=secrets.encrypt(before, f"key {i}\n"),
                       backup_secret_ciphertext=secrets.encrypt(during, f"pw {i}") if i % 2 else None)
                  for i in range(n))
        s.add(Host(name="foreign", address="x", credential_ciphertext=foreign))
        s.commit()
    with Session(bare_engine) as s:
        report = secret_rotation.rotate_secrets(s, during)
    assert (report.reencrypted, report.already_current, report.changed_meanwhile) == (n, n // 2, 0)
    assert report.undecryptable == [f"host.credential_ciphertext id={n + 1}"]
    with Session(bare_engine) as s:
        hosts = {h.name: h for h in s.exec(select(Host)).all()}
    after = Settings(data_dir=tmp_path, secret_key=NEW)  # the old key dropped
    for i in range(n):
        h = hosts[f"h{i}"]
        assert h.credential_ciphertext and secrets.decrypt(after, h.credential_ciphertext) == f"key {i}\n"
    assert hosts["foreign"].credential_ciphertext == foreign


def test_a_secret_changed_meanwhile_is_not_overwritten(pg_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from provisioner.store.db import make_engine

    eng = make_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    SQLModel.metadata.create_all(eng)
    before = Settings(data_dir=tmp_path, secret_key=OLD)
    during = Settings(data_dir=tmp_path, secret_key=f"{NEW},{OLD}")
    with Session(eng) as s:
        s.add_all([Host(name="a", address="x", credential_ciphertext=secrets.encrypt(before, "a")),
                   Host(name="b", address="x", credential_ciphertext=secrets.encrypt(before, "b"))])
        s.commit()
    newer = secrets.encrypt(during, "re-enrolled")
    real = secrets.reencrypt

    def concurrent_enroll(settings: Settings, ciphertext: str) -> str:
        # Another process re-enrolls host a's key between the rotation's read and its write.
        if secrets.decrypt(settings, ciphertext) == "a":
            with eng.begin() as c:
                c.execute(update(Host).where(Host.name == "a").values(credential_ciphertext=newer))
        return real(settings, ciphertext)

    monkeypatch.setattr(secrets, "reencrypt", concurrent_enroll)
    with Session(eng) as s:
        report = secret_rotation.rotate_secrets(s, during)
    assert (report.reencrypted, report.changed_meanwhile) == (1, 1)
    with Session(eng) as s:
        rows = {h.name: h.credential_ciphertext for h in s.exec(select(Host)).all()}
    assert rows["a"] == newer and secrets.decrypt(during, rows["b"] or "") == "b"
    eng.dispose()


def test_every_ciphertext_column_is_rotated() -> None:
    """A column holding a key-set ciphertext that rotation does not know would be lost with the old key."""
    from sqlmodel import SQLModel

    import provisioner.store.db  # noqa: F401  (registers every table on the metadata)
    from provisioner.services.secret_rotation import ENCRYPTED_COLUMNS

    stored = {(t.name, c.name) for t in SQLModel.metadata.tables.values() for c in t.columns
              if "ciphertext" in c.name}
    rotated = {(m.__table__.name, name) for m, name in ENCRYPTED_COLUMNS}  # type: ignore[attr-defined]
    assert stored, "no ciphertext column found: the metadata was not loaded"
    assert stored <= rotated, f"not rotated: {sorted(stored - rotated)}"
