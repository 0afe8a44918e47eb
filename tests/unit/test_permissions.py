from __future__ import annotations

import pytest

from provisioner.core.permissions import PERMISSIONS, Role, allowed, tenant_scoped

R = Role
EXPECTED = {
    "tenants:write": {R.admin}, "users:write": {R.admin}, "tokens:write": {R.admin},
    "users:read": {R.admin, R.auditor}, "tenants:read": {R.admin, R.operator, R.auditor},
    "hosts:write": {R.operator, R.admin}, "hosts:read": set(R),
    "requests:create": {R.customer, R.imager}, "requests:read": set(R),
    "requests:release": {R.customer, R.imager, R.operator, R.admin},
    "requests:reimage": {R.customer, R.operator, R.admin},
    "jobs:read": set(R), "jobs:cancel": {R.customer, R.imager, R.operator, R.admin},
    "audit:read": {R.auditor, R.admin}, "me:read": set(R), "reports:read": {R.customer, R.operator, R.admin, R.auditor},
    "policy:read": set(R), "policy:write": {R.operator, R.admin},
    "waivers:request": {R.customer, R.imager, R.operator, R.admin}, "waivers:read": set(R),
    "waivers:decide": {R.operator, R.admin},
    "images:read": set(R), "images:write": {R.imager, R.admin},
    "metrics:read": {R.operator, R.admin, R.auditor},
    "webhooks:read": {R.customer, R.imager, R.admin}, "webhooks:write": {R.customer, R.imager, R.admin},
    "ratings:write": {R.customer, R.imager}, "ratings:read": set(R),
    "escalations:read": {R.operator, R.admin, R.auditor}, "escalations:answer": {R.operator, R.admin},
}


@pytest.mark.parametrize("perm", sorted(EXPECTED))
@pytest.mark.parametrize("role", list(R))
def test_table(perm: str, role: Role) -> None:
    assert allowed(role, perm) is (role in EXPECTED[perm])


def test_no_permission_untested() -> None:
    assert set(PERMISSIONS) == set(EXPECTED)


def test_unknown_permission_or_role_is_denied() -> None:
    assert not allowed(R.admin, "nuclear:launch")
    assert not allowed("root", "hosts:read")


def test_tenant_scoping() -> None:
    assert {r for r in R if tenant_scoped(r)} == {R.customer, R.imager}
