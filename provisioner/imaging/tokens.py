"""Per-job image tokens: what a host being provisioned presents to download one image.

A token is ``pimg_`` + a JWT (HS256, PyJWT) whose claims bind a job id and an image id, with the
expiry (``exp``) and the audience (``aud``: image content of this service) checked by the library.
The key is derived from the service secret (the Fernet key: ``PROVISIONER_SECRET_KEY`` or the key
file in the data dir). Every API process and worker already shares that secret, so any of them can
issue or check tokens; nothing is stored.

Checks, in order (each a domain error): missing → ``image.token_required``; malformed, another
audience or a bad signature → ``image.token_invalid``; expired → ``image.token_expired`` (all
Unauthenticated); issued for another image → Forbidden ``image.token_wrong_image``. The caller
additionally requires the job to be running (``image.token_job_inactive``), so a token dies with
its job even before it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from functools import lru_cache

import jwt

from provisioner.core.errors import Forbidden, Unauthenticated
from provisioner.store.config import Settings

PREFIX = "pimg_"
AUDIENCE = "provisioner:image-content"
ALGORITHM = "HS256"
DEFAULT_TTL_S = 3 * 3600  # an image phase may run 1 h and be retried once; the job binding is the real bound
_KEY_CONTEXT = b"provisioner image token v1"
TOKEN_HINT = ("image content is fetched by the image phase of a job with the token it was given "
              "(Authorization: Bearer pimg_... or ?token=); it is not an API token")


@dataclass(frozen=True)
class ImageClaims:
    job_id: int
    image_id: int
    expires_at: float


@lru_cache(maxsize=8)
def _derive(material: bytes) -> bytes:
    return hmac.new(material, _KEY_CONTEXT, hashlib.sha256).digest()


def _key(settings: Settings) -> bytes:
    if settings.secret_key:
        return _derive(settings.secret_key.encode())
    from provisioner.store.secrets import _fernet  # creates the key file (O_EXCL) when it is missing

    _fernet(settings)
    return _derive((settings.data_dir / "secret.key").read_bytes().strip())


def issue(settings: Settings, *, job_id: int, image_id: int, ttl_s: float = DEFAULT_TTL_S,
          now: float | None = None) -> str:
    exp = int((time.time() if now is None else now) + ttl_s)
    claims = {"job": job_id, "img": image_id, "exp": exp, "aud": AUDIENCE}
    return PREFIX + jwt.encode(claims, _key(settings), algorithm=ALGORITHM)


def verify(settings: Settings, token: str | None, image_id: int, *, now: float | None = None) -> ImageClaims:
    """The token's claims if it grants access to ``image_id`` now, else raises Unauthenticated / Forbidden."""
    if not token:
        raise Unauthenticated("image.token_required", "this endpoint needs an image token", hint=TOKEN_HINT)
    if not token.startswith(PREFIX):
        raise Unauthenticated("image.token_invalid", "the image token is malformed", hint=TOKEN_HINT)
    at = time.time() if now is None else now
    try:
        # Expiry is judged against `at` below (tests pass a clock); everything else by the library.
        data = jwt.decode(token[len(PREFIX):], _key(settings), algorithms=[ALGORITHM], audience=AUDIENCE,
                          options={"verify_exp": False, "require": ["exp", "aud", "job", "img"]})
        claims = ImageClaims(int(data["job"]), int(data["img"]), float(data["exp"]))
    except jwt.InvalidSignatureError:
        raise Unauthenticated("image.token_invalid", "the image token's signature does not verify",
                              hint=TOKEN_HINT + "; tokens are only valid with the secret of the service that "
                              "issued them") from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise Unauthenticated("image.token_invalid", "the image token is malformed", hint=TOKEN_HINT) from None
    if claims.expires_at <= at:
        raise Unauthenticated("image.token_expired", "the image token has expired",
                              hint="re-run the job's image phase: each run gets a fresh token")
    if claims.image_id != image_id:
        raise Forbidden("image.token_wrong_image",
                        f"the image token was issued for image {claims.image_id}, not image {image_id}",
                        hint="use the URL given to the job together with its token")
    return claims


def from_request(authorization: str | None, query_token: str | None) -> str | None:
    """The token from ``Authorization: Bearer`` or the ``token`` query parameter."""
    if query_token:
        return query_token
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
