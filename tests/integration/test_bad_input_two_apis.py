"""Bad input through two real API processes (`provisioner serve`) on one PostgreSQL, as deployed:
every case table of test_bad_input.py and test_bad_input_bounds.py, sent alternately to process A
and process B, gets its problem document (status, code, application/problem+json), never a 5xx,
and nothing is written. Then duplicate creations raced across the two processes: the same tenant,
user or host sent to both at the same instant gives one 201 and one 409, never a 500.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from provisioner.store.db import reset_engines
from tests.integration import test_bad_input as bad
from tests.integration import test_bad_input_bounds as bounds
from tests.integration.harness import TEST_PLAYBOOKS, World, configure, populate
from tests.integration.procs import Service

pytestmark = pytest.mark.timeout(600)

RACES = 8


@pytest.fixture
def two_apis(tmp_path: Path, pg_url: str) -> Iterator[tuple[World, World]]:
    """Worlds (tenants, users, tokens as harness.populate makes them) on processes A and B."""
    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_DATABASE_URL": pg_url,
           "PROVISIONER_PLAYBOOK_DIR": str(TEST_PLAYBOOKS), "PROVISIONER_ALLOW_LOCAL_CONNECTION": "1",
           "PROVISIONER_RUN_RECONCILER": "0", "PROVISIONER_ACCESS_LOG": "0"}
    configure(env)  # this process reads the same database (the admin token, counts)
    procs: list[Service] = []
    try:
        procs.append(Service(env, tmp_path / "api-a.log"))
        procs.append(Service(env, tmp_path / "api-b.log"))  # after A: A has migrated the schema
        a = populate(httpx.Client(base_url=procs[0].url, timeout=60))  # type: ignore[arg-type]
        b = World(httpx.Client(base_url=procs[1].url, timeout=60), tokens=a.tokens, ids=a.ids)  # type: ignore[arg-type]
        a.enroll("node1", wait=False, commission=False)
        yield a, b
    finally:
        for p in procs:
            p.stop()
        reset_engines()


def send(w: World, who: str, method: str, path: str, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return w.client.request(method, path, content=body, headers=w.h(who) | {"content-type": "application/json"})
    return bounds.call(w, who, method, path, body)


def every_case(a: World) -> list[bounds.Case]:
    waiver = a.post("cust_a", "/v1/waivers", bounds.WAIVER)
    assert waiver.status_code == 201, waiver.text
    nul = [(who, method, path, body, 422, "request.nul_character")
           for who, method, path, body, _ in bounds.nul_cases(a.ids["cust_a"])]
    return [*bad.CASES, *nul, *bounds.path_id_cases(), *bounds.filter_cases(),
            *bounds.datetime_cases(waiver.json()["id"]), *bounds.policy_cases(), *bounds.label_cases(),
            *bounds.QUERY_CASES]


def test_bad_input_through_two_api_processes(two_apis: tuple[World, World]) -> None:
    a, b = two_apis
    cases = every_case(a)
    before = bad.counts(a)
    failures, server_errors = [], []
    for i, (who, method, path, body, status, code) in enumerate(cases):
        w = (a, b)[i % 2]
        r = send(w, who, method, path, body)
        if r.status_code >= 500:
            server_errors.append(f"{'AB'[i % 2]} {method} {path} {body!r:.100}: {r.status_code} {r.text[:300]}")
        try:
            bad.assert_problem(r, status, code)
        except AssertionError as exc:
            failures.append(f"{'AB'[i % 2]} {method} {path} {body!r:.100}: {exc}")
    assert not server_errors, f"{len(server_errors)} server errors:\n" + "\n".join(server_errors)
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)
    assert bad.counts(a) == before, "a refused request wrote something"
    print(f"{len(cases)} bad-input cases, alternately through 2 API processes: all refused as expected")


def race(a: World, b: World, who: str, path: str, body: dict[str, Any]) -> list[httpx.Response]:
    """The same creation sent to A and B at the same instant."""
    start = threading.Barrier(2)
    answers: list[httpx.Response | None] = [None, None]

    def one(i: int, w: World) -> None:
        with httpx.Client(base_url=str(w.client.base_url), headers=w.h(who), timeout=60) as c:
            start.wait()
            answers[i] = c.post(path, json=body)

    threads = [threading.Thread(target=one, args=(i, w)) for i, w in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in answers)
    return [r for r in answers if r is not None]


@pytest.mark.parametrize("kind", ["tenant", "user", "host"])
def test_duplicate_creations_raced_across_two_processes(two_apis: tuple[World, World], kind: str) -> None:
    a, b = two_apis
    for i in range(RACES):
        who, path, body = {
            "tenant": ("admin", "/v1/tenants", {"name": f"race-{i}"}),
            "user": ("admin", "/v1/users", {"name": f"race-{i}", "role": "operator"}),
            "host": ("operator", "/v1/hosts", {"name": f"race-{i}", "address": f"10.9.8.{i + 1}",
                                               "connection": "local", "commission": False}),
        }[kind]
        answers = race(a, b, who, path, body)
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [201, 409], [(r.status_code, r.text[:300]) for r in answers]
        lost = next(r for r in answers if r.status_code == 409)
        bad.assert_problem(lost, 409, f"{kind}.exists")
    listing = {"tenant": "/v1/tenants", "user": "/v1/users", "host": "/v1/hosts"}[kind]
    names = [x["name"] for x in a.get("admin", listing, params={"limit": 500}).json()["items"]]
    assert sorted(n for n in names if n.startswith("race-")) == sorted(f"race-{i}" for i in range(RACES))
