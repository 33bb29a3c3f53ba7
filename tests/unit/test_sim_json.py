"""sim_json: values that the client's JSON schema accepts, deterministic and bounded."""

from __future__ import annotations

import datetime
import enum
import ipaddress
import json
import time
import urllib.parse
import uuid
from typing import Any, Literal

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from tokenmill.engines import sim_json
from tokenmill.errors import InvalidRequest

PARAM = "response_format.json_schema.schema"
FORMATS = ["date", "time", "date-time", "email", "hostname", "ipv4", "ipv6", "uuid", "uri"]
Validator = jsonschema.Draft202012Validator


def valid_instances(schema: dict[str, Any], seeds: range = range(12)) -> list[Any]:
    """Instances for several seeds, each checked by jsonschema (formats too) and JSON-safe."""
    validator = Validator(schema, format_checker=Validator.FORMAT_CHECKER)
    values = []
    for seed in seeds:
        value = sim_json.instance_of(schema, seed, param=PARAM)
        validator.validate(value)
        assert json.loads(sim_json.dumps_instance(value)) == value
        values.append(value)
    return values


def refusal(schema: Any) -> InvalidRequest:
    """The InvalidRequest that the schema gets, checked to carry the caller's param."""
    with pytest.raises(InvalidRequest) as caught:
        sim_json.instance_of(schema, 7, param=PARAM)
    assert caught.value.param == PARAM
    return caught.value


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    street: str
    city: str = Field(min_length=2, max_length=12)
    zip_code: str = Field(pattern=r"^\d{5}$")


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    height_m: float = Field(gt=0, lt=3)
    email: str | None = None
    color: Color
    level: Level
    kind: Literal["employee", "contractor"]
    tags: list[str] = Field(min_length=1, max_length=4)
    labels: set[str]
    scores: dict[str, int]
    address: Address
    previous: list[Address] = []
    born_on: datetime.date
    updated_at: datetime.datetime
    id: uuid.UUID
    pair: tuple[int, str]
    code: str = Field(pattern=r"^[A-Z]{3}-\d{2,4}$")


class TreeNode(BaseModel):
    value: int
    children: list[TreeNode] = []


class LinkedNode(BaseModel):
    label: str
    next: LinkedNode | None = None


class Cat(BaseModel):
    pet_type: Literal["cat"]
    meows: int


class Dog(BaseModel):
    pet_type: Literal["dog"]
    barks: float


class Owner(BaseModel):
    pet: Cat | Dog = Field(discriminator="pet_type")
    fallback: int | str


def tree_depth(node: dict[str, Any]) -> int:
    return 1 + max((tree_depth(child) for child in node.get("children", [])), default=0)


class TestPydanticSchemas:
    @pytest.mark.parametrize("model", [Person, TreeNode, LinkedNode, Owner])
    def test_every_instance_validates_and_parses_back_into_the_model(
        self, model: type[BaseModel]
    ) -> None:
        """Nested models, Optional, Literal, Enum, sets, dicts, tuples, unions, recursion."""
        for value in valid_instances(model.model_json_schema(), range(30)):
            model.model_validate_json(sim_json.dumps_instance(value))

    def test_a_recursive_model_stops_once_references_run_deep(self) -> None:
        """Past the reference depth bound, optional children are left out, so trees end."""
        for value in valid_instances(TreeNode.model_json_schema(), range(40)):
            assert tree_depth(value) <= sim_json.REF_DEPTH_FULL_MAX + 2

    def test_openai_strict_function_tools_validate(self) -> None:
        """openai.pydantic_function_tool's strict parameters (all required) are met."""
        openai = pytest.importorskip("openai")
        for model in (Address, LinkedNode, Owner):
            parameters = openai.pydantic_function_tool(model)["function"]["parameters"]
            for value in valid_instances(parameters):
                model.model_validate_json(sim_json.dumps_instance(value))


DAY = {
    "type": "object",
    "properties": {"day": {"type": "integer"}, "note": {"type": ["string", "null"]}},
    "required": ["day", "note"],
    "additionalProperties": False,
}
STRICT_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": ["string", "null"], "enum": ["c", "f", None]},
        "days": {"type": "array", "items": DAY},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}


class TestOpenAIStrictMode:
    def test_every_property_is_present_and_no_other(self) -> None:
        """Strict mode: all properties required, additionalProperties false, null by type."""
        for value in valid_instances(STRICT_SCHEMA, range(30)):
            assert set(value) == {"city", "unit", "days"}
            assert all(set(day) == {"day", "note"} for day in value["days"])

    def test_nullable_fields_are_null_for_some_seeds_and_text_for_others(self) -> None:
        """A ["string", "null"] field takes both of its types across seeds."""
        values = valid_instances(STRICT_SCHEMA, range(40))
        assert {type(day["note"]) for value in values for day in value["days"]} == {str, type(None)}

    def test_optional_properties_appear_for_some_seeds_only(self) -> None:
        """Optional properties come about half the time, and no key the schema lacks."""
        values = valid_instances({"properties": {"a": {"type": "integer"}, "b": {}}}, range(40))
        assert {frozenset(value) for value in values} >= {frozenset(), frozenset({"a", "b"})}
        assert all(set(value) <= {"a", "b"} for value in values)

    def test_strings_are_readable_words(self) -> None:
        """Plain strings are one to three lowercase words, as a model would write."""
        for value in valid_instances({"type": "string"}, range(20)):
            assert 1 <= len(value.split()) <= 3
            assert value.replace(" ", "").isalpha()

    def test_the_text_keeps_non_ascii_characters(self) -> None:
        """dumps_instance writes characters as they are, as models do."""
        assert sim_json.dumps_instance({"city": "Zürich"}) == '{"city": "Zürich"}'


class TestDeterminism:
    def test_the_same_seed_gives_the_same_value(self) -> None:
        """A value is a function of the schema and the seed alone."""
        schema = Person.model_json_schema()
        for seed in range(10):
            first = sim_json.instance_of(schema, seed, param=PARAM)
            assert sim_json.instance_of(schema, seed, param=PARAM) == first

    def test_different_seeds_mostly_give_different_values(self) -> None:
        """Thirty seeds give at least twenty-five distinct people."""
        values = valid_instances(Person.model_json_schema(), range(30))
        assert len({sim_json.dumps_instance(value) for value in values}) >= 25


PARSERS = {
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "date-time": datetime.datetime.fromisoformat,
    "ipv4": ipaddress.IPv4Address,
    "ipv6": ipaddress.IPv6Address,
    "uuid": uuid.UUID,
    "uri": lambda text: urllib.parse.urlsplit(text).netloc or 1 / 0,
    "email": lambda text: text.split("@")[1],
    "hostname": lambda text: text.split(".")[2],
}
PATTERNS = [
    r"^[A-Z]{3}\d+$",
    r"^\d{5}$",
    r"^(red|green|blue)$",
    r"^[^\s@]+@[a-z]+\.com$",
    r"^#[0-9a-fA-F]{6}$",
    r"(?i)^ab[c-e]?$",
    r"^\+?[1-9]\d{1,14}$",
    r"v\d+\.\d+",
]


class TestFormatsAndPatterns:
    @pytest.mark.parametrize("fmt", FORMATS)
    def test_formats_give_strings_the_standard_library_parses(self, fmt: str) -> None:
        """Every supported format is a plausible value, whatever jsonschema can check."""
        for value in valid_instances({"type": "string", "format": fmt}):
            PARSERS[fmt](value)

    @pytest.mark.parametrize("pattern", PATTERNS)
    def test_simple_patterns_are_simulated(self, pattern: str) -> None:
        """Text built from the pattern's own parse tree matches it."""
        valid_instances({"type": "string", "pattern": pattern, "maxLength": 40})

    def test_a_pattern_with_min_length_widens_its_repeats(self) -> None:
        """Repeats grow on later tries until the text reaches minLength."""
        valid_instances({"type": "string", "pattern": "^[a-z]+$", "minLength": 30})


REFUSALS = [
    ({"type": 5}, "not a JSON type"),
    ({"type": "strin"}, "not a JSON type"),
    ({"properties": []}, "properties is not an object"),
    ({"type": "object", "required": "name"}, "required is not a list"),
    ({"enum": []}, "enum is empty"),
    ({"anyOf": "string"}, "empty anyOf"),
    ({"$ref": "#/$defs/Missing"}, "no '#/$defs/Missing'"),
    ({"$ref": "https://example.com/schema.json"}, "only local references"),
    ({"$defs": {"A": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"}, "references loop"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength is above maxLength"),
    ({"type": "string", "minLength": True}, "minLength is True"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "no number fits"),
    ({"type": "integer", "multipleOf": 0}, "multipleOf must be above 0"),
    ({"type": "number", "minimum": "low"}, "minimum is 'low'"),
    ({"type": "string", "pattern": "("}, "not a regex"),
    ({"type": "string", "pattern": r"^(a)\1$"}, "GROUPREF cannot be simulated"),
    ({"type": "string", "format": "email", "maxLength": 3}, "no email fits"),
    ({"not": {"type": "string"}}, "unsupported keywords: not"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "differ in type"),
    ({"allOf": [{"const": 1}, {"const": 2}]}, "differ in const"),
    ({"type": "array", "items": False, "minItems": 1}, "no array length fits"),
    ({"type": "array", "items": {"enum": [1, 2]}, "minItems": 3, "uniqueItems": True}, "distinct"),
    ({"properties": {"a": False}, "required": ["a"]}, "False admits no value"),
    ({"type": "object", "required": ["a"], "additionalProperties": False}, "barred by"),
]


class TestRefusals:
    @pytest.mark.parametrize(("schema", "reason"), REFUSALS)
    def test_a_bad_or_unsatisfiable_schema_is_an_invalid_request(
        self, schema: dict[str, Any], reason: str
    ) -> None:
        """Malformed and unsatisfiable schemas raise InvalidRequest with the caller's param."""
        assert reason in refusal(schema).message

    def test_the_message_names_the_schema_path(self) -> None:
        """The path to the keyword that cannot be met leads the reason."""
        code = {"type": "string", "pattern": r"^(?=\d)\w+$"}
        message = refusal({"properties": {"code": code}, "required": ["code"]}).message
        assert "at properties.code: the pattern's ASSERT cannot be simulated" in message


def nested(depth: int, wrap: Any, base: Any) -> Any:
    """A schema ``depth`` levels deep, built without recursion."""
    for _ in range(depth):
        base = wrap(base)
    return base


HOSTILE = [
    nested(10_000, lambda inner: {"type": "array", "items": inner, "minItems": 1}, {}),
    nested(40, lambda inner: {"anyOf": [inner, inner]}, {"type": "string", "minLength": 10**9}),
    nested(30, lambda inner: {"type": "array", "items": {"anyOf": [inner] * 2}, "minItems": 1}, {}),
    {"type": "array", "items": {}, "minItems": 10**9},
    {"type": "string", "pattern": "a{100000}"},
    {"type": "string", "pattern": "(?:(?:a{4000}){4000}){4000}"},
    {"type": "object", "required": [f"p{i}" for i in range(100_000)]},
    {"allOf": [{"properties": {f"p{i}": {}}} for i in range(100_000)]},
    {"properties": {"n": {"$ref": "#"}}, "required": ["n"]},
    {"properties": {f"p{i}": {"type": "array", "minItems": 999} for i in range(99)}},
]


class TestBounds:
    @pytest.mark.parametrize("schema", HOSTILE)
    def test_a_hostile_schema_is_refused_quickly(self, schema: dict[str, Any]) -> None:
        """Deep, wide, exploding or endless schemas hit a bound within a second."""
        started_s = time.perf_counter()
        refusal(schema)
        assert time.perf_counter() - started_s < 1.0


@st.composite
def numeric_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """Integers or numbers with bounds, open or closed, that always leave room for a value."""
    integral = draw(st.booleans())
    low = draw(st.integers(-50, 50))
    schema: dict[str, Any] = {"type": "integer" if integral else "number"}
    if draw(st.booleans()):
        schema[draw(st.sampled_from(["minimum", "exclusiveMinimum"]))] = low
    if draw(st.booleans()):
        high = low + draw(st.integers(10, 99))
        schema[draw(st.sampled_from(["maximum", "exclusiveMaximum"]))] = high
    if draw(st.booleans()):
        schema["multipleOf"] = draw(st.sampled_from([1, 2, 5] if integral else [0.5, 0.25, 3]))
    return schema


@st.composite
def string_schemas(draw: st.DrawFn) -> dict[str, Any]:
    """Strings by length, format or pattern, never two of those at once."""
    kind = draw(st.sampled_from(["length", "format", "pattern"]))
    if kind == "format":
        return {"type": "string", "format": draw(st.sampled_from(FORMATS))}
    if kind == "pattern":
        return {"type": "string", "pattern": draw(st.sampled_from(PATTERNS))}
    length_min = draw(st.integers(0, 8))
    length_max = length_min + draw(st.integers(0, 20))
    return {"type": "string", "minLength": length_min, "maxLength": length_max}


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.text(max_size=5))
leaf_schemas = st.one_of(
    st.just({}),
    st.sampled_from([{"type": "boolean"}, {"type": "null"}, {"type": ["integer", "null"]}]),
    numeric_schemas(),
    string_schemas(),
    st.lists(scalars, min_size=1, max_size=4).map(lambda values: {"enum": values}),
    scalars.map(lambda value: {"const": value}),
)
names = st.sampled_from(["alpha", "beta", "gamma", "delta"])
DISTINCT_INTEGERS = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": 999},
    "uniqueItems": True,
    "minItems": 3,
}


def object_schema(properties: dict[str, Any], required: list[str], closed: bool) -> Any:
    named = sorted(set(required) & set(properties))
    schema = {"type": "object", "properties": properties, "required": named}
    return {**schema, "additionalProperties": False} if closed else schema


def array_schema(items: Any, count_min: int, count_extra: int) -> Any:
    count_max = count_min + count_extra
    return {"type": "array", "items": items, "minItems": count_min, "maxItems": count_max}


def tuple_schema(first: Any, second: Any) -> Any:
    return {"type": "array", "prefixItems": [first, second], "items": False}


def merged_objects(left: Any, right: Any) -> Any:
    first = {"type": "object", "properties": {"left": left}, "required": ["left"]}
    return {"allOf": [first, {"properties": {"right": right}}]}


def compound_schemas(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Objects, arrays, tuples, unions and merges of smaller schemas."""
    types = st.permutations(["string", "boolean", "null", "integer", "array", "object"])
    properties = st.dictionaries(names, children, max_size=3)
    return st.one_of(
        st.builds(object_schema, properties, st.lists(names), st.booleans()),
        st.builds(array_schema, children, st.integers(0, 2), st.integers(0, 2)),
        st.just(DISTINCT_INTEGERS),
        st.builds(tuple_schema, children, children),
        st.lists(children, min_size=1, max_size=3).map(lambda branches: {"anyOf": branches}),
        types.map(lambda kinds: {"oneOf": [{"type": kind} for kind in kinds[:3]]}),
        st.builds(merged_objects, children, children),
    )


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A schema whose body references a $defs (and a definitions) entry, as pydantic does."""
    body = draw(st.recursive(leaf_schemas, compound_schemas, max_leaves=10))
    item = draw(st.recursive(leaf_schemas, compound_schemas, max_leaves=4))
    reference = {"$ref": draw(st.sampled_from(["#/$defs/Item", "#/definitions/Item"]))}
    properties = {"body": body, "item": reference, "items": {"type": "array", "items": reference}}
    return {
        "$defs": {"Item": item},
        "definitions": {"Item": item},
        "type": "object",
        "properties": properties,
        "required": ["body", "item"],
    }


KEYWORDS = sorted(
    {"type", "properties", "required", "additionalProperties", "items", "prefixItems", "enum"}
    | {"const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "minimum", "maximum", "multipleOf"}
    | {"exclusiveMinimum", "minLength", "maxLength", "minItems", "uniqueItems", "pattern"}
    | {"format"}
)
garbage = st.recursive(
    st.one_of(scalars, st.sampled_from(["string", "object", "array", "#/$defs/x", "^a+$"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYWORDS), inner),
    max_leaves=12,
).filter(lambda value: isinstance(value, dict))


class TestGeneratedSchemas:
    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(documents(), st.integers(0, 2**32))
    def test_every_instance_of_a_generated_schema_validates(
        self, schema: dict[str, Any], seed: int
    ) -> None:
        """Random nestings of the supported keywords always give a valid instance."""
        value = sim_json.instance_of(schema, seed, param=PARAM)
        Validator(schema, format_checker=Validator.FORMAT_CHECKER).validate(value)

    @settings(max_examples=100, deadline=None)
    @given(garbage)
    def test_any_json_object_gives_a_value_or_an_invalid_request(
        self, schema: dict[str, Any]
    ) -> None:
        """Garbage in the shape of a schema never raises anything but InvalidRequest."""
        try:
            sim_json.instance_of(schema, 3, param=PARAM)
        except InvalidRequest as exc:
            assert exc.param == PARAM
