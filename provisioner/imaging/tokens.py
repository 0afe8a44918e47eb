"""Per-job image tokens: what a host being provisioned presents to download one image.

A token is ``pimg_`` + a JWT (HS256, PyJWT) whose claims bind a job id and an image id, with the
expiry (``exp``) and the audience (``aud``: image content of this service) checked by the library.
The signing key is derived from the newest key of the service's key set (``store/keyset.py``) and
named in the JWT header (``kid``); a token is checked with the key its ``kid`` names, so tokens
issued before a rotation stay valid while their key is still in the set. Every API process and
worker shares the key set, so any of them can issue or check tokens; nothing is stored.

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
from provisioner.store.keyset import key_set

PREFIX = "pimg_"
AUDIENCE = "provisioner:image-content"
ALGORITHM = "HS256"
DEFAULT_TTL_S = 3 * 3600  # an image phase may run 1 h and be retried once; the job binding is the real bound
_KEY_CONTEXT = b"provisioner image token v1"
TOKEN_HINT = ("image content is fetched by the image phase of a job with the token it was given "
              "(Authorization: Bearer pimg_...); it is not an API token")


@dataclass(frozen=True)
class ImageClaims:
    job_id: int
    image_id: int
    expires_at: float


@lru_cache(maxsize=8)
def _derive(material: bytes) -> bytes:
    return hmac.new(material, _KEY_CONTEXT, hashlib.sha256).digest()


def issue(settings: Settings, *, job_id: int, image_id: int, ttl_s: float = DEFAULT_TTL_S,
          now: float | None = None) -> str:
    exp = int((time.time() if now is None else now) + ttl_s)
    claims = {"job": job_id, "img": image_id, "exp": exp, "aud": AUDIENCE}
    newest = key_set(settings).newest
    return PREFIX + jwt.encode(claims, _derive(newest.material), algorithm=ALGORITHM,
                               headers={"kid": newest.kid})


def _verification_key(settings: Settings, token: str) -> bytes:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        raise Unauthenticated("image.token_invalid", "the image token is malformed", hint=TOKEN_HINT) from None
    key = key_set(settings).by_kid(kid) if isinstance(kid, str) else None
    if key is None:
        raise Unauthenticated("image.token_invalid", "the image token was signed with a key this service does "
                              "not have", hint=TOKEN_HINT + "; every API and worker process must share the "
                              "key set (PROVISIONER_SECRET_KEY or PROVISIONER_SECRET_KEY_FILE), and a key "
                              "removed after a rotation no longer verifies its tokens")
    return _derive(key.material)


def verify(settings: Settings, token: str | None, image_id: int, *, now: float | None = None) -> ImageClaims:
    """The token's claims if it grants access to ``image_id`` now, else raises Unauthenticated / Forbidden."""
    if not token:
        raise Unauthenticated("image.token_required", "this endpoint needs an image token", hint=TOKEN_HINT)
    if not token.startswith(PREFIX):
        raise Unauthenticated("image.token_invalid", "the image token is malformed", hint=TOKEN_HINT)
    at = time.time() if now is None else now
    jwt_text = token[len(PREFIX):]
    key = _verification_key(settings, jwt_text)
    try:
        # Expiry is judged against `at` below (tests pass a clock); everything else by the library.
        data = jwt.decode(jwt_text, key, algorithms=[ALGORITHM], audience=AUDIENCE,
                          options={"verify_exp": False, "require": ["exp", "aud", "job", "img"]})
        claims = ImageClaims(int(data["job"]), int(data["img"]), float(data["exp"]))
    except jwt.InvalidSignatureError:
        raise Unauthenticated("image.token_invalid", "the image token's signature does not verify",
                              hint=TOKEN_HINT) from None
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
    """The token from ``Authorization: Bearer``. A token in the query string is refused: URLs end up
    in access logs, proxies and shell histories, where a token outlives its purpose."""
    if query_token is not None:
        raise Unauthenticated("image.token_in_query", "image tokens are not accepted in the query string",
                              hint="send the token as an Authorization: Bearer pimg_... header")
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
