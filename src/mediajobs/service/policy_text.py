"""The site policy as command-line text, derived from ``SitePolicyUpdate``: ``FIELD=VALUE``
assignments (``mediajobs policy set``) and the field list of its ``--help``. A field added
to the model is settable and listed without a change here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from mediajobs.db.policies import PolicyInvalid
from mediajobs.errors import ConfigError
from mediajobs.service.body import MAX_INT_DIGITS, loads_strict
from mediajobs.service.models import (
    SitePolicyUpdate,
    api_names,
    describe,
    first_error,
    unknown_field,
)


def parse_assignments(
    items: Sequence[str], model: type[SitePolicyUpdate] = SitePolicyUpdate
) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs as the model's changes, by domain name. ``FIELD`` is the API's
    name (``minWidth``), as ``policy show`` prints it and ``PUT /v1/admin/site-policies``
    takes it. ``VALUE`` is strict JSON when it parses (numbers, booleans, the variants
    list), else text; text that starts as a JSON list or object (``[``, ``{``) must parse.
    An unknown field (a column's name such as ``min_width`` included, which gets a hint), a
    field given twice, or a value the model refuses is ``PolicyInvalid`` naming the field; a
    pair without ``=`` is ``ConfigError``."""
    aliases = api_names(model)
    body: dict[str, Any] = {}
    overlong: list[str] = []
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError("policy set", f"expected FIELD=VALUE, got {item!r}")
        if name in aliases and aliases[name] != name:
            raise PolicyInvalid(name, f"is not a policy field (the API's name is {aliases[name]})")
        if name in body:
            raise PolicyInvalid(name, "is given more than once")
        try:
            value, long_number = loads_strict(text)
        except (ValueError, RecursionError) as exc:
            if text.lstrip().startswith(("[", "{")):
                raise PolicyInvalid(name, f"is not valid JSON ({_reason(exc)})") from None
            value, long_number = text, False
        if long_number:
            overlong.append(name)
        body[name] = value
    try:
        changes = model.model_validate(body).changes()
    except ValidationError as exc:
        error = first_error(exc.errors(include_url=False))
        field, problem = describe(error)
        if unknown_field(error):
            problem = "is not a policy field"
        raise PolicyInvalid(field, problem) from None
    if overlong:  # no field takes such a number; never store its stand-in
        raise PolicyInvalid(overlong[0], f"a number has more than {MAX_INT_DIGITS} digits")
    return changes


def _reason(exc: BaseException) -> str:
    """Why text is not JSON, in a few words: the decoder's message without its position
    noise, or the strict loader's."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(getattr(exc, "msg", exc))


def fields_help(model: type[SitePolicyUpdate] = SitePolicyUpdate) -> str:
    """One line per field of ``model``: its API name, type and range, and what it is."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    lines = ["fields (the API's names; a value is JSON when it parses, else text):"]
    for name, info in model.model_fields.items():
        alias = info.alias or name
        kind = _kind(schema["properties"][alias], defs)
        about = f": {info.description}" if info.description else ""
        lines.append(f"  {alias:<20} {kind}{about}")
    return "\n".join(lines)


def _kind(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    """A JSON Schema in a few words: ``integer 1..1000``, ``one of a, b``, ``list of ...``."""
    if "$ref" in prop:
        prop = defs[prop["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in prop:
        return " or ".join(_kind(branch, defs) for branch in prop["anyOf"])
    if "enum" in prop:
        return "one of " + ", ".join(str(v) for v in prop["enum"])
    kind = prop.get("type")
    if kind == "array":
        least = f" (at least {prop['minItems']})" if "minItems" in prop else ""
        return f"list{least} of {_kind(prop['items'], defs)}"
    if kind == "null":
        return "null"
    if kind == "object" and "patternProperties" in prop:
        ((pattern, value),) = prop["patternProperties"].items()
        most = f", at most {prop['maxProperties']}" if "maxProperties" in prop else ""
        return f"{{NAME: {_kind(value, defs)}}} (NAME matching {pattern}{most})"
    if kind == "object":
        inner = ", ".join(f"{k}: {_kind(v, defs)}" for k, v in prop.get("properties", {}).items())
        return "{" + inner + "}"
    if kind == "string":
        if "pattern" in prop:
            return f"text matching {prop['pattern']}"
        if "maxLength" in prop:
            return f"text of {prop.get('minLength', 0)}..{prop['maxLength']} characters"
        return "text"
    words = {"integer": "integer", "number": "number", "boolean": "true or false"}
    text = words.get(str(kind), str(kind))
    low = prop.get("minimum", prop.get("exclusiveMinimum"))
    high = prop.get("maximum", prop.get("exclusiveMaximum"))
    if low is None and high is None:
        return text
    if "exclusiveMinimum" in prop:
        return f"{text} above {_number(low)} and at most {_number(high)}"
    return f"{text} {_number(low)}..{_number(high)}"


def _number(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)
