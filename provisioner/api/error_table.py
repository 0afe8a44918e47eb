"""The one table from domain errors to HTTP: services refuse in domain terms, the API answers with
the status that family means on the wire (a subclass inherits its family's status)."""

from __future__ import annotations

from provisioner.core.errors import (
    Conflict,
    DeviceFailed,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    StorageFull,
    TooLarge,
    Unauthenticated,
    Unavailable,
)

STATUS: dict[type[DomainError], int] = {
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    Invalid: 422,
    Unavailable: 503,
    StorageFull: 507,  # RFC 4918 Insufficient Storage: the client can do nothing but wait or ask
    # 502 Bad Gateway: the service is fine, the device it drives (a BMC) failed; not retried by
    # clients as a 503 would be, since wrong credentials or another certificate need a person.
    DeviceFailed: 502,
}


def status_for(exc: DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400

