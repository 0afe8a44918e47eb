from __future__ import annotations

import pytest

from provisioner.core.webhook_rules import backoff_seconds, is_loopback, unknown_events, url_problem


@pytest.mark.parametrize("url", ["https://hooks.example.com/p?x=1", "http://127.0.0.1:8080/h", "http://[::1]/h",
                                 "http://localhost:9/h", "http://127.3.4.5/h", "https://10.0.0.1/h"])
def test_allowed_urls(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(("url", "why"), [
    ("http://example.com/h", "loopback"), ("http://10.0.0.1/h", "loopback"), ("ftp://127.0.0.1/h", "https://"),
    ("https:///nohost", "no host"), ("https://u:p@example.com/", "credentials"), ("https://e.com/#x", "fragment"),
    ("https://e.com:99999/", "parsed"), ("https://e.com/" + "a" * 2048, "longer"), ("javascript:alert(1)", "https://"),
])
def test_refused_urls(url: str, why: str) -> None:
    problem = url_problem(url)
    assert problem is not None and why in problem


def test_loopback() -> None:
    assert is_loopback("LOCALHOST") and is_loopback("::1") and not is_loopback("127.example.com")


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_seconds(n, 10, 60) for n in range(0, 6)] == [0.0, 10.0, 20.0, 40.0, 60.0, 60.0]


def test_unknown_events() -> None:
    assert unknown_events(["job.failed", "job.boom", "image.promoted"]) == ["job.boom"]
