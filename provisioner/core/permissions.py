"""Who may do what: the whole RBAC table. Tenant scoping is applied on top for tenant roles."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    customer = "customer"
    imager = "imager"
    operator = "operator"
    auditor = "auditor"
    admin = "admin"


R = Role
ALL = frozenset(Role)

# Roles that belong to a tenant and only ever see their tenant's objects.
TENANT_SCOPED = frozenset({R.customer, R.imager})

PERMISSIONS: dict[str, frozenset[Role]] = {
    "me:read": ALL,
    "tenants:read": frozenset({R.admin, R.operator, R.auditor}),
    "tenants:write": frozenset({R.admin}),
    "users:read": frozenset({R.admin, R.auditor}),
    "users:write": frozenset({R.admin}),
    "tokens:write": frozenset({R.admin}),
    "hosts:read": ALL,
    "hosts:write": frozenset({R.operator, R.admin}),
    "requests:create": frozenset({R.customer, R.imager}),
    "requests:read": ALL,
    "requests:release": frozenset({R.customer, R.imager, R.operator, R.admin}),
    # A customer reimages their tenant's hosts, operators any; the imaging team tries images on
    # canaries (POST /v1/images/{id}/canary), not on customers' hosts.
    "requests:reimage": frozenset({R.customer, R.operator, R.admin}),
    "jobs:read": ALL,
    "jobs:cancel": frozenset({R.customer, R.imager, R.operator, R.admin}),
    "audit:read": frozenset({R.auditor, R.admin}),
    # SLOs and the service review: customers read their own tenant's numbers (the API narrows them).
    "reports:read": frozenset({R.customer, R.operator, R.admin, R.auditor}),
    "policy:read": ALL,
    "policy:write": frozenset({R.operator, R.admin}),
    "waivers:request": frozenset({R.customer, R.imager, R.operator, R.admin}),
    "waivers:read": ALL,
    "waivers:decide": frozenset({R.operator, R.admin}),
    # Customers see stable images only (the catalogue filters); the imaging team publishes.
    "images:read": ALL,
    "images:write": frozenset({R.imager, R.admin}),
    # Prometheus scrapes with a token of such a role (`authorization: credentials_file` in its job).
    "metrics:read": frozenset({R.operator, R.admin, R.auditor}),
    # Tenant members manage their tenant's webhooks and read its delivery log; admins any tenant's.
    "webhooks:read": frozenset({R.customer, R.imager, R.admin}),
    "webhooks:write": frozenset({R.customer, R.imager, R.admin}),
    # A customer rates a delivered request of their tenant; a low rating is an escalation operators answer.
    "ratings:write": frozenset({R.customer, R.imager}),
    "ratings:read": ALL,
    "escalations:read": frozenset({R.operator, R.admin, R.auditor}),
    "escalations:answer": frozenset({R.operator, R.admin}),
}


def allowed(role: Role | str, permission: str) -> bool:
    try:
        return Role(role) in PERMISSIONS[permission]
    except (KeyError, ValueError):
        return False


def tenant_scoped(role: Role | str) -> bool:
    return Role(role) in TENANT_SCOPED
