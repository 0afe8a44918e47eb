"""Encryption at rest for stored secrets (the key set's MultiFernet), and hashing of API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.fernet import InvalidToken

from provisioner.core.errors import Unavailable
from provisioner.store.config import Settings
from provisioner.store.keyset import HINT, key_set


class SecretUndecryptable(Unavailable):
    """A stored secret was encrypted with a key this process does not have."""

    def __init__(self) -> None:
        super().__init__("secrets.undecryptable",
                         "a stored secret cannot be decrypted with this process's key set",
                         hint="the key that encrypted it is missing here: " + HINT)


def encrypt(settings: Settings, plaintext: str) -> str:
    """Encrypted with the newest key."""
    return key_set(settings).fernet().encrypt(plaintext.encode()).decode()


def decrypt(settings: Settings, ciphertext: str) -> str:
    """Decrypted with whichever key of the set encrypted it."""
    try:
        return key_set(settings).fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretUndecryptable() from None


def is_current(settings: Settings, ciphertext: str) -> bool:
    """True when the newest key decrypts it (nothing to re-encrypt)."""
    try:
        key_set(settings).newest_fernet().decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


def reencrypt(settings: Settings, ciphertext: str) -> str:
    """The same plaintext under the newest key; raises SecretUndecryptable when no key opens it."""
    try:
        return key_set(settings).fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretUndecryptable() from None


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
