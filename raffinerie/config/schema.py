"""JSON-Schema validation of configuration documents, with plain messages.

The schemas live in the top-level `schemas/` folder (installed as the
package data of `raffinerie.schemas`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from raffinerie import memo
from raffinerie.errors import ERROR, Diagnostic, format_where
from raffinerie.config.yamlio import line_of

_BASE = "https://raffinerie.github.io/schemas/v1/"
_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "true or false",
               "null": "nothing"}


SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
_OWN_CODE = memo.code_of(__file__)  # at import: the code that runs is the code named


def schema_files() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(SCHEMA_DIR.glob("*.schema.json"))}


@lru_cache(maxsize=1)
def _schemas_digest() -> str:
    """What a check's answer depends on besides the document: the schemas, this module, and the
    code of jsonschema and referencing (found, not imported: importing them, or importlib.metadata
    for their versions, 40 ms, would cost what the memo saves)."""
    from importlib.util import find_spec

    digest = hashlib.sha256(_OWN_CODE.encode())
    for path in sorted(SCHEMA_DIR.glob("*.schema.json")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for package in ("jsonschema", "referencing"):
        spec = find_spec(package)
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        files = sorted(p for folder in folders for p in Path(folder).glob("*.py"))
        digest.update(package.encode() + b"".join(memo.code_of(str(p)).encode() for p in files) + b"\0")
    return digest.hexdigest()[:16]


@lru_cache(maxsize=None)
def _validator(name: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = schema_files()
    registry = Registry().with_resources(
        (_BASE + fname, Resource.from_contents(doc)) for fname, doc in schemas.items())
    return Draft202012Validator(schemas[f"{name}.schema.json"], registry=registry)


def check(document: Any, schema: str, file: Path, prefix: tuple = ()) -> list[Diagnostic]:
    """Diagnostics for every place where `document` breaks `schema`, once the scalars whose
    meaning is clear are taken as meant (changed in `document`).

    A large document found valid as it is (nothing taken as meant) is remembered in the
    memo, with the schemas and this code: a 3.7 MB library takes 0.5 s to check again."""
    key = memo.document_key(f"schema {schema}:{_schemas_digest()}", document)
    if memo.known_valid(key):
        return []
    validator = _validator(schema)
    errors = list(_leaf_errors(validator.iter_errors(document)))
    if not errors:
        memo.remember_valid(key)
    if _take_as_meant(document, errors):
        errors = list(_leaf_errors(validator.iter_errors(document)))
    out = []
    for error in errors:
        path = prefix + tuple(error.absolute_path)
        message, path = _explain(error, path)
        out.append(Diagnostic(ERROR, message, file, line_of(file, path), format_where(path)))
    return sorted(out, key=lambda d: (d.line or 0, d.where, d.message))


# YAML reads `generation: 2021` as a number and `port: "6000"` as written, a string; where the
# schema allows one reading of such a scalar, it is taken as meant (issue 23). Only a plain
# `type` or `enum` error is mended: under `anyOf`/`oneOf` the reading is not clear. A string
# field given a number is not mended: YAML has already changed `0042` into 34.
_TRUTH = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_NO_READING = object()
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _take_as_meant(document: Any, errors: list) -> bool:
    """Set each scalar of `errors` that has one reading to it; whether any was."""
    mended = False
    for error in errors:
        value = _reading(error)
        if value is not _NO_READING and error.absolute_path:  # a scalar, so other paths stay valid
            _set(document, tuple(error.absolute_path), value)
            mended = True
    return mended


def _reading(error) -> Any:
    """The one value `error.instance` means where the schema says what it must be."""
    kind, arg, inst = error.validator, error.validator_value, error.instance
    if kind == "enum" and isinstance(inst, (int, float)) and not isinstance(inst, bool):
        text = str(inst)
        return text if all(isinstance(o, str) for o in arg) and text in arg else _NO_READING
    if kind != "type" or not isinstance(inst, str) or not isinstance(arg, str):
        return _NO_READING
    text = inst.strip()
    if arg == "integer" and _INTEGER.fullmatch(text):
        return int(text)
    if arg == "number":
        try:
            number = float(text)
        except ValueError:
            return _NO_READING
        return number if number == number and abs(number) != float("inf") else _NO_READING
    if arg == "boolean":
        return _TRUTH.get(text.lower(), _NO_READING)
    return _NO_READING


def _set(document: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        document = document[part]
    document[path[-1]] = value


def _leaf_errors(errors) -> Iterator:
    """The most specific errors: descend into `if/then/allOf` wrappers."""
    for error in errors:
        if error.validator in ("allOf", "$ref", "then", "else") and error.context:
            yield from _leaf_errors(error.context)
        else:
            yield error


def _what(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"


def _explain(error, path: tuple) -> tuple[str, tuple]:
    kind, arg, inst = error.validator, error.validator_value, error.instance
    if kind == "type":
        types = [arg] if isinstance(arg, str) else arg
        wanted = " or ".join(_TYPE_NAMES.get(t, t) for t in types)
        if inst is None:
            return f"is empty; expected {wanted}", path
        return f"expected {wanted}, got {_what(inst)}", path
    if kind == "required":
        missing = [name for name in arg if name not in inst]
        return f"missing required field '{missing[0]}'", path
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in inst if k not in allowed)
        bad = extra[0] if extra else "?"
        hint = difflib.get_close_matches(bad, allowed, n=1)
        tip = f" (did you mean '{hint[0]}'?)" if hint else f" (allowed: {', '.join(allowed)})"
        return f"unknown field '{bad}'{tip}", path + (bad,)
    if kind in ("enum", "const"):
        options = arg if kind == "enum" else [arg]
        return f"must be one of {', '.join(map(str, options))}; got {_what(inst)}", path
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        rel = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        return f"must be {rel} {arg}, got {_what(inst)}", path
    if kind == "minItems":
        return ("is an empty list" if not inst else f"needs at least {arg} items"), path
    if kind == "minLength":
        return "is an empty string", path
    if kind == "maxLength":  # names: raffinerie names files after them (procedure.schema.json)
        return (f"is {len(inst)} characters long; at most {arg}, so that every file raffinerie names "
                "after it fits the 255-byte limit of a file name"), path
    if kind == "pattern":
        return f"{_what(inst)} is not a valid name (letters, digits, _ . -; not starting with a digit)", path
    if kind in ("oneOf", "anyOf"):
        return _explain_alternatives(error, path)
    return error.message, path


def _explain_alternatives(error, path: tuple) -> tuple[str, tuple]:
    subs = error.context or []
    options = error.validator_value
    if all(isinstance(o, dict) and set(o) == {"required"} for o in options):
        names = sorted({n for o in options for n in o["required"]})
        if isinstance(error.instance, dict) and sum(n in error.instance for n in names) > 1:
            return f"gives both {' and '.join(names)}; use one", path
        return f"needs {' or '.join(names)}", path
    if subs:
        # the alternative meant is the one whose type fits the value
        fitting = [e for e in subs if e.validator != "type"] or subs
        best = max(fitting, key=lambda e: len(e.path))
        return _explain(best, path + tuple(best.path))
    return error.message, path
