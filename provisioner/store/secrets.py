"""Encryption at rest for host credentials (Fernet), and hashing of API tokens."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from provisioner.store.config import Settings


def _fernet(settings: Settings) -> Fernet:
    if settings.secret_key:
        return Fernet(settings.secret_key.encode())
    path = settings.data_dir / "secret.key"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting together must not write two different keys.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
        except FileExistsError:
            pass
    return Fernet(Path(path).read_bytes().strip())


def encrypt(settings: Settings, plaintext: str) -> str:
    return _fernet(settings).encrypt(plaintext.encode()).decode()


def decrypt(settings: Settings, ciphertext: str) -> str:
    try:
        return _fernet(settings).decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("stored credential cannot be decrypted with this service's secret key") from exc


def new_token() -> tuple[str, str, str]:
    """Returns (full token shown once, public token id, hash of the secret part)."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"prov_{token_id}_{secret}", token_id, hash_secret(secret)


def hash_secret(secret: str) -> str:
    # Tokens carry 256 bits of randomness, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "prov" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
