"""Property-based testing of the OpenAPI description against a real `provisioner serve` process
(uvicorn), on SQLite and on PostgreSQL, as an admin and as a customer: every operation, every
schemathesis check (no server error, status codes, content types, headers and bodies as described,
invalid data refused, valid data not refused for schema reasons).

Each operation is driven through schemathesis' Python API (`op.as_strategy()` under hypothesis)
rather than its pytest plugin, whose lazy `from_fixture` loader fails under pytest 9 ('Function'
object has no attribute '_nodeid'); this also reports every failing operation in one run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import PG_BASE, create_database, drop_database
from tests.integration.harness import TEST_PLAYBOOKS
from tests.integration.procs import Service, admin_token

# CI cost: 47 operations x 2 modes x MAX_EXAMPLES cases x 2 roles, per database (README "Bad input").
MAX_EXAMPLES = 6


@pytest.fixture(scope="module")
def pg_url_module(pg_admin: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for the module's service process (which migrates it)."""
    name = create_database(pg_admin, "prov_st")
    yield f"{PG_BASE}/{name}"
    drop_database(pg_admin, name)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp(f"st-{request.param}")
    env = {"PROVISIONER_DATA_DIR": str(tmp / "data"), "PROVISIONER_PLAYBOOK_DIR": str(TEST_PLAYBOOKS),
           "PROVISIONER_RUN_RECONCILER": "0", "PROVISIONER_ACCESS_LOG": "0"}
    if request.param == "postgresql":
        env["PROVISIONER_DATABASE_URL"] = request.getfixturevalue("pg_url_module")
    admin = admin_token(env)
    svc = Service(env, tmp / "api.log")
    try:
        with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as c:
            tenant = c.post("/v1/tenants", json={"name": "acme", "quota": {"default": 5}}).json()
            user = c.post("/v1/users", json={"name": "alice", "role": "customer", "tenant_id": tenant["id"]}).json()
            customer = c.post(f"/v1/users/{user['id']}/tokens", json={"name": "st"}).json()["token"]
            c.post("/v1/hosts", json={"name": "n1", "address": "192.0.2.1", "ssh_key_path": "/nonexistent",
                                      "commission": False})
            r = c.post("/v1/waivers", json={"code": "backup.required", "scope": "tenant:acme",
                                            "justification": "a test waiver with a reason long enough"})
            assert r.status_code == 201, r.text
        yield {"url": svc.url, "tokens": {"admin": admin, "customer": customer}, "svc": svc}
    finally:
        svc.stop()


# The description marks CIDR networks (firewall sources) with format "cidr"; without a generator
# schemathesis would send any string there and call the 422 a rejection of valid data.
schemathesis.openapi.format("cidr", st.builds(
    lambda ip, bits: f"{ip}/{bits % (33 if ip.version == 4 else 129)}", st.ip_addresses(), st.integers(0, 128)))


# Codes that mean "the input does not match the description": schema-valid data must never get them.
SCHEMA_CODES = frozenset({"request.invalid", "request.malformed_json", "request.nul_character"})


def schema_valid_data_passes_validation(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' positive_data_acceptance, except that a 422 with a code of the service's rules
    (guardrails.violations, waiver.invalid, host.credential_required, ...) is a legitimate answer to
    schema-valid data: the description cannot carry the policy. A 4xx for a schema reason can't."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return None
    code = response.json().get("code")
    assert code not in SCHEMA_CODES, f"schema-valid data refused as {code}: {response.text[:500]}"
    return True


def test_every_operation_conforms(live_api: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_url(live_api["url"] + "/openapi.json")
    # The test sends each case once per role with that role's real token: a generated (or, in negative
    # mode, mutated) Authorization header would be overwritten, and a "violating" case then sent valid.
    schema.config.generation.update(with_security_parameters=False)
    headers = {who: {"Authorization": f"Bearer {tok}"} for who, tok in live_api["tokens"].items()}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            # No shrinking: a failure is reported as found (with its curl line), at no extra cost.
            @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            def run(case: Any) -> None:
                for h in headers.values():
                    case.call_and_validate(base_url=live_api["url"], headers=h,
                                           excluded_checks=[positive_data_acceptance],
                                           additional_checks=[schema_valid_data_passes_validation])

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, f"{op.label}: no valid request can be generated"
                # Nothing to negate (an operation without parameters or body): nothing to try.
            except BaseException as exc:  # schemathesis raises a BaseExceptionGroup of its failures
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failures.append(f"{op.label} [{mode.value}]: {exc}"[:3000])
    assert operations >= 30, f"only {operations} operations in the description"
    assert not failures, f"{len(failures)} operation(s) failed:\n" + "\n\n".join(failures)
