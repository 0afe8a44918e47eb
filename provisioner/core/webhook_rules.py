"""Webhook rules, pure: which events exist, which URLs a tenant may register, how retries back off.

URLs: https anywhere, plain http only to a loopback address (127.0.0.0/8, ::1, localhost). A
signed payload over plain http still leaks its content to anyone on the path; loopback http is
for a receiver on the same machine (a local relay, the tests). Credentials in the URL are refused:
they would sit in the database unencrypted and show in every listing.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# What a tenant can subscribe to. Image events go to every tenant's subscribers (the catalogue is
# shared); the others only to the tenant whose job, request or host it is.
EVENT_TYPES: tuple[str, ...] = (
    "job.succeeded",
    "job.failed",
    "lease.warning",
    "lease.expired",
    "compliance.drift",
    "image.promoted",
    "image.deprecated",
)

MAX_URL_LENGTH = 2048


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook target, or None when it can."""
    if len(url) > MAX_URL_LENGTH:
        return f"the URL is longer than {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError as exc:
        return f"the URL cannot be parsed ({exc})"
    del port
    if parts.scheme not in ("https", "http"):
        return "the URL must start with https:// (or http:// to a loopback address)"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "the URL must not carry credentials (the payload is signed instead)"
    if parts.fragment:
        return "the URL must not have a #fragment"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "plain http is allowed only to a loopback address (127.0.0.1, ::1, localhost); use https"
    return None


def is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def unknown_events(events: list[str]) -> list[str]:
    return [e for e in events if e not in EVENT_TYPES]


def backoff_seconds(attempts_made: int, base: float, cap: float) -> float:
    """Wait before the next attempt after `attempts_made` failed ones: base, 2*base, 4*base, ... capped."""
    if attempts_made < 1:
        return 0.0
    return float(min(cap, base * 2 ** (attempts_made - 1)))


def is_success(status_code: int) -> bool:
    return 200 <= status_code < 300
