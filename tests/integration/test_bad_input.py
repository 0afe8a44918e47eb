"""Bad input on every endpoint: a clear 4xx problem document, never a 500, nothing written."""

from __future__ import annotations

import pytest

from tests.integration.harness import PUBKEY, World

GOOD_REQUEST = {"ssh_public_key": PUBKEY}


def counts(w: World) -> tuple[int, int, int, int]:
    from sqlalchemy import func
    from sqlmodel import select

    from provisioner.store.db import session_scope
    from provisioner.store.models import Host, HostRequest, Job, Tenant

    with session_scope() as s:
        return tuple(s.exec(select(func.count()).select_from(m)).one() for m in (Tenant, Host, HostRequest, Job))


def assert_problem(r, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json", r.headers
    body = r.json()
    assert {"type", "title", "status", "code", "detail"} <= set(body) and body["status"] == status
    if code:
        assert body["code"] == code, body
    return body


CASES = [
    # (who, method, path, raw body or json, expected status, expected code)
    ("admin", "POST", "/v1/tenants", b"{not json", 400, "request.malformed_json"),
    ("admin", "POST", "/v1/tenants", {"name": ""}, 422, "request.invalid"),
    ("admin", "POST", "/v1/tenants", {"name": "x", "quota": {"default": -1}}, 422, "request.invalid"),
    ("admin", "POST", "/v1/tenants", {"name": "x", "colour": "red"}, 422, "request.invalid"),
    ("admin", "POST", "/v1/tenants", {"name": "acme"}, 409, "tenant.exists"),
    ("admin", "POST", "/v1/tenants", [1, 2], 422, "request.invalid"),
    ("admin", "POST", "/v1/users", {"name": "u", "role": "god"}, 422, "request.invalid"),
    ("admin", "POST", "/v1/users", {"name": "u", "role": "customer"}, 422, "user.tenant_required"),
    ("admin", "POST", "/v1/users", {"name": "u", "role": "customer", "tenant_id": 999}, 422, "user.unknown_tenant"),
    ("admin", "POST", "/v1/users", {"name": "operator", "role": "operator"}, 409, "user.exists"),
    ("admin", "POST", "/v1/users/999/tokens", {}, 404, "user.not_found"),
    ("admin", "POST", "/v1/users/abc/tokens", {}, 422, "request.invalid"),
    ("admin", "POST", "/v1/users/1/tokens", {"expires_in_days": 0}, 422, "request.invalid"),
    ("admin", "DELETE", "/v1/tokens/nope", None, 404, "token.not_found"),
    ("operator", "POST", "/v1/hosts", {"name": "h", "address": "1.2.3.4"}, 422, "host.credential_required"),
    ("operator", "POST", "/v1/hosts", {"name": "h", "address": "1.2.3.4", "port": 70000}, 422, "request.invalid"),
    ("operator", "POST", "/v1/hosts", {"name": "bad name!", "address": "1.2.3.4"}, 422, "request.invalid"),
    ("operator", "POST", "/v1/hosts", {"name": "h", "address": "1.2.3.4", "ssh_private_key": "hunter2"},
     422, "request.invalid"),
    ("operator", "POST", "/v1/hosts", {"name": "h", "address": "a", "ssh_private_key":
     "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n", "ssh_key_path": "/k"}, 422, "host.credential_ambiguous"),
    ("operator", "POST", "/v1/hosts", {"name": "node1", "address": "127.0.0.1", "connection": "local"},
     409, "host.exists"),
    ("operator", "POST", "/v1/hosts", {"name": "h", "address": "1.2.3.4", "connection": "telnet"},
     422, "request.invalid"),
    ("operator", "GET", "/v1/hosts?limit=0", None, 422, "request.invalid"),
    ("operator", "GET", "/v1/hosts?limit=100000", None, 422, "request.invalid"),
    ("operator", "GET", "/v1/hosts?offset=-1", None, 422, "request.invalid"),
    ("operator", "GET", "/v1/hosts?state=flying", None, 422, "request.invalid"),
    ("operator", "GET", "/v1/hosts/999", None, 404, "host.not_found"),
    ("operator", "GET", "/v1/hosts/x", None, 422, "request.invalid"),
    ("operator", "POST", "/v1/hosts/999/commission", None, 404, "host.not_found"),
    ("operator", "POST", "/v1/hosts/999/repin", {}, 404, "host.not_found"),
    ("operator", "POST", "/v1/hosts/1/repin", {"fingerprint": "SHA256:short"}, 422, "request.invalid"),
    ("operator", "POST", "/v1/hosts/1/repin", {"fingerprint": "SHA256:" + "A" * 43, "x": 1}, 422,
     "request.invalid"),
    ("operator", "POST", "/v1/hosts", {"name": "h", "address": "a", "ssh_key_path": "/k",
                                       "host_key_fingerprint": "MD5:aa:bb"}, 422, "request.invalid"),
    ("operator", "POST", "/v1/hosts", {"name": "h", "address": "127.0.0.1", "connection": "local",
                                       "host_key_fingerprint": "SHA256:" + "A" * 43}, 422,
     "host.fingerprint_without_ssh"),
    ("operator", "POST", "/v1/hosts/1/state", {"state": "active"}, 422, "request.invalid"),
    ("operator", "POST", "/v1/hosts/1/state", {"state": "retired", "reason": "x" * 501}, 422, "request.invalid"),
    ("cust_a", "POST", "/v1/requests", {}, 422, "request.invalid"),
    ("cust_a", "POST", "/v1/requests", GOOD_REQUEST | {"count": 0}, 422, "request.invalid"),
    ("cust_a", "POST", "/v1/requests", GOOD_REQUEST | {"count": "two"}, 422, "request.invalid"),
    ("cust_a", "POST", "/v1/requests", GOOD_REQUEST | {"raid_level": "7"}, 422, "request.invalid"),
    ("cust_a", "POST", "/v1/requests", GOOD_REQUEST | {"ssh_public_key": "not a key"}, 422, "request.invalid"),
    ("cust_a", "POST", "/v1/requests", GOOD_REQUEST | {"firewall_ports": [{"port": 0}]}, 422, "request.invalid"),
    ("cust_a", "POST", "/v1/requests", GOOD_REQUEST | {"firewall_ports": [{"port": 80, "sources": ["x/99"]}]},
     422, "request.invalid"),
    ("cust_a", "POST", "/v1/requests", GOOD_REQUEST | {"backup": {"paths": ["relative"]}}, 422, "request.invalid"),
    ("cust_a", "POST", "/v1/requests", GOOD_REQUEST | {"constraints": {"min_cpus": -1}}, 422, "request.invalid"),
    ("cust_a", "POST", "/v1/requests", GOOD_REQUEST | {"constraints": {"gpu": True}}, 422, "request.invalid"),
    ("cust_a", "POST", "/v1/requests", GOOD_REQUEST | {"pool": "nowhere"}, 409, "capacity.insufficient"),
    ("cust_a", "POST", "/v1/requests", GOOD_REQUEST | {"count": 5}, 409, "capacity.insufficient"),
    ("cust_a", "GET", "/v1/requests/999", None, 404, "request.not_found"),
    ("cust_a", "POST", "/v1/requests/999/release", None, 404, "request.not_found"),
    ("cust_a", "GET", "/v1/jobs?status=bogus", None, 422, "request.invalid"),
    ("cust_a", "GET", "/v1/jobs?limit=501", None, 422, "request.invalid"),
    ("cust_a", "GET", "/v1/jobs/999", None, 404, "job.not_found"),
    ("cust_a", "GET", "/v1/jobs/1/events?after_seq=-1", None, 422, "request.invalid"),
    ("cust_a", "POST", "/v1/jobs/999/cancel", None, 404, "job.not_found"),
    ("auditor", "GET", "/v1/audit?since=yesterday", None, 422, "request.invalid"),
    ("auditor", "GET", "/v1/audit?limit=-5", None, 422, "request.invalid"),
    ("cust_a", "GET", "/v1/nothing-here", None, 404, "route.not_found"),
    ("cust_a", "PATCH", "/v1/requests", None, 405, "method.not_allowed"),
]


def test_bad_input_everywhere(sqlite_world: World) -> None:
    w = sqlite_world
    w.enroll("node1")
    before = counts(w)
    failures = []
    for who, method, path, body, status, code in CASES:
        kw = {"content": body, "headers": w.h(who) | {"content-type": "application/json"}} if isinstance(
            body, bytes) else {"json": body, "headers": w.h(who)}
        r = w.client.request(method, path, **kw)
        try:
            assert_problem(r, status, code)
        except AssertionError as exc:
            failures.append(f"{method} {path} {body!r:.80}: {exc}")
    assert not failures, "\n".join(failures)
    assert counts(w) == before, "a refused request wrote something"


def test_validation_problem_lists_fields(sqlite_world: World) -> None:
    r = sqlite_world.post("cust_a", "/v1/requests", {"image": "", "count": 0, "ssh_public_key": PUBKEY})
    body = assert_problem(r, 422, "request.invalid")
    fields = {e["field"] for e in body["errors"]}
    assert {"image", "count"} <= fields and "hint" in body


@pytest.mark.parametrize("size", [2_000_000])
def test_oversize_body_is_413(sqlite_world: World, size: int) -> None:
    w = sqlite_world
    r = w.client.post("/v1/tenants", content=b"{" + b" " * size + b"}",
                      headers=w.h("admin") | {"content-type": "application/json"})
    body = assert_problem(r, 413, "request.too_large")
    assert "hint" in body


def test_illegal_host_transition_is_409(sqlite_world: World) -> None:
    w = sqlite_world
    h = w.enroll("node1")
    w.request()
    r = w.post("operator", f"/v1/hosts/{h['id']}/state", {"state": "available"})
    body = assert_problem(r, 409, "host.illegal_transition")
    assert "provisioning" in body["detail"]
    r = w.post("operator", f"/v1/hosts/{h['id']}/commission")
    assert_problem(r, 409, "host.illegal_transition")


def test_release_while_provisioning_is_409(sqlite_world: World) -> None:
    w = sqlite_world
    w.enroll("node1", labels={"sleep": "1"})
    req = w.request().json()
    r = w.post("cust_a", f"/v1/requests/{req['id']}/release")
    assert_problem(r, 409, "request.not_releasable")
    # The refused release touched nothing: the job goes on (the harness stops it at teardown).
    job = w.get("cust_a", f"/v1/jobs/{req['job_ids'][0]}").json()
    assert job["status"] in ("queued", "running") and not job["cancel_requested"], job


def test_cli_reports_problems_clearly(sqlite_world: World) -> None:
    from typer.testing import CliRunner

    from provisioner.cli import app

    runner = CliRunner()
    base = w_url = None
    del base, w_url
    res = runner.invoke(app, ["--url", "http://127.0.0.1:9", "--token", "prov_a_b", "hosts", "list"])
    assert res.exit_code == 1 and "client.unreachable" in res.output
    res = runner.invoke(app, ["-o", "yaml", "hosts", "list"])
    assert res.exit_code != 0 and "--output must be table or json" in res.output
    # The help of `requests create` renders (its --port help once read as rich markup and crashed).
    res = runner.invoke(app, ["requests", "create", "--help"])
    assert res.exit_code == 0 and "PORT[/PROTO][@CIDR,...]" in res.output and "installed OS" in res.output
