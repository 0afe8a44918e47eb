"""The guardrail policy as data: a strict, frozen pydantic model with every number bounded.

Types and ranges are checked field by field by pydantic (strict JSON semantics in `from_dict`:
`true` is not a day count, "16" is not a port count); the rules that tie fields together are the
validators below. Every bound keeps the date arithmetic of leases and waivers inside the calendar.
Any invalid policy raises `PolicyError` naming every bad field at once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

# Roles as in provisioner.core.permissions.Role; duplicated as strings so the policy stands alone.
KNOWN_ROLES: frozenset[str] = frozenset({"customer", "imager", "operator", "auditor", "admin"})
RAID_LEVELS: tuple[str, ...] = ("0", "1", "5", "6", "10")
# Member failures survived whichever members fail (RAID10 can lose two, but not two of one mirror).
RAID_FAULT_TOLERANCE: Mapping[str, int] = MappingProxyType({"0": 0, "1": 1, "5": 1, "10": 1, "6": 2})
REDUNDANT_LEVELS: tuple[str, ...] = tuple(lvl for lvl in RAID_LEVELS if RAID_FAULT_TOLERANCE[lvl] > 0)
NAMED_SCHEDULES: Mapping[str, int] = MappingProxyType({"hourly": 1, "daily": 24, "weekly": 168})
ALL_NON_LAB_POOLS = "*"

Days = Annotated[int, Field(ge=1, le=3650)]  # up to ten years
Hours = Annotated[int, Field(ge=1, le=87_600)]  # up to ten years
Name = Annotated[str, Field(min_length=1, max_length=64)]
Port = Annotated[int, Field(ge=1, le=65535)]
# A RAID level as the policy names it ("1", "10"); which ones exist is checked with the other rules.
RaidLevelName = Annotated[str, Field(max_length=8)]


def _as_frozenset(value: Any) -> Any:
    # Python callers pass sets and lists; the items are still validated strictly. A list that names
    # an item twice is refused, as its schema says (uniqueItems), not silently shortened: the one
    # who wrote it may have meant another item.
    if isinstance(value, set | list | tuple):
        try:
            items = frozenset(value)
        except TypeError:  # unhashable items ([[{}]]): left for the strict validation to report
            return value
        if len(items) != len(value):
            twice = sorted({repr(v) for v, n in Counter(value).items() if n > 1})
            raise ValueError(f"items must be unique; given more than once: {', '.join(twice)[:200]}")
        return items
    return value


def _frozen_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


Names = Annotated[frozenset[Name], BeforeValidator(_as_frozenset), Field(max_length=256)]


class PolicyError(ValueError):
    """Raised for an invalid policy; `errors` lists every bad field as "field: problem"."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("invalid policy: " + "; ".join(self.errors))


def _errors(exc: ValidationError) -> list[str]:
    out: list[str] = []
    for e in exc.errors():
        inner = (e.get("ctx") or {}).get("error")
        if isinstance(inner, PolicyError):  # raised by __init__, which pydantic also runs when validating
            out.extend(inner.errors)
            continue
        name = str(e["loc"][0]) if e["loc"] else "policy"
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        out.append(f"{name}: {msg}")
    return out


class Policy(BaseModel):
    """The whole guardrail policy.

    `raid_min_level[pool]` (default `raid_default_min_level`) is enforced only in pools that require
    redundancy. `pools_requiring_redundancy` may contain "*" = every pool not in `lab_pools`.
    `raid_required_min_data_disks` is the fewest data disks a host in such a pool may have.
    Backup schedules are one of `backup_schedules_allowed` or an interval ("6h", "every 2d") within
    `backup_interval_min_hours`..`backup_interval_max_hours`. `default_lease_hours=None` means hosts
    requested without a lease never expire.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    backup_required: bool = True
    restore_test_max_age_days: Days = 7
    backup_retention_days_min: Days = 7
    backup_retention_days_max: Annotated[int, Field(ge=1, le=36_500)] = 365
    backup_schedules_allowed: Names = frozenset({"hourly", "daily", "weekly"})
    backup_interval_min_hours: Hours = 1
    backup_interval_max_hours: Hours = 168
    raid_required_min_data_disks: Annotated[int, Field(ge=0, le=256)] = 2
    raid_default_min_level: RaidLevelName = "1"
    raid_min_level: Annotated[Mapping[Name, RaidLevelName], Field(max_length=256),
                              AfterValidator(_frozen_mapping)] = Field(default_factory=lambda: MappingProxyType({}))
    pools_requiring_redundancy: Names = frozenset({ALL_NON_LAB_POOLS})
    firewall_default_deny_required: bool = True
    # SSH, alt SSH, RDP, VNC, IPMI/RMCP, WinRM.
    management_ports: Annotated[frozenset[Port], BeforeValidator(_as_frozenset), Field(max_length=1024)] = frozenset(
        {22, 2222, 3389, 5900, 623, 5985, 5986})
    max_open_ports: Annotated[int, Field(ge=0, le=1024)] = 16
    customer_image_channels: Names = frozenset({"stable"})
    imager_image_channels_on_lab_pools: Names = frozenset({"stable", "candidate"})
    lab_image_roles: Names = frozenset({"imager"})
    lab_pools: Names = frozenset({"lab", "vagrant"})
    waiver_max_days: Days = 90
    waiver_min_justification_chars: Annotated[int, Field(ge=0, le=2000)] = 20
    waiver_approver_roles: Names = frozenset({"operator", "admin"})
    max_lease_hours: Hours = 720
    default_lease_hours: Hours | None = None
    max_lease_extensions: Annotated[int, Field(ge=0, le=1000)] = 3

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise PolicyError(_errors(exc)) from None
        self._check_consistent()

    @field_validator("backup_schedules_allowed")
    @classmethod
    def _known_schedules(cls, v: frozenset[str]) -> frozenset[str]:
        unknown = sorted(v - NAMED_SCHEDULES.keys())
        if unknown:
            raise ValueError(f"unknown schedules {unknown}; known: {sorted(NAMED_SCHEDULES)}")
        return v

    @field_validator("raid_default_min_level")
    @classmethod
    def _redundant_default(cls, v: str) -> str:
        # Only redundant levels make sense as a minimum: the minimum applies to redundant pools only.
        if v not in REDUNDANT_LEVELS:
            raise ValueError(f"{v!r} is not one of {list(REDUNDANT_LEVELS)}")
        return v

    @field_validator("raid_min_level")
    @classmethod
    def _redundant_levels(cls, v: Mapping[str, str]) -> Mapping[str, str]:
        bad = {pool: lvl for pool, lvl in v.items() if lvl not in REDUNDANT_LEVELS}
        if bad:
            raise ValueError(f"levels {bad} are not among {list(REDUNDANT_LEVELS)}")
        return v

    @field_validator("customer_image_channels", "lab_pools")
    @classmethod
    def _no_blank_names(cls, v: frozenset[str]) -> frozenset[str]:
        if any(not s.strip() for s in v):
            raise ValueError("empty names are not allowed")
        return v

    @field_validator("customer_image_channels")
    @classmethod
    def _some_channel(cls, v: frozenset[str]) -> frozenset[str]:
        if not v:
            raise ValueError("must name at least one channel")
        return v

    @field_validator("lab_image_roles", "waiver_approver_roles")
    @classmethod
    def _known_roles(cls, v: frozenset[str]) -> frozenset[str]:
        unknown = sorted(v - KNOWN_ROLES)
        if unknown:
            raise ValueError(f"unknown roles {unknown}; known: {sorted(KNOWN_ROLES)}")
        return v

    @field_validator("waiver_approver_roles")
    @classmethod
    def _some_approver(cls, v: frozenset[str]) -> frozenset[str]:
        if not v:
            raise ValueError("must name at least one role, or nobody can approve")
        return v

    def _check_consistent(self) -> Policy:
        """Rules that tie fields together (checked once every field is valid on its own)."""
        errors = []
        if self.backup_retention_days_max < self.backup_retention_days_min:
            errors.append(f"backup_retention_days_max: {self.backup_retention_days_max} is below "
                          f"backup_retention_days_min {self.backup_retention_days_min}")
        if self.backup_interval_max_hours < self.backup_interval_min_hours:
            errors.append(f"backup_interval_max_hours: {self.backup_interval_max_hours} is below "
                          f"backup_interval_min_hours {self.backup_interval_min_hours}")
        if self.default_lease_hours is not None and self.default_lease_hours > self.max_lease_hours:
            errors.append(f"default_lease_hours: {self.default_lease_hours} outside 1..max_lease_hours "
                          f"({self.max_lease_hours})")
        if errors:
            raise PolicyError(errors)
        return self

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def requires_redundancy(self, pool: str) -> bool:
        if pool in self.pools_requiring_redundancy:
            return True
        return ALL_NON_LAB_POOLS in self.pools_requiring_redundancy and pool not in self.lab_pools

    def min_raid_level(self, pool: str) -> str:
        return self.raid_min_level.get(pool, self.raid_default_min_level)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: sets become sorted lists so diffs and audit entries are stable."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, frozenset):
                out[name] = sorted(value)
            elif isinstance(value, Mapping):
                out[name] = dict(sorted(value.items()))
            else:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """Build from (possibly partial) JSON; missing fields keep their defaults.

        Raises PolicyError (a ValueError) naming every bad field at once.
        """
        if not isinstance(data, Mapping):
            raise PolicyError([f"policy: expected an object, got {type(data).__name__}"])
        try:
            # JSON semantics: arrays are sets, and strict mode refuses true for 1 or "16" for 16.
            return cls.model_validate_json(json.dumps(dict(data), default=_jsonable))
        except ValidationError as exc:
            errors = _errors(exc)
            bad = {e.split(":", 1)[0] for e in errors}
        # The rules that tie fields together are judged on the fields that are valid on their own,
        # so one answer lists every problem.
        good = {k: v for k, v in data.items() if k not in bad and k in cls.model_fields}
        try:
            cls.model_validate_json(json.dumps(good, default=_jsonable))
        except ValidationError as exc:
            errors += [e for e in _errors(exc) if e not in errors]
        raise PolicyError(errors)


def _jsonable(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value, key=str)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON: {value!r}")
