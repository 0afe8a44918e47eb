"""Key rotation: how long `provisioner admin rotate-secrets` (services/secret_rotation.py) takes to
re-encrypt every stored secret on PostgreSQL, and a second pass that finds everything current.

Prints figures; not a test. Usage: .venv/bin/python bench/bench_rotate.py [--hosts 5000]
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg
from cryptography.fernet import Fernet
from sqlmodel import Session

from provisioner.services.secret_rotation import rotate_secrets
from provisioner.store.config import Settings
from provisioner.store.db import make_engine
from provisioner.store.models import Host, SQLModel
from provisioner.store.secrets import encrypt

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=5000)
    args = ap.parse_args()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    tmp = TemporaryDirectory()
    try:
        eng = make_engine(url)
        SQLModel.metadata.create_all(eng)
        before = Settings(data_dir=Path(tmp.name), database_url=url, secret_key=old)
        key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "A" * 400 + "\n-----END OPENSSH PRIVATE KEY-----\n"
        with Session(eng) as s:
            s.add_all(Host(name=f"h{i}", address="x", credential_ciphertext=encrypt(before, key),
                           backup_secret_ciphertext=encrypt(before, "p" * 60)) for i in range(args.hosts))
            s.commit()
        after = Settings(data_dir=Path(tmp.name), database_url=url, secret_key=f"{new},{old}")
        for label in ("rotation", "second pass"):
            with Session(eng) as s:
                t0 = time.perf_counter()
                report = rotate_secrets(s, after, actor_name="bench")
                took = time.perf_counter() - t0
            n = report.reencrypted + report.already_current
            print(f"{label}: {n} secrets ({args.hosts} hosts) in {took:.2f}s = {n / took:,.0f}/s; "
                  f"re-encrypted {report.reencrypted}, already current {report.already_current}, "
                  f"undecryptable {len(report.undecryptable)}")
        eng.dispose()
    finally:
        tmp.cleanup()
        with psycopg.connect(ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
