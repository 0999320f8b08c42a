"""Hypothesis strategies made from the RPC schemas, for test_fuzz_rpc.py.

``valid(schema)`` draws payloads the schema accepts; ``mutated(api, method)``
draws one of them with one node broken: a wrong type, a huge string, a
number out of range, an unknown or missing field, a hostile character in a
name. Whether a mutation really broke the payload is left to the schema
itself (``is_valid``): the tests keep only the payloads it refuses.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
from hypothesis import strategies as st

from compute_driver.rpc import schemas

METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "scheduler": schemas.SCHEDULER_METHODS,
    "agent_reports": schemas.REPORT_METHODS,
    "compute": schemas.COMPUTE_METHODS,
}
ALL_METHODS = [(api, method) for api, methods in METHODS.items() for method in sorted(methods)]

#: Payload keys that collide with the parameters of oslo.messaging's
#: ``call(self, ctxt, method, **kwargs)`` and of our endpoints' ``(self, ctxt, **kwargs)``.
RESERVED_KEYS = frozenset({"self", "ctxt", "method"})

#: Characters and fragments a name must never smuggle into paths, XML, shells or logs.
HOSTILE_FRAGMENTS = [
    "/",
    "\\",
    "..",
    "../",
    "/etc/passwd",
    "\x00",
    "<",
    ">",
    "&",
    "'",
    '"',
    "]]>",
    "<!--",
    "&amp;",
    "<domain/>",
    "%s",
    "%(uuid)s",
    "{0}",
    "$(reboot)",
    "`id`",
    ";",
    "|",
    "*",
    "?",
    "~",
    ":",
    " ",
    "\t",
    "\r",
    "\n",
    "\x1b[2J",
    "\x7f",
    "\u202e",
    "\u200b",
    "\ufeff",
    "\u00e9",
    "\uff0f",
    "\U0001f600",
]

_validators: dict[tuple[str, str], jsonschema.Draft202012Validator] = {}


def is_valid(api: str, method: str, payload: Any) -> bool:
    """What the server's schema check will say of ``payload``."""
    key = (api, method)
    if key not in _validators:
        _validators[key] = jsonschema.Draft202012Validator(METHODS[api][method])
    return _validators[key].is_valid(payload)


# --- any JSON value ------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# --- valid payloads ----------------------------------------------------------------


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", 64)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: low <= len(s) <= high
        )
    return st.text(min_size=low, max_size=min(high, 32))


_valid_cache: dict[int, st.SearchStrategy[Any]] = {}


def valid(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values ``schema`` accepts (for the subset of JSON Schema our schemas use)."""
    # NOTE: by identity: the schemas are module constants, and building a
    # from_regex strategy costs more than drawing from it.
    key = id(schema)
    if key not in _valid_cache:
        _valid_cache[key] = _valid(schema)
    return _valid_cache[key]


def _valid(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([valid(sub) for sub in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = schema.get("minimum", -(2**31))
        return st.integers(min_value=low, max_value=schema.get("maximum", low + 2**31))
    if kind == "string":
        return _string(schema)
    if kind == "array":
        return st.lists(valid(schema["items"]), max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object":
        if schema.get("additionalProperties") is False:
            props = schema["properties"]
            required = set(schema.get("required", ()))
            return st.fixed_dictionaries(
                {k: valid(v) for k, v in props.items() if k in required},
                optional={k: valid(v) for k, v in props.items() if k not in required},
            )
        keys = st.from_regex(schema["propertyNames"]["pattern"], fullmatch=True)
        return st.dictionaries(keys, valid(schema["additionalProperties"]), max_size=3)
    raise AssertionError("no strategy for schema %r" % schema)


# --- one node broken ----------------------------------------------------------------


def _branch(schema: dict[str, Any], value: Any) -> dict[str, Any]:
    """The branch of an ``anyOf: [X, null]`` that ``value`` took."""
    if "anyOf" in schema:
        null = value is None
        return next(s for s in schema["anyOf"] if (s.get("type") == "null") == null)
    return schema


def nodes(schema: dict[str, Any], value: Any, path: tuple = ()) -> Iterator[tuple[tuple, dict]]:
    """(path, schema) of every node of ``value``, the payload itself first."""
    schema = _branch(schema, value)
    yield path, schema
    if schema.get("type") == "object" and isinstance(value, dict):
        for key, sub in value.items():
            sub_schema = schema.get("properties", {}).get(key)
            if sub_schema is None and isinstance(schema.get("additionalProperties"), dict):
                sub_schema = schema["additionalProperties"]
            if sub_schema is not None:
                yield from nodes(sub_schema, sub, path + (key,))
    elif schema.get("type") == "array" and isinstance(value, list):
        for i, item in enumerate(value):
            yield from nodes(schema["items"], item, path + (i,))


def _get(payload: Any, path: tuple) -> Any:
    for key in path:
        payload = payload[key]
    return payload


def _set(payload: dict[str, Any], path: tuple, new: Any) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    if not path:
        return new
    node = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return payload


_ANY_KEY = (
    st.text(max_size=12)
    | st.text(min_size=200, max_size=2000)
    | st.sampled_from(
        ["__class__", "__init__", "_sa_instance_state", "target", "uuid ", "UUID", "name\x00"]
    )
)


def _key(draw: st.DrawFn, taken: dict[str, Any]) -> str:
    key = draw(_ANY_KEY.filter(lambda k: k not in taken and k not in RESERVED_KEYS))
    return key


@st.composite
def mutation(
    draw: st.DrawFn, schema: dict[str, Any], value: Any, root: bool = False
) -> tuple[str, Any]:
    """(what was done, the new value) for one node of ``schema`` holding ``value``.

    The payload itself (``root``) stays an object: it travels as keyword arguments.
    """
    kind = schema.get("type")
    choices: list[str] = []
    if "enum" in schema:
        choices += ["enum"] * 3
    if kind == "string":
        choices += ["hostile-string"] * 4 + ["huge-string"] * 2 + ["empty-string"]
    if kind == "integer":
        choices += ["below-minimum", "above-maximum", "not-an-integer"] * 2
    if kind == "object":
        choices += ["unknown-field"]
        if schema.get("required"):
            choices += ["missing-field"]
        if "maxProperties" in schema:
            choices += ["too-many-properties"]
    if kind == "array":
        choices += ["bad-item"]
        if schema.get("maxItems", 10**9) <= 1000:
            choices += ["too-many-items"]
    # NOTE: last: Hypothesis favours the first choices of a sampled_from.
    choices += [] if root else ["wrong-type", "null", "deep"]
    how = draw(st.sampled_from(choices))
    if how == "wrong-type":
        return how, draw(JSON)
    if how == "null":
        return how, None
    if how == "deep":
        return how, _deep(draw(st.integers(min_value=2, max_value=150)))
    if how == "enum":
        return how, draw(
            st.text(max_size=20)
            | st.sampled_from([str(e).upper() for e in schema["enum"]])
            | st.sampled_from([" %s" % e for e in schema["enum"]])
        )
    if how == "huge-string":
        size = draw(st.integers(min_value=schema.get("maxLength", 4096) + 1, max_value=200_000))
        return how, draw(st.sampled_from(["a", "/", "<", "\u00e9"])) * size
    if how == "hostile-string":
        fragment = draw(st.sampled_from(HOSTILE_FRAGMENTS))
        at = draw(st.integers(min_value=0, max_value=len(value)))
        return how, value[:at] + fragment + value[at:]
    if how == "empty-string":
        return how, ""
    if how == "below-minimum":
        low = schema.get("minimum", 0)
        return how, low - draw(st.integers(min_value=1, max_value=2**70))
    if how == "above-maximum":
        high = schema.get("maximum", 2**63 - 1)
        return how, high + draw(st.integers(min_value=1, max_value=2**70))
    if how == "not-an-integer":
        return how, draw(
            st.sampled_from([value + 0.5, str(value), True, False, float("nan"), float("inf")])
        )
    if how == "unknown-field":
        return how, dict(value, **{_key(draw, value): draw(JSON)})
    if how == "missing-field":
        present = [k for k in schema["required"] if k in value]
        gone = draw(st.sampled_from(present))
        return how, {k: v for k, v in value.items() if k != gone}
    if how == "too-many-properties":
        return how, {"k%d" % i: "v" for i in range(schema["maxProperties"] + 1)}
    if how == "bad-item":
        return how, list(value) + [draw(JSON)]
    if how == "too-many-items":
        item = value[0] if value else "x"
        return how, [item] * (schema["maxItems"] + 1)
    raise AssertionError(how)


@st.composite
def mutated(draw: st.DrawFn, api: str, method: str) -> tuple[str, dict[str, Any]]:
    """(a description of the change, a payload of ``api.method`` with one node broken)."""
    schema = METHODS[api][method]
    payload = draw(valid(schema))
    inner = list(nodes(schema, payload))[1:]
    # NOTE: mostly a field: the payload itself has only two ways to break.
    if inner and draw(st.sampled_from(["field"] * 4 + ["payload"])) == "field":
        path, node_schema = draw(st.sampled_from(inner))
    else:
        path, node_schema = (), schema
    how, new = draw(mutation(node_schema, _get(payload, path), root=not path))
    where = "/".join(str(p) for p in path) or "(payload)"
    return "%s at %s" % (how, where), _set(payload, path, new)


def any_mutated() -> st.SearchStrategy[tuple[str, str, str, dict[str, Any]]]:
    """(api, method, description, payload) over every method of both APIs."""
    return st.sampled_from(ALL_METHODS).flatmap(
        lambda am: mutated(*am).map(lambda m: (am[0], am[1], m[0], m[1]))
    )
