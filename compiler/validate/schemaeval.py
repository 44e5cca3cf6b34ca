"""JSON Schema errors for the qna schemas without importing jsonschema.

Importing jsonschema (with referencing, attrs and its format checkers) takes longer than a
one-file `kdc validate` spends on everything else, and the qna schemas (schemas/qna_v*.json)
use only nine keywords. `errors()` evaluates those keywords with jsonschema 4's Draft 2020-12
semantics (same type rules, bool is not a number, 3.0 is an integer, same `const` equality and
`uniqueItems` test, same keyword order, same messages); a schema that uses anything else is
handed to jsonschema itself (`supported()` says which). tests/test_schemaeval.py checks the
two give the same errors, in the same order, on the conformance corpus and on random documents.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Keywords that carry no assertion (jsonschema skips them too).
ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "deprecated", "default", "examples"})
TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})


@dataclass(frozen=True)
class SchemaError:
    """One failed keyword, as jsonschema's ValidationError names it."""

    validator: str  # the keyword, e.g. "required"
    validator_value: Any  # the keyword's value in the schema
    path: tuple  # keys and indexes from the document root to `instance`
    instance: Any
    schema: Mapping  # the (sub)schema holding the keyword
    message: str


def supported(schema: Any) -> bool:
    """Whether every keyword in `schema` (and its subschemas) is one `errors()` evaluates."""
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key in ANNOTATIONS:
            continue
        if key == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) and n in TYPES for n in names):
                return False
        elif key == "properties":
            if not isinstance(value, dict) or not all(supported(s) for s in value.values()):
                return False
        elif key == "items":
            if not supported(value):
                return False
        elif key == "unevaluatedProperties":
            if value is not False:
                return False
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
                return False
        elif key in ("minLength", "minItems"):
            if isinstance(value, bool) or not isinstance(value, int):
                return False
        elif key == "uniqueItems":
            if not isinstance(value, bool):
                return False
        elif key != "const":
            return False
    return True


def errors(schema: Mapping, instance: Any, path: tuple = ()) -> Iterator[SchemaError]:
    """Every error of `instance` against a `supported()` schema, in jsonschema's order."""
    for keyword, value in schema.items():
        check = _KEYWORDS.get(keyword)
        if check is not None:
            yield from check(value, instance, schema, path)


def is_type(instance: Any, name: str) -> bool:
    """jsonschema's Draft 2020-12 type checker."""
    if name == "object":
        return isinstance(instance, dict)
    if name == "array":
        return isinstance(instance, list)
    if name == "string":
        return isinstance(instance, str)
    if name == "null":
        return instance is None
    if name == "boolean":
        return isinstance(instance, bool)
    if isinstance(instance, bool):
        return False
    if name == "integer":
        return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())
    return isinstance(instance, numbers.Number)  # "number"


def equal(one: Any, two: Any) -> bool:
    """jsonschema's equality: bool is not 1 or 0, sequences and mappings compared item by item."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return one == two
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(equal(i, j) for i, j in zip(one, two))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(k in two and equal(v, two[k]) for k, v in one.items())
    return _unbool(one) == _unbool(two)


_TRUE, _FALSE = object(), object()


def _unbool(element: Any) -> Any:
    return _TRUE if element is True else _FALSE if element is False else element


def unique(items: list) -> bool:
    """jsonschema's uniqueItems test: sorted neighbours when the items sort, else every pair."""
    try:
        ordered = sorted(_unbool(i) for i in items)
        return not any(equal(i, j) for i, j in zip(ordered, itertools.islice(ordered, 1, None)))
    except (NotImplementedError, TypeError):
        seen: list = []
        for e in map(_unbool, items):
            if any(equal(i, e) for i in seen):
                return False
            seen.append(e)
    return True


# One function per keyword: (keyword's value, instance, the schema holding it, path) -> errors.

def _type(value, instance, schema, path):
    names = [value] if isinstance(value, str) else value
    if not any(is_type(instance, n) for n in names):
        yield SchemaError("type", value, path, instance, schema,
                          f"{instance!r} is not of type {', '.join(repr(n) for n in names)}")


def _required(value, instance, schema, path):
    if isinstance(instance, dict):
        for key in value:
            if key not in instance:
                yield SchemaError("required", value, path, instance, schema, f"{key!r} is a required property")


def _properties(value, instance, schema, path):
    if isinstance(instance, dict):
        for key, sub in value.items():
            if key in instance:
                yield from errors(sub, instance[key], path + (key,))


def _items(value, instance, schema, path):
    if isinstance(instance, list):
        for index, item in enumerate(instance):
            yield from errors(value, item, path + (index,))


def _unevaluated(value, instance, schema, path):
    if isinstance(instance, dict):
        known = schema.get("properties")
        known = known.keys() & instance.keys() if isinstance(known, dict) else set()
        extra = [k for k in instance if k not in known]
        if extra:
            shown = ", ".join(repr(k) for k in sorted(extra, key=str))
            verb = "was" if len(extra) == 1 else "were"
            yield SchemaError("unevaluatedProperties", value, path, instance, schema,
                              f"Unevaluated properties are not allowed ({shown} {verb} unexpected)")


def _const(value, instance, schema, path):
    if not equal(instance, value):
        yield SchemaError("const", value, path, instance, schema, f"{value!r} was expected")


def _too_short(keyword, value, path, instance, schema):
    return SchemaError(keyword, value, path, instance, schema,
                       f"{instance!r} {'should be non-empty' if value == 1 else 'is too short'}")


def _min_length(value, instance, schema, path):
    if isinstance(instance, str) and len(instance) < value:
        yield _too_short("minLength", value, path, instance, schema)


def _min_items(value, instance, schema, path):
    if isinstance(instance, list) and len(instance) < value:
        yield _too_short("minItems", value, path, instance, schema)


def _unique_items(value, instance, schema, path):
    if value and isinstance(instance, list) and not unique(instance):
        yield SchemaError("uniqueItems", value, path, instance, schema, f"{instance!r} has non-unique elements")


_KEYWORDS = {"type": _type, "required": _required, "properties": _properties, "items": _items,
             "unevaluatedProperties": _unevaluated, "const": _const, "minLength": _min_length,
             "minItems": _min_items, "uniqueItems": _unique_items}
