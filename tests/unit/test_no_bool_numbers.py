"""Every number in a request body refuses a boolean (JSON Schema's integer admits 954.0, not true)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import provisioner.api.guardrail_schemas
import provisioner.api.image_schemas
import provisioner.api.ratings
import provisioner.api.webhook_schemas  # noqa: F401  (registers their Strict subclasses)
from provisioner.api.schemas import Strict, wants_number


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out


NUMBER_FIELDS = [
    (model, name)
    for model in _all_subclasses(Strict)
    for name, field in model.model_fields.items()
    if wants_number(field.annotation)
]


def test_there_are_number_fields_to_check() -> None:
    assert len(NUMBER_FIELDS) >= 3, NUMBER_FIELDS


@pytest.mark.parametrize(("model", "name"), NUMBER_FIELDS, ids=lambda x: getattr(x, "__name__", x))
def test_a_boolean_is_refused_for_a_number(model: type[Strict], name: str) -> None:
    with pytest.raises(ValidationError) as err:
        model.model_validate({name: True})
    hits = [e for e in err.value.errors() if e["loc"][:1] == (name,)]
    assert hits and "boolean" in hits[0]["msg"], err.value.errors()


def test_wants_number_reads_optional_and_skips_bool() -> None:
    assert wants_number(int) and wants_number(int | None) and wants_number(float | None)
    assert not wants_number(bool) and not wants_number(bool | None) and not wants_number(str)
