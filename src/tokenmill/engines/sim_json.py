"""Schema-valid JSON values for the ``sim`` engine's structured output and tool calls (pure).

Clients that ask for ``response_format: json_schema`` or offer tools parse the answer
against it, so the sim sends a value it accepts: the same for the same seed, with words for
strings so it reads like a model's. The schema is the client's, so the walk is bounded, and
what cannot be satisfied or read raises ``InvalidRequest`` naming the schema path. Patterns
are parsed by the standard library's regex parser; text is built from the parse tree.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import re._compiler as regex_compiler
import re._parser as regex_parser
import string
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tokenmill.errors import InvalidRequest

SCHEMA_DEPTH_MAX = 48  # schemas nested on one path, references followed included
REF_DEPTH_FULL_MAX = 3  # references followed on one path before values are kept minimal
WORK_UNITS_MAX = 50_000  # one per schema visited or character made: bounds time and size
STRING_CHARS_MAX = 4_096  # the longest minLength (or pattern repeat) honoured
ARRAY_ITEMS_COUNT_MAX = 1_000  # the largest minItems honoured
_ATTEMPTS_MAX = 16  # tries per pattern text, number, distinct item or union branch
_UNBOUNDED = 2**63  # maxLength when none is given

_WORDS = (
    "amber", "anchor", "apple", "atlas", "beacon", "birch", "bright", "cedar", "copper",
    "delta", "ember", "falcon", "forest", "garden", "harbor", "island", "jasper", "lantern",
    "maple", "meadow", "nova", "orbit", "pebble", "quartz", "river", "silver", "summit",
    "timber", "velvet", "willow", "yellow", "zephyr",
)  # fmt: skip
_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")
_ANNOTATIONS = frozenset((
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "$defs",
    "definitions", "deprecated", "readOnly", "writeOnly", "discriminator", "$anchor",
))  # fmt: skip
_UNSUPPORTED = frozenset((
    "not", "if", "then", "else", "contains", "dependentRequired", "dependentSchemas",
    "dependencies", "patternProperties", "propertyNames", "minProperties", "maxProperties",
))  # fmt: skip
_NUMBER_BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
_LOWER_BOUNDS = frozenset({"minimum", "exclusiveMinimum", "minLength", "minItems"})
_UPPER_BOUNDS = frozenset({"maximum", "exclusiveMaximum", "maxLength", "maxItems"})
_CHARACTER_POOL = string.ascii_letters + string.digits + " _-.:/@"


def _date(rng: random.Random) -> str:
    return f"{rng.randint(2020, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date": _date,
    "time": _time,
    "date-time": lambda rng: f"{_date(rng)}T{_time(rng)}",
    "email": lambda rng: f"{rng.choice(_WORDS)}@example.com",
    "hostname": lambda rng: f"{rng.choice(_WORDS)}.example.com",
    "ipv4": lambda rng: ".".join(str(rng.randint(1, 254)) for _ in range(4)),
    "ipv6": lambda rng: f"2001:db8::{rng.randint(1, 0xFFFF):x}",
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    **dict.fromkeys(("uri", "url"), lambda rng: f"https://example.com/{rng.choice(_WORDS)}"),
}


def instance_of(schema: dict[str, Any], seed: int, *, param: str) -> Any:
    """A value valid under ``schema``, the same for the same seed; ``param`` names the
    request field that carried the schema, for the error when it cannot be satisfied."""
    assert param
    builder = _Builder(schema, random.Random(seed), param)
    try:
        value = builder.build(schema, _Place("", 0, 0))
    except (RecursionError, ArithmeticError, ValueError, TypeError) as exc:
        # Input beyond plain JSON (a bound too large to step through) is still a 400.
        message = f"the JSON schema cannot be simulated ({type(exc).__name__})"
        raise InvalidRequest(message, param=param) from exc
    assert builder.work_units_left >= 0
    return value


def dumps_instance(value: Any) -> str:
    """The value as JSON text, spaced the way models write it."""
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class _Place:
    """Where the walk stands: the schema path for messages, and how deep it went."""

    path: str
    depth: int
    ref_depth: int

    def down(self, step: str, refs_followed: int = 0) -> _Place:
        path = f"{self.path}.{step}" if self.path and step else (step or self.path)
        return _Place(path, self.depth + 1, self.ref_depth + refs_followed)


def _has_type(value: Any, name: str) -> bool:
    """JSON Schema's idea of a type: booleans are not numbers, 2.0 is an integer."""
    if isinstance(value, bool) or value is None:
        return name == ("boolean" if isinstance(value, bool) else "null")
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    kinds = {"number": (int, float), "string": (str,), "array": (list,), "object": (dict,)}
    return isinstance(value, kinds.get(name, ()))


def _within(value: float, bounds: list[Any]) -> bool:
    """Whether a number keeps to minimum, exclusiveMinimum, maximum, exclusiveMaximum."""
    low, above, high, below = (math.nan if bound is None else bound for bound in bounds)
    return not (value < low or value <= above or value > high or value >= below)  # nan: False


class _Builder:
    """One walk over one schema: the seeded choices, the work left, the error's param."""

    def __init__(self, root: dict[str, Any], rng: random.Random, param: str) -> None:
        self.root, self.rng, self.param = root, rng, param
        self.work_units_left = WORK_UNITS_MAX
        self.class_characters: dict[str, list[str]] = {}  # per regex class, while building

    def fail(self, place: _Place, reason: str) -> InvalidRequest:
        where = place.path or "the root"
        return InvalidRequest(f"JSON schema not supported at {where}: {reason}", param=self.param)

    def require(self, condition: bool, place: _Place, reason: str) -> None:
        if not condition:
            raise self.fail(place, reason)

    def charge(self, work_units: int, place: _Place) -> None:
        self.work_units_left -= work_units
        self.require(self.work_units_left >= 0, place, f"over {WORK_UNITS_MAX} steps to make")

    def build(self, schema: Any, place: _Place) -> Any:
        """A value for any (sub)schema: combinators first, then listed values, then types."""
        self.charge(1, place)
        self.require(place.depth <= SCHEMA_DEPTH_MAX, place, f"over {SCHEMA_DEPTH_MAX} levels")
        if schema is True or schema == {}:
            return self.words(0, _UNBOUNDED, place)
        if not isinstance(schema, dict):
            raise self.fail(place, f"the schema {schema!r:.20} admits no value")
        unsupported = ", ".join(sorted(_UNSUPPORTED & schema.keys()))
        self.require(not unsupported, place, f"unsupported keywords: {unsupported}")
        if "$ref" in schema or "allOf" in schema:
            merged, refs_followed = self.flatten(schema, place)
            return self.build(merged, place.down("", refs_followed))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                siblings = {k: v for k, v in schema.items() if k != key and k not in _ANNOTATIONS}
                return self.choose(schema[key], siblings, place, key)
        if "const" in schema or "enum" in schema:
            listed = [schema["const"]] if "const" in schema else schema["enum"]
            self.require(isinstance(listed, list) and bool(listed), place, "enum is empty")
            return copy.deepcopy(self.rng.choice(listed))
        names = self.type_names(schema.get("type"), schema, place)
        if len(names) > 1:
            return self.choose([{**schema, "type": name} for name in names], {}, place, "")
        if names[0] in ("null", "boolean"):
            return None if names[0] == "null" else self.rng.random() < 0.5
        if names[0] in ("integer", "number"):
            return self.build_number(schema, names[0] == "integer", place)
        makers = {"string": self.build_string, "array": self.build_array}
        return makers.get(names[0], self.build_object)(schema, place)

    def resolve(self, ref: Any, place: _Place) -> Any:
        """The schema a local JSON pointer (``#/$defs/Name``) points at."""
        local = isinstance(ref, str) and (ref == "#" or ref.startswith("#/"))
        self.require(local, place, f"only local references like '#/$defs/Name', not {ref!r}")
        node: Any = self.root
        for token in ref[2:].split("/") if ref != "#" else []:
            step = urllib.parse.unquote(token).replace("~1", "/").replace("~0", "~")
            self.require(isinstance(node, dict) and step in node, place, f"no {ref!r}")
            node = node[step]
        return node

    def flatten(self, schema: dict[str, Any], place: _Place) -> tuple[dict[str, Any], int]:
        """One schema with its references and allOf branches merged in; references taken."""
        merged: dict[str, Any] = {}
        pending: list[Any] = [schema]
        refs_followed = 0
        while pending:
            self.charge(1, place)
            part = pending.pop()  # depth first, the first branch first: it wins clashes
            if not isinstance(part, dict):
                self.require(part is True, place, f"allOf holds {part!r:.40}")
                continue
            if "$ref" in part:
                refs_followed += 1
                self.require(refs_followed <= SCHEMA_DEPTH_MAX, place, "references loop")
                pending.append(self.resolve(part["$ref"], place))
            self.require(isinstance(part.get("allOf", []), list), place, "allOf is not a list")
            pending.extend(reversed(part.get("allOf", [])))
            for key, value in part.items():
                merged[key] = self.merge(key, merged[key], value, place) if key in merged else value
        return {k: v for k, v in merged.items() if k not in ("$ref", "allOf")}, refs_followed

    def merge(self, key: str, first: Any, second: Any, place: _Place) -> Any:
        """A keyword two allOf branches set: properties and required join, bounds tighten."""
        self.charge(len(first) if isinstance(first, dict | list) else 0, place)  # each copies
        if key == "properties" and isinstance(first, dict) and isinstance(second, dict):
            shared = {n: {"allOf": [first[n], second[n]]} for n in first if n in second}
            return {**first, **second, **shared}
        if key == "required" and isinstance(first, list) and isinstance(second, list):
            return list(dict.fromkeys([*first, *second]))
        numbers = [v for v in (first, second) if isinstance(v, int | float)]
        if key in _LOWER_BOUNDS | _UPPER_BOUNDS and len(numbers) == 2:
            return max(numbers) if key in _LOWER_BOUNDS else min(numbers)
        clash = first != second and key in ("type", "const", "enum", "format", "pattern")
        self.require(not clash, place, f"the allOf branches differ in {key}")
        return first

    def type_names(self, declared: Any, schema: dict[str, Any], place: _Place) -> list[str]:
        """The declared types, or the one that satisfies an untyped schema."""
        if declared is None:  # a string passes the keywords of every other type
            return ["object" if "properties" in schema else "string"]
        names = declared if isinstance(declared, list) else [declared]
        known = bool(names) and all(isinstance(n, str) and n in _TYPES for n in names)
        self.require(known, place, f"the type {declared!r:.40} is not a JSON type")
        return list(dict.fromkeys(names))

    def choose(self, branches: Any, siblings: dict[str, Any], place: _Place, label: str) -> Any:
        """A seeded branch's value, the next on failure; for oneOf, of a type no other has."""
        self.require(isinstance(branches, list) and bool(branches), place, f"empty {label}")
        order = list(range(len(branches)))
        self.rng.shuffle(order)
        values: list[Any] = []
        errors: list[InvalidRequest] = []
        for index in order[:_ATTEMPTS_MAX]:
            branch = {"allOf": [siblings, branches[index]]} if siblings else branches[index]
            try:
                value = self.build(branch, place.down(f"{label}.{index}" if label else ""))
            except InvalidRequest as exc:
                if self.work_units_left < 0:  # out of work: no other branch may start
                    raise
                errors.append(exc.with_traceback(None))  # keep no frames alive (gc)
                continue
            values.append(value)
            others = [b for i, b in enumerate(branches) if i != index and isinstance(b, dict)]
            if label != "oneOf" or not any(_has_type(value, str(b.get("type"))) for b in others):
                return value
        if values:
            return values[0]
        raise errors[0]

    def number_at(self, schema: dict[str, Any], key: str, place: _Place, absent: Any = None) -> Any:
        """A numeric keyword, or ``absent``; an int ``absent`` marks a count (minLength)."""
        if key not in schema:
            return absent
        value = schema[key]
        counting = isinstance(absent, int)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        fine = number and math.isfinite(value) and (not counting or (value >= 0 and value % 1 == 0))
        self.require(fine, place, f"{key} is {value!r:.40}")
        return int(value) if counting else value

    def build_number(self, schema: dict[str, Any], integral: bool, place: _Place) -> Any:
        """A multiple of multipleOf (else of 1 or 0.25, to read well) inside the bounds."""
        bounds = [self.number_at(schema, key, place) for key in _NUMBER_BOUNDS]
        lows = [b for b in bounds[:2] if b is not None]
        highs = [b for b in bounds[2:] if b is not None]
        low = max(lows) if lows else min([*highs, 100.0]) - 100.0
        high = min(highs) if highs else low + 100.0
        step = self.number_at(schema, "multipleOf", place, 1.0 if integral else 0.25)
        self.require(step > 0, place, "multipleOf must be above 0")
        first, last = math.ceil(low / step), math.floor(high / step)
        first += 0 if _within(first * step, [*bounds[:2], None, None]) else 1
        last -= 0 if _within(last * step, [None, None, *bounds[2:]]) else 1
        for _ in range(_ATTEMPTS_MAX if first <= last else 0):
            value = self.rng.randint(first, min(last, first + 999)) * step
            whole = not integral or _has_type(value, "integer")
            if whole and (value / step).is_integer() and _within(value, bounds):
                return int(value) if integral else value
        if not integral and "multipleOf" not in schema and _within((low + high) / 2, bounds):
            return (low + high) / 2
        raise self.fail(place, "no number fits the bounds and multipleOf")

    def build_string(self, schema: dict[str, Any], place: _Place) -> str:
        """Words, a text for the pattern, or a plausible value of a known format."""
        length_min = self.number_at(schema, "minLength", place, 0)
        length_max = self.number_at(schema, "maxLength", place, _UNBOUNDED)
        fits = length_min <= min(length_max, STRING_CHARS_MAX)
        self.require(fits, place, f"minLength is above maxLength or {STRING_CHARS_MAX}")
        if "pattern" in schema:
            return self.string_matching(schema["pattern"], length_min, length_max, place)
        fmt = schema.get("format")
        if not (isinstance(fmt, str) and fmt in _FORMATS):
            return self.words(length_min, length_max, place)
        text = _FORMATS[fmt](self.rng)
        self.require(length_min <= len(text) <= length_max, place, f"no {fmt} fits the length")
        return text

    def words(self, length_min: int, length_max: int, place: _Place) -> str:
        """One to three words, more to reach length_min, cut to length_max."""
        text = " ".join(self.rng.choice(_WORDS) for _ in range(self.rng.randint(1, 3)))
        while len(text) < length_min:
            text += " " + self.rng.choice(_WORDS)
        cut = text[:length_max]
        self.charge(len(cut), place)
        return cut.rstrip() if len(cut.rstrip()) >= length_min else cut

    def string_matching(self, pattern: Any, length_min: int, length_max: int, place: _Place) -> str:
        """Text built from the pattern's tree (repeats widen per try), as re.search accepts."""
        self.require(isinstance(pattern, str), place, "the pattern is not a string")
        try:
            tree = regex_parser.parse(pattern)
        except re.error as exc:
            raise self.fail(place, f"the pattern {pattern!r} is not a regex") from exc
        for attempt in range(_ATTEMPTS_MAX):
            text = self.emit_regex(tree, tree.state, 2 + attempt * (length_min // 4 + 1), place)
            if length_min <= len(text) <= length_max and re.search(pattern, text):
                return text
        raise self.fail(place, f"the pattern {pattern!r} cannot be simulated")

    def emit_regex(self, items: Any, state: Any, spread: int, place: _Place) -> str:
        """Text for a parsed regex: each repeat from its minimum to ``spread`` more."""
        self.charge(1, place)
        parts: list[str] = []
        for opcode, argument in items:
            kind = str(opcode)
            if kind in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, high, body = argument
                self.require(low <= STRING_CHARS_MAX, place, f"a pattern repeats {low} times")
                count = self.rng.randint(low, min(high, low + spread))
                parts.extend(self.emit_regex(body, state, spread, place) for _ in range(count))
            elif kind in ("SUBPATTERN", "ATOMIC_GROUP", "BRANCH"):
                body = argument[-1] if kind == "SUBPATTERN" else argument
                body = self.rng.choice(argument[-1]) if kind == "BRANCH" else body
                parts.append(self.emit_regex(body, state, spread, place))
            elif kind in ("LITERAL", "NOT_LITERAL", "IN", "ANY"):
                parts.append(self.rng.choice(self.characters_for(opcode, argument, state, place)))
            elif kind != "AT":
                raise self.fail(place, f"the pattern's {kind} cannot be simulated")
        self.charge(sum(map(len, parts)), place)
        return "".join(parts)

    def characters_for(self, opcode: Any, argument: Any, state: Any, place: _Place) -> list[str]:
        """What a literal or class accepts, by its own compiled matcher (so flags count too)."""
        key = repr((opcode, argument))
        if key not in self.class_characters:
            matcher = regex_compiler.compile(regex_parser.SubPattern(state, [(opcode, argument)]))
            members = argument if str(opcode) == "IN" else [(opcode, argument)]
            ends = [chr(a[0] if isinstance(a, tuple) else a) for o, a in members if a is not None]
            fitting = [c for c in [*_CHARACTER_POOL, *ends] if matcher.fullmatch(c)]
            self.require(bool(fitting), place, "a pattern class holds no plain character")
            self.class_characters[key] = sorted(set(fitting))
        return self.class_characters[key]

    def build_array(self, schema: dict[str, Any], place: _Place) -> list[Any]:
        """One or two items unless bounded (minItems once deep), distinct if uniqueItems."""
        prefix, items = schema.get("prefixItems", []), schema.get("items", True)
        self.require(isinstance(prefix, list), place, "prefixItems is not a list")
        count_min = self.number_at(schema, "minItems", place, 0)
        count_max = self.number_at(schema, "maxItems", place, ARRAY_ITEMS_COUNT_MAX)
        count_max = min(count_max, len(prefix)) if items is False else count_max
        fits = count_min <= min(count_max, ARRAY_ITEMS_COUNT_MAX)
        self.require(fits, place, f"no array length fits minItems {count_min}")
        count = self.rng.randint(max(count_min, 1), max(count_min, 2))
        count = min(count_min if place.ref_depth > REF_DEPTH_FULL_MAX else count, count_max)
        values: list[Any] = []
        for index in range(count):
            step = f"prefixItems.{index}" if index < len(prefix) else "items"
            for _ in range(_ATTEMPTS_MAX):
                value = self.build(prefix[index] if step != "items" else items, place.down(step))
                if schema.get("uniqueItems") is not True or value not in values:
                    break
            else:
                raise self.fail(place, f"no {count} distinct items fit uniqueItems")
            values.append(value)
        return values

    def build_object(self, schema: dict[str, Any], place: _Place) -> dict[str, Any]:
        """Every required property, about half the optional ones (none once deep), no others."""
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        self.require(isinstance(properties, dict), place, "properties is not an object")
        names_ok = isinstance(required, list) and all(isinstance(n, str) for n in required)
        self.require(names_ok, place, "required is not a list of names")
        extra, wanted = schema.get("additionalProperties", True), set(required)
        full = place.ref_depth <= REF_DEPTH_FULL_MAX
        value: dict[str, Any] = {}
        for name in dict.fromkeys([*properties, *required]):
            if name not in wanted and not (full and self.rng.random() < 0.5):
                continue
            barred = name not in properties and extra is False
            self.require(not barred, place, f"required {name!r} is barred by additionalProperties")
            value[name] = self.build(properties.get(name, extra), place.down(f"properties.{name}"))
        return value
