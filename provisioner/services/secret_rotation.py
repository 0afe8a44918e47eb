"""Re-encrypt every stored secret with the newest key of the key set (after a key rotation).

Each ciphertext is replaced by a compare-and-set on its old value, in batches with a commit each, so
API and worker processes keep running meanwhile: a secret written or re-encrypted by someone else in
between is left alone. A secret no key of the set opens is counted and named (by row), never
touched, so the operator can find which key is still missing before dropping an old one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, Text, select, update, values
from sqlalchemy import column as sa_column
from sqlmodel import Session, SQLModel

from provisioner.services import audit
from provisioner.store import secrets
from provisioner.store.config import Settings
from provisioner.store.keyset import key_set
from provisioner.store.models import Host, Job
from provisioner.store.notify_models import Webhook

# Every column that holds a key-set ciphertext. A new encrypted column belongs here, or rotation
# would leave it behind and dropping the old key would lose it.
ENCRYPTED_COLUMNS: tuple[tuple[type[SQLModel], str], ...] = (
    (Host, "credential_ciphertext"),
    (Host, "backup_secret_ciphertext"),
    (Host, "bmc_credential_ciphertext"),
    (Webhook, "secret_ciphertext"),
    (Job, "deploy_secret_ciphertext"),
)
BATCH = 200


@dataclass
class RotationReport:
    key_id: str  # kid of the key everything is now encrypted with
    keys_in_set: int
    reencrypted: int = 0
    already_current: int = 0
    changed_meanwhile: int = 0
    undecryptable: list[str] = field(default_factory=list)  # "table.column id=N"
    per_column: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "keys_in_set": self.keys_in_set, "reencrypted": self.reencrypted,
                "already_current": self.already_current, "changed_meanwhile": self.changed_meanwhile,
                "undecryptable": len(self.undecryptable), "undecryptable_rows": self.undecryptable,
                "per_column": self.per_column}


def _compare_and_set(session: Session, table: Any, name: str, changes: list[tuple[int, str, str]]) -> int:
    """Writes each new ciphertext where the old one is still stored; returns how many were written."""
    pk, column = table.c.id, table.c[name]
    if session.get_bind().dialect.name == "postgresql":
        # One statement per batch: a round trip per row made rotation 4x slower on PostgreSQL.
        # SQLite has no VALUES list with column names to join; it is local, so rows are cheap there.
        v = values(sa_column("vid", Integer), sa_column("vold", Text), sa_column("vnew", Text),
                   name="rotated").data(changes)
        stmt = update(table).where(pk == v.c.vid, column == v.c.vold).values({name: v.c.vnew}).returning(pk)
        return len(session.execute(stmt).all())
    return sum(session.execute(update(table).where(pk == row_id, column == old).values({name: new}))
               .rowcount for row_id, old, new in changes)  # type: ignore[attr-defined]


def _rotate_column(session: Session, settings: Settings, model: type[SQLModel], name: str,
                   report: RotationReport) -> None:
    table = model.__table__  # type: ignore[attr-defined]
    pk, column = table.c.id, table.c[name]
    counts = {"reencrypted": 0, "already_current": 0, "changed_meanwhile": 0, "undecryptable": 0}
    last_id = 0
    while True:
        rows = session.execute(select(pk, column).where(pk > last_id, column.is_not(None))
                               .order_by(pk).limit(BATCH)).all()
        if not rows:
            break
        last_id = rows[-1][0]
        changes: list[tuple[int, str, str]] = []
        for row_id, ciphertext in rows:
            if secrets.is_current(settings, ciphertext):
                counts["already_current"] += 1
                continue
            try:
                changes.append((row_id, ciphertext, secrets.reencrypt(settings, ciphertext)))
            except secrets.SecretUndecryptable:
                counts["undecryptable"] += 1
                report.undecryptable.append(f"{table.name}.{name} id={row_id}")
        done = _compare_and_set(session, table, name, changes) if changes else 0
        counts["reencrypted"] += done
        counts["changed_meanwhile"] += len(changes) - done
        session.commit()
    report.per_column[f"{table.name}.{name}"] = counts
    report.reencrypted += counts["reencrypted"]
    report.already_current += counts["already_current"]
    report.changed_meanwhile += counts["changed_meanwhile"]


def rotate_secrets(session: Session, settings: Settings, *, actor_name: str = "cli") -> RotationReport:
    """Re-encrypt every stored secret with the newest key; the report counts what happened."""
    ks = key_set(settings)
    report = RotationReport(key_id=ks.newest.kid, keys_in_set=len(ks.keys))
    for model, name in ENCRYPTED_COLUMNS:
        _rotate_column(session, settings, model, name, report)
    audit.record(session, actor_id=None, actor_name=actor_name, action="secrets.rotate", object_type="keyset",
                 object_id=ks.newest.kid, after=report.as_dict())
    session.commit()
    return report
