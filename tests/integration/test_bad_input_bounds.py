"""Bad input that used to reach the database (or the calendar) and come back as a 500, on SQLite and
on PostgreSQL: NUL characters, ids beyond the column range, datetimes at the calendar's edges, label
maps without end, unknown query parameters; and the HTTP details around errors (405 with Allow, one
X-Request-ID, 413 for chunked bodies). Each refused request must write nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.harness import PUBKEY, World
from tests.integration.test_bad_input import assert_problem, counts
from tests.integration.test_dashboard import signed_in

Case = tuple[str, str, str, Any, int, str]  # (who, method, path, json body, status, code)

INT_MAX = 2**31 - 1
OUT_OF_RANGE = [2**31, 2**63, 2**64, 10**30]
PATH_ID_ROUTES = [
    ("GET", "/v1/hosts/{}"), ("POST", "/v1/hosts/{}/commission"), ("POST", "/v1/hosts/{}/state"),
    ("POST", "/v1/hosts/{}/compliance-check"), ("GET", "/v1/requests/{}"), ("POST", "/v1/requests/{}/release"),
    ("POST", "/v1/requests/{}/extend"), ("GET", "/v1/jobs/{}"), ("GET", "/v1/jobs/{}/events"),
    ("POST", "/v1/jobs/{}/cancel"), ("GET", "/v1/waivers/{}"), ("POST", "/v1/waivers/{}/approve"),
    ("POST", "/v1/waivers/{}/reject"), ("POST", "/v1/waivers/{}/revoke"), ("PUT", "/v1/tenants/{}/quota"),
    ("POST", "/v1/users/{}/tokens"), ("GET", "/v1/images/{}"), ("POST", "/v1/images/{}/promote"),
    ("POST", "/v1/images/{}/purge"), ("POST", "/v1/images/{}/canary"), ("POST", "/v1/images/{}/flag"),
    ("POST", "/v1/images/{}/verify"), ("GET", "/v1/images/{}/content"), ("GET", "/v1/images/{}/bmap"),
]
# A body that is valid for the routes above that need one, so only the path id is wrong.
VALID_BODY = {"/state": {"state": "maintenance"}, "/extend": {"hours": 1}, "/approve": {"expires_at": None},
              "/quota": {"quota": {}}, "/promote": {"to": "stable"}, "/flag": {"reason": "bad"}}


def body_for(path: str) -> Any:
    for suffix, body in VALID_BODY.items():
        if path.endswith(suffix):
            return body
    return {}


@pytest.fixture
def w(world: World) -> Iterator[World]:
    world.enroll("node1", wait=False, commission=False)
    yield world


def call(w: World, who: str, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    return w.client.request(method, path, headers=w.h(who) | kw.pop("headers", {}),
                            json=body if body is not None and "content" not in kw else None, **kw)


def check_all(w: World, cases: list[Case]) -> None:
    """Runs every case and reports all mismatches at once; nothing may have been written."""
    before = counts(w)
    failures = []
    for who, method, path, body, status, code in cases:
        r = call(w, who, method, path, body)
        try:
            assert_problem(r, status, code)
        except AssertionError as exc:
            failures.append(f"{method} {path} {body!r:.120}: {exc}")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)
    assert counts(w) == before, "a refused request wrote something"


def nul_cases(user_id: int) -> list[tuple[str, str, str, Any, str]]:
    """(who, method, path, json body, the field the 422 must name); `user_id`: a user to mint a token for."""
    nul = "a\x00b"
    return [
        ("cust_a", "POST", "/v1/waivers",
         {"code": "backup.required", "scope": "tenant:acme", "justification": "long enough reason " + nul},
         "body.justification"),
        ("operator", "POST", "/v1/hosts", {"name": "h2", "address": "127.0.0.1", "connection": "local",
                                           "labels": {"rack": nul}}, "body.labels.rack"),
        ("operator", "POST", "/v1/hosts", {"name": "h2", "address": "127.0.0.1", "connection": "local",
                                           "labels": {"ra\x00ck": "x"}}, "body.labels.ra\\u0000ck"),
        ("operator", "POST", "/v1/hosts", {"name": "h2", "address": "1.2.3.4" + nul, "connection": "local"},
         "body.address"),
        ("admin", "POST", f"/v1/users/{user_id}/tokens", {"name": nul}, "body.name"),
        ("imager", "POST", "/v1/images/1/flag", {"reason": nul}, "body.reason"),
        ("operator", "POST", "/v1/hosts/1/state", {"state": "maintenance", "reason": nul}, "body.reason"),
        ("cust_a", "POST", "/v1/requests", {"ssh_public_key": PUBKEY + nul},
         "body.ssh_public_key"),
        ("admin", "PUT", "/v1/policy", {"backup_schedules_allowed": ["daily", nul]},
         "body.backup_schedules_allowed.1"),
        ("operator", "GET", "/v1/hosts?name=a%00b", None, "query.name"),
        ("auditor", "GET", "/v1/audit?actor=%00", None, "query.actor"),
        ("auditor", "GET", "/v1/audit?action=x&object_id=%00", None, "query.object_id"),
        ("cust_a", "GET", "/v1/waivers?scope=tenant:a%00", None, "query.scope"),
        ("admin", "DELETE", "/v1/tokens/abc%00def", None, "path"),
    ]


def test_nul_is_refused_naming_the_field(w: World) -> None:
    cases = nul_cases(w.ids["cust_a"])
    before = counts(w)
    for who, method, path, body, field in cases:
        r = call(w, who, method, path, body)
        problem = assert_problem(r, 422, "request.nul_character")
        assert [e["field"] for e in problem["errors"]] == [field], (path, problem)
        assert field in problem["detail"] and problem["hint"]
        assert "\x00" not in r.text
    assert counts(w) == before
    # The dashboard's sign-in form too (a NUL token id must not reach the token lookup).
    r = w.client.post("/ui/login", content=b"token=prov_%00_x",
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert assert_problem(r, 422, "request.nul_character")["errors"][0]["field"] == "body.token"


def path_id_cases() -> list[Case]:
    cases = []
    for method, template in PATH_ID_ROUTES:
        path = template.format("{}")
        who = "admin" if "/images/" not in path else "imager"
        for value in OUT_OF_RANGE:
            cases.append((who, method, template.format(value), body_for(path), 422, "request.invalid"))
    return cases


def test_ids_beyond_the_column_range_are_refused_on_every_path(w: World) -> None:
    check_all(w, path_id_cases())


def test_path_ids_at_the_column_edge_are_ordinary_not_found(w: World) -> None:
    for route in ("/v1/hosts/{}", "/v1/jobs/{}", "/v1/requests/{}", "/v1/waivers/{}", "/v1/images/{}"):
        r = w.get("admin", route.format(INT_MAX))
        assert_problem(r, 404)


def filter_cases() -> list[Case]:
    cases: list[Case] = []
    for value in OUT_OF_RANGE:
        cases += [
            ("cust_a", "GET", f"/v1/jobs?host_id={value}", None, 422, "request.invalid"),
            ("cust_a", "GET", f"/v1/jobs?request_id={value}", None, 422, "request.invalid"),
            ("cust_a", "GET", f"/v1/jobs/1/events?after_seq={value}", None, 422, "request.invalid"),
            ("admin", "POST", "/v1/users", {"name": "u9", "role": "customer", "tenant_id": value}, 422,
             "request.invalid"),
            ("admin", "POST", "/v1/images/1/canary", {"tenant_id": value}, 422, "request.invalid"),
            ("cust_a", "GET", f"/v1/hosts?offset={value}", None, 422, "request.invalid"),
            ("cust_a", "GET", f"/v1/jobs?limit={value}", None, 422, "request.invalid"),
        ]
    # At the edge the value is fine and the answer is the domain's.
    cases.append(("admin", "POST", "/v1/users", {"name": "u9", "role": "customer", "tenant_id": INT_MAX}, 422,
                  "user.unknown_tenant"))
    return cases


def test_id_filters_and_body_ids_beyond_the_column_range(w: World) -> None:
    check_all(w, filter_cases())
    r = w.get("cust_a", f"/v1/jobs?host_id={INT_MAX}&request_id={INT_MAX}")
    assert r.status_code == 200 and r.json()["items"] == []
    job = w.get("operator", "/v1/jobs").json()["items"]
    if job:
        assert w.get("operator", f"/v1/jobs/{job[0]['id']}/events?after_seq={INT_MAX}").json()["items"] == []


def test_dashboard_job_id_beyond_the_column_range(w: World) -> None:
    c = signed_in(w, "operator")
    for value in OUT_OF_RANGE:
        for path in (f"/ui/jobs/{value}", f"/ui/requests/{value}"):
            r = c.get(path, follow_redirects=False)
            assert r.status_code in (404, 422), (value, r.status_code, r.text[:300])
    assert c.get(f"/ui/jobs/{INT_MAX}", follow_redirects=False).status_code == 404
    assert c.get(f"/ui/requests/{INT_MAX}", follow_redirects=False).status_code == 404


def test_datetimes_at_the_calendar_edges(w: World) -> None:
    r = w.post("cust_a", "/v1/waivers", WAIVER)
    assert r.status_code == 201, r.text
    check_all(w, datetime_cases(r.json()["id"]))
    assert w.get("auditor", "/v1/audit?since=1970-01-01T00:00:00%2B01:00").status_code == 200
    assert w.get("auditor", "/v1/audit?since=8999-12-31T23:59:59-05:00").json()["items"] == []


WAIVER = {"code": "backup.required", "scope": "tenant:acme",
          "justification": "the backup store is being moved this week"}


def datetime_cases(waiver: int) -> list[Case]:
    """`waiver`: a pending waiver's id (approving it with a bad expiry must be refused)."""
    cases: list[Case] = []
    for bad in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "1969-12-31T23:00:00Z",
                "9000-01-01T00:00:00Z", "1700000000", "yesterday"):
        cases.append(("auditor", "GET", "/v1/audit?since=" + bad.replace("+", "%2B"), None, 422, "request.invalid"))
        cases.append(("operator", "POST", f"/v1/waivers/{waiver}/approve", {"expires_at": bad}, 422,
                      "request.invalid"))
    cases.append(("operator", "POST", f"/v1/waivers/{waiver}/approve", {"expires_at": 1700000000}, 422,
                  "request.invalid"))
    # In range but beyond the policy: the policy's answer, not the calendar's.
    cases.append(("operator", "POST", f"/v1/waivers/{waiver}/approve", {"expires_at": "8999-12-31T23:59:59-05:00"},
                  422, "waiver.invalid"))
    return cases


def policy_cases() -> list[Case]:
    cases: list[Case] = [("admin", "PUT", "/v1/policy", {field: value}, 422, "policy.invalid")
             for field in ("waiver_max_days", "restore_test_max_age_days", "max_lease_hours",
                           "backup_retention_days_max", "max_open_ports")
             for value in (2**31, 2**63, 10**30, -1)]
    cases.append(("cust_a", "POST", "/v1/requests/1/extend", {"hours": 10**12}, 422, "request.invalid"))
    # Found by schemathesis: unhashable items in a set field were a TypeError (500), not a refusal.
    cases += [("admin", "PUT", "/v1/policy", {"lab_pools": [[{}]]}, 422, "policy.invalid"),
              ("admin", "PUT", "/v1/policy", {"management_ports": [{"a": 1}]}, 422, "policy.invalid")]
    # Found by schemathesis: a set field given an item twice was shortened silently (its schema says
    # uniqueItems): refused now, and the policy is not changed.
    cases += [("admin", "PUT", "/v1/policy", {"pools_requiring_redundancy": ["db", "db"]}, 422, "policy.invalid"),
              ("admin", "PUT", "/v1/policy", {"management_ports": [22, 2222, 22]}, 422, "policy.invalid")]
    return cases


def test_policy_numbers_are_bounded(w: World) -> None:
    check_all(w, policy_cases())


def label_cases() -> list[Case]:
    many = {f"l{i}": "x" for i in range(40_000)}
    return [
        ("operator", "POST", "/v1/hosts", {"name": "h3", "address": "127.0.0.1", "connection": "local",
                                           "labels": many}, 422, "request.invalid"),
        ("operator", "POST", "/v1/hosts", {"name": "h3", "address": "127.0.0.1", "connection": "local",
                                           "labels": {f"l{i}": "x" for i in range(65)}}, 422, "request.invalid"),
        ("cust_a", "POST", "/v1/requests", {"ssh_public_key": PUBKEY,
                                            "constraints": {"labels": {f"l{i}": "x" for i in range(5000)}}},
         422, "request.invalid"),
        ("cust_a", "POST", "/v1/requests", {"ssh_public_key": PUBKEY,
                                            "constraints": {"labels": {f"l{i}": "x" for i in range(17)}}},
         422, "request.invalid"),
        # At the bound the query runs and the answer is the allocator's: no host has these labels.
        ("cust_a", "POST", "/v1/requests", {"ssh_public_key": PUBKEY,
                                            "constraints": {"labels": {f"l{i}": "x" for i in range(16)}}},
         409, "capacity.insufficient"),
    ]


def test_label_maps_are_bounded(w: World) -> None:
    check_all(w, label_cases())
    r = w.post("operator", "/v1/hosts", {"name": "h4", "address": "127.0.0.1", "connection": "local",
                                         "commission": False, "labels": {f"l{i}": "x" for i in range(64)}})
    assert r.status_code == 201 and len(r.json()["labels"]) == 64


QUERY_CASES: list[Case] = [
    ("operator", "GET", "/v1/hosts?stat=active", None, 422, "request.invalid"),
    ("operator", "GET", "/v1/hosts?name=a&name=b", None, 422, "request.invalid"),
    ("cust_a", "GET", "/v1/jobs?status=failed&status=queued", None, 422, "request.invalid"),
    ("operator", "POST", "/v1/hosts/1/state?force=1", {"state": "maintenance"}, 422, "request.invalid"),
]


def test_unknown_and_repeated_query_parameters(w: World) -> None:
    check_all(w, QUERY_CASES)
    r = w.get("operator", "/v1/hosts?stat=active")
    assert r.json()["errors"] == [{"field": "query.stat", "message": "unknown query parameter",
                                   "type": "extra_forbidden"}]
    assert "state" in r.json()["hint"]


def test_405_says_allow(w: World) -> None:
    for method, path, allow in (("PATCH", "/v1/requests", "GET, HEAD, POST"), ("DELETE", "/v1/hosts/1", "GET, HEAD"),
                                ("PUT", "/v1/jobs/1/cancel", "POST")):
        r = call(w, "cust_a", method, path)
        assert_problem(r, 405, "method.not_allowed")
        assert r.headers["allow"] == allow, (path, r.headers)


def test_one_request_id_on_every_answer(w: World) -> None:
    answers = [
        call(w, "cust_a", "GET", "/v1/hosts/999"),  # 404
        call(w, "cust_a", "GET", "/v1/hosts/x"),  # 422
        call(w, "cust_a", "PATCH", "/v1/requests"),  # 405
        call(w, "cust_a", "GET", "/v1/hosts?name=%00"),  # 422 at the door
        w.client.get("/v1/hosts"),  # 401
        call(w, "cust_a", "GET", "/v1/hosts"),  # 200
        call(w, "admin", "POST", "/v1/tenants", content=b"{" + b" " * 2_000_000 + b"}",
             headers={"content-type": "application/json"}),  # 413
    ]
    for r in answers:
        assert len(r.headers.get_list("x-request-id")) == 1, (r.status_code, r.headers)
        if r.status_code >= 400:
            assert r.json()["request_id"] == r.headers["x-request-id"]
    r = w.client.get("/v1/hosts/999", headers=w.h("cust_a") | {"X-Request-ID": "trace-42"})
    assert r.headers.get_list("x-request-id") == ["trace-42"] and r.json()["request_id"] == "trace-42"


def test_oversized_chunked_body_is_413(w: World) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(2000):
            yield b"a" * 1024
        yield b'"}'

    before = counts(w)
    r = w.client.post("/v1/tenants", content=chunks(), headers=w.h("admin") | {"content-type": "application/json"})
    assert "content-length" not in r.request.headers  # really chunked
    assert_problem(r, 413, "request.too_large")
    assert counts(w) == before
    # A small chunked body still works.
    r = w.client.post("/v1/tenants", content=iter([b'{"name": ', b'"chunky"}']),
                      headers=w.h("admin") | {"content-type": "application/json"})
    assert r.status_code == 201, r.text


def test_sqlite_errors_that_a_retry_cannot_fix_are_not_503() -> None:
    from sqlalchemy.exc import OperationalError

    from provisioner.api.problems import retry_can_help

    def err(msg: str) -> OperationalError:
        return OperationalError("SELECT 1", {}, sqlite3.OperationalError(msg))

    assert retry_can_help(err("database is locked"))
    assert retry_can_help(err("unable to open database file"))
    assert not retry_can_help(err("Expression tree is too large (maximum depth 1000)"))
    assert not retry_can_help(err("too many SQL variables"))
