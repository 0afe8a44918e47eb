"""The OpenAPI description tells the truth about errors and bounds, for every route (also the ones
added later): problem documents as application/problem+json, enums where only fixed values are
accepted, and every integer, string and map a client sends bounded (see README "Bad input")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import base_env, configure

INT_MAX = 2**31 - 1


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    configure(base_env(Path(tmp_path_factory.mktemp("openapi"))))
    from provisioner.cli.service import build_app

    return build_app().openapi()


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def unbounded(doc: dict[str, Any], schema: dict[str, Any], where: str, seen: frozenset[str] = frozenset()
              ) -> Iterator[str]:
    """Where a request schema lets a client send an integer, string, list or map without a bound."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if name in seen:
            return
        seen = seen | {name}
        schema = resolve(doc, schema)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from unbounded(doc, sub, where, seen)
    kind = schema.get("type")
    if kind == "integer" and ("maximum" not in schema or schema["maximum"] > INT_MAX
                              or schema.get("minimum", -INT_MAX - 1) < -INT_MAX - 1):
        yield f"{where}: integer without a bound within the column range"
    if kind == "string" and "maxLength" not in schema and "enum" not in schema and "const" not in schema:
        yield f"{where}: string without maxLength"
    if kind == "array":
        if "maxItems" not in schema:
            yield f"{where}: array without maxItems"
        yield from unbounded(doc, schema.get("items", {}), where + "[]", seen)
    if kind == "object" or "properties" in schema:
        for name, sub in schema.get("properties", {}).items():
            yield from unbounded(doc, sub, f"{where}.{name}", seen)
        extra = schema.get("additionalProperties", True)
        if extra is not False:
            if "maxProperties" not in schema:
                yield f"{where}: map without maxProperties"
            if isinstance(extra, dict):
                yield from unbounded(doc, extra, where + ".*", seen)
            names = schema.get("propertyNames", {})
            if "maxLength" not in names:
                yield f"{where}: map keys without maxLength"


def test_every_operation_lists_its_problem_responses(openapi: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    for method, path, op in operations(openapi):
        responses = op["responses"]
        for status in ("400", "404", "409", "422", "500", "503"):
            assert status in responses, (method, path, status)
        if "requestBody" in op:
            assert "413" in responses, (method, path)
        if op.get("security"):
            assert {"401", "403"} <= set(responses), (method, path)
        for status, resp in responses.items():
            if int(status) >= 400:
                assert list(resp.get("content", {})) == ["application/problem+json"], (method, path, status)


def test_authenticated_operations_say_so(openapi: dict[str, Any]) -> None:
    public = {(m, p) for m, p, op in operations(openapi) if not op.get("security")}
    # /healthz is open; the image bytes take a per-job token in the Authorization header.
    assert public == {("GET", "/healthz"), ("GET", "/v1/images/{image_id}/content"),
                      ("HEAD", "/v1/images/{image_id}/content"), ("GET", "/v1/images/{image_id}/bmap")}


def test_fixed_values_are_enums(openapi: dict[str, Any]) -> None:
    publish = openapi["paths"]["/v1/images"]["post"]
    fmt = next(p for p in publish["parameters"] if p["name"] == "format")
    assert resolve(openapi, fmt["schema"])["enum"] == ["raw", "raw.zst", "qcow2"]
    listing = openapi["paths"]["/v1/images"]["get"]
    channel = next(p for p in listing["parameters"] if p["name"] == "channel")
    enum = next(resolve(openapi, s) for s in channel["schema"]["anyOf"] if "$ref" in s or "enum" in s)
    assert enum["enum"] == ["candidate", "stable", "deprecated", "retired"]
    image = openapi["components"]["schemas"]["ImageOut"]["properties"]
    assert "$ref" in image["channel"] and "$ref" in image["format_in"]


def test_every_input_is_bounded(openapi: dict[str, Any]) -> None:
    found: list[str] = []
    for method, path, op in operations(openapi):
        for param in op.get("parameters", []):
            found += unbounded(openapi, param["schema"], f"{method} {path} {param['in']}.{param['name']}")
        for media, body in op.get("requestBody", {}).get("content", {}).items():
            if media == "application/json":
                found += unbounded(openapi, body["schema"], f"{method} {path} body")
    assert not found, "unbounded inputs (type them with provisioner/api/bounds.py):\n" + "\n".join(found)


def test_strings_and_map_keys_refuse_nul(openapi: dict[str, Any]) -> None:
    import re

    hosts = openapi["components"]["schemas"]["HostIn"]["properties"]
    for field in ("address", "ssh_private_key", "name"):
        schema = next(s for s in hosts[field].get("anyOf", [hosts[field]]) if s.get("type") == "string")
        assert not re.search(schema["pattern"], "ab\x00c" if field != "ssh_private_key" else
                             "-----BEGIN PRIVATE KEY-----\x00"), field
    labels = hosts["labels"]
    assert "patternProperties" not in labels and labels["propertyNames"]["pattern"]
    assert labels["additionalProperties"]["type"] == "string"
