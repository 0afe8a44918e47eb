"""The OpenAPI description of strings and map keys says what the service accepts:

- no NUL character in any string (refused at the door by `api/limits.py`): strings without a
  pattern get `^[^\\u0000]*$` (patterns of this API's own types already leave NUL out);
- an array's bound is maxItems (pydantic says maxLength for sets behind a BeforeValidator);
- a map with constrained keys (`dict[Name, int]`) refuses every other key: pydantic describes it
  with `patternProperties`, which in JSON Schema lets any other key through with any value, so it is
  rewritten as `propertyNames` (the key pattern) plus `additionalProperties` (the value schema).
"""

from __future__ import annotations

from typing import Any

NO_NUL = "^[^\\u0000]*$"


def _fix(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _fix(item)
        return
    if not isinstance(node, dict):
        return
    patterned = node.get("patternProperties")
    if isinstance(patterned, dict) and len(patterned) == 1 and "additionalProperties" not in node:
        ((key_pattern, value_schema),) = patterned.items()
        del node["patternProperties"]
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": key_pattern}
        node["additionalProperties"] = value_schema
    if node.get("type") == "array" and "maxLength" in node and "maxItems" not in node:
        # pydantic writes a set's max_length as maxLength when a validator wraps it (policy Names).
        node["maxItems"] = node.pop("maxLength")
    if node.get("type") == "string" and "pattern" not in node and "enum" not in node and "const" not in node \
            and node.get("format") != "binary":
        node["pattern"] = NO_NUL
    names = node.get("propertyNames")
    if isinstance(names, dict) and "pattern" not in names:
        names["pattern"] = NO_NUL
    for key, value in node.items():
        if key != "propertyNames":
            _fix(value)


def describe_strings(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrites an OpenAPI document's string and map schemas in place (see the module's doc)."""
    _fix(schema.get("components", {}).get("schemas", {}))
    _fix(schema.get("paths", {}))
    return schema
