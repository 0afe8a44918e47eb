"""Domain errors: what the services refuse, with a stable code, a detail and a hint.

Each family says what kind of refusal it is (not found, invalid, conflict, ...); the edges decide
what that means on their wire (the API's one table is `provisioner/api/error_table.py`). Nothing
here knows HTTP.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal the caller can act on."""

    def __init__(self, code: str, detail: str, *, hint: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.hint = hint
        self.extra = extra


class Unauthenticated(DomainError):
    """Credentials are missing, malformed or expired."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class NotFound(DomainError):
    """The object does not exist or is not visible to the caller."""


class Conflict(DomainError):
    """The object's current state does not allow this (retrying after a change may succeed)."""


class Invalid(DomainError):
    """The input is well formed but not acceptable (policy, rules, values)."""


class TooLarge(DomainError):
    """The input is bigger than the service accepts."""


class Unavailable(DomainError):
    """Something the service needs is missing or broken right now; retrying later may succeed."""


class DeviceFailed(DomainError):
    """A device the service drives for the caller (a host's BMC) could not be reached, refused, or
    presented another identity; the detail carries the device's own words. Nothing was changed."""


class StorageFull(Unavailable):
    """The storage the service writes to has no room left; retrying after space is freed may succeed."""


def not_found(kind: str, ident: object) -> NotFound:
    return NotFound(f"{kind}.not_found", f"{kind} {ident} does not exist or is not visible to you",
                    hint=f"list the {kind}s you can see with GET /v1/{kind}s")
