"""Who is acting: what the services need to know of the caller (the API's Principal is one)."""

from __future__ import annotations

from typing import Protocol


class Actor(Protocol):
    @property
    def user_id(self) -> int | None: ...
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def tenant_id(self) -> int | None: ...
    @property
    def request_id(self) -> str | None: ...
