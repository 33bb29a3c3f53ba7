"""The GPU and model catalogs shipped with tokenmill (``economics/catalogs/*.yaml``).

Each YAML file maps an id to one entry; every entry names its ``source`` and ``as_of`` date,
so a figure can be traced and refreshed. ``parse_gpus`` and ``parse_models`` are pure and
validate every field (a bad entry raises ``ConfigurationError`` whose ``param`` names the
field); ``load_gpus`` and ``load_models`` read the packaged files once and cache the result.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.resources
import math
import re
from dataclasses import dataclass
from decimal import Decimal

import yaml

from tokenmill.errors import ConfigurationError, NotFound

GPUS_FILE = "gpus.yaml"
_PRICE_TEXT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
MODELS_FILE = "models.yaml"


@dataclass(frozen=True)
class Gpu:
    """One accelerator: dense tensor throughput per precision, memory and bandwidth."""

    id: str
    name: str
    flops_bf16_per_s: float
    flops_fp8_per_s: float | None
    flops_fp4_per_s: float | None
    memory_bytes: int
    bandwidth_bytes_per_s: float
    power_w: float
    interconnect_bytes_per_s: float  # scale-up link per GPU, both directions (NVLink, PCIe)
    source: str
    as_of: str
    available_from: str | None = None  # first volume shipments (ISO date)
    purchase_usd: Decimal | None = None  # per GPU
    rent_usd_per_gpu_hour: Decimal | None = None
    prices_source: str | None = None  # required when a price is given
    prices_as_of: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One model's architecture, as far as weight and KV-cache sizing need it."""

    id: str
    name: str
    parameters: int
    parameters_active: int
    layers: int
    hidden_size: int
    heads_query: int
    heads_kv: int
    head_dim: int
    kv_bytes_per_token_bf16: int
    context_tokens: int
    source: str
    as_of: str
    # A mixture of experts: routed experts per MoE layer, how many each token uses, and the
    # parameters of all routed experts (all layers). 0 for a dense model.
    experts: int = 0
    experts_per_token: int = 0
    expert_parameters: int = 0
    moe_layers: int = 0  # layers with routed experts (default: every layer of an MoE model)
    expert_precision: str | None = None  # the checkpoint's expert precision (gpt-oss: fp4)
    attention_layers: int = 0  # layers attending over the whole context (default: all)
    attention_dim_qk: int = 0  # per-head width of a score (default head_dim; MLA: 576)
    attention_dim_v: int = 0  # per-head width of a value (default head_dim; MLA: 512)

    @property
    def expert_parameters_active(self) -> int:
        """Routed-expert parameters one token uses."""
        if self.experts == 0:
            return 0
        return self.expert_parameters * self.experts_per_token // self.experts

    @property
    def dense_parameters(self) -> int:
        """Parameters every token's pass reads: all but the routed experts."""
        return self.parameters - self.expert_parameters

    @property
    def dense_parameters_active(self) -> int:
        """Parameters every token computes with, beside its experts."""
        return self.parameters_active - self.expert_parameters_active


@dataclass(frozen=True)
class _Entry:
    """One raw YAML entry and where it came from, for error messages."""

    file_name: str
    entry_id: str
    raw: dict[object, object]

    def fail(self, field: str, problem: str) -> ConfigurationError:
        message = f"{self.file_name} entry '{self.entry_id}': field '{field}' {problem}"
        return ConfigurationError(message, param=field)

    def value(self, field: str) -> object:
        if field not in self.raw:
            raise self.fail(field, "is missing")
        return self.raw[field]

    def text(self, field: str) -> str:
        value = self.value(field)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, f"must be a non-empty string, got {value!r}")
        return value

    def count(self, field: str) -> int:
        value = self.value(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(field, f"must be an integer >= 1, got {value!r}")
        return value

    def number(self, field: str) -> float:
        value = self.value(field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(field, f"must be a number, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise self.fail(field, f"must be a finite number > 0, got {value!r}")
        return float(value)

    def number_or_none(self, field: str) -> float | None:
        if self.value(field) is None:
            return None
        return self.number(field)

    def date(self, field: str) -> str:
        value = self.value(field)
        if isinstance(value, datetime.date):
            return value.isoformat()
        if isinstance(value, str):
            try:
                return datetime.date.fromisoformat(value).isoformat()
            except ValueError:
                pass
        raise self.fail(field, f"must be an ISO date like '2026-11-25', got {value!r}")

    def price(self, field: str) -> Decimal | None:
        """An optional price in US dollars, written as decimal text ("2.35"), or null."""
        value = self.raw.get(field)
        if value is None:
            return None
        if not isinstance(value, str) or not _PRICE_TEXT.fullmatch(value.strip()):
            raise self.fail(field, f'must be a price as decimal text like "2.35", got {value!r}')
        return Decimal(value.strip())

    def reject_unknown(self, known_fields: set[str]) -> None:
        for field in self.raw:
            if field not in known_fields:
                raise self.fail(str(field), "is not a known field")


def _entries(document: object, file_name: str) -> list[_Entry]:
    """The entries of a catalog document, each checked to be a mapping under a string id."""
    if not isinstance(document, dict) or not document:
        raise ConfigurationError(f"{file_name} must be a non-empty mapping of id to entry")
    entries = []
    for entry_id, raw in document.items():
        if not isinstance(entry_id, str) or not entry_id:
            raise ConfigurationError(f"{file_name}: id {entry_id!r} must be a non-empty string")
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{file_name} entry '{entry_id}' must be a mapping")
        entries.append(_Entry(file_name, entry_id, raw))
    return entries


def _field_names(cls: type[Gpu] | type[ModelSpec]) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)} - {"id"}


def _gpu_from(entry: _Entry) -> Gpu:
    entry.reject_unknown(_field_names(Gpu))
    purchase = entry.price("purchase_usd")
    rent = entry.price("rent_usd_per_gpu_hour")
    priced = purchase is not None or rent is not None
    return Gpu(
        available_from=entry.date("available_from") if "available_from" in entry.raw else None,
        purchase_usd=purchase,
        rent_usd_per_gpu_hour=rent,
        prices_source=entry.text("prices_source") if priced else None,
        prices_as_of=entry.date("prices_as_of") if priced else None,
        id=entry.entry_id,
        name=entry.text("name"),
        flops_bf16_per_s=entry.number("flops_bf16_per_s"),
        flops_fp8_per_s=entry.number_or_none("flops_fp8_per_s"),
        flops_fp4_per_s=entry.number_or_none("flops_fp4_per_s"),
        memory_bytes=entry.count("memory_bytes"),
        bandwidth_bytes_per_s=entry.number("bandwidth_bytes_per_s"),
        power_w=entry.number("power_w"),
        interconnect_bytes_per_s=entry.number("interconnect_bytes_per_s"),
        source=entry.text("source"),
        as_of=entry.date("as_of"),
    )


def _moe_fields(entry: _Entry, layers: int, head_dim: int) -> dict[str, object]:
    """The optional mixture-of-experts and attention fields, defaults filled in."""
    fields: dict[str, object] = {}
    for name, default in (
        ("attention_layers", layers),
        ("attention_dim_qk", head_dim),
        ("attention_dim_v", head_dim),
    ):
        fields[name] = entry.count(name) if name in entry.raw else default
    if "experts" not in entry.raw:
        for name in ("experts_per_token", "expert_parameters", "moe_layers", "expert_precision"):
            if name in entry.raw:
                raise entry.fail(name, "needs 'experts' (a mixture-of-experts model)")
        return fields
    fields["experts"] = entry.count("experts")
    fields["experts_per_token"] = entry.count("experts_per_token")
    fields["expert_parameters"] = entry.count("expert_parameters")
    fields["moe_layers"] = entry.count("moe_layers") if "moe_layers" in entry.raw else layers
    precision = entry.raw.get("expert_precision")
    if precision not in (None, "bf16", "fp16", "fp8", "fp4"):
        raise entry.fail("expert_precision", f"must be bf16, fp16, fp8 or fp4, got {precision!r}")
    fields["expert_precision"] = precision
    return fields


def _model_from(entry: _Entry) -> ModelSpec:
    entry.reject_unknown(_field_names(ModelSpec))
    layers = entry.count("layers")
    head_dim = entry.count("head_dim")
    spec = ModelSpec(
        id=entry.entry_id,
        name=entry.text("name"),
        parameters=entry.count("parameters"),
        parameters_active=entry.count("parameters_active"),
        layers=layers,
        hidden_size=entry.count("hidden_size"),
        heads_query=entry.count("heads_query"),
        heads_kv=entry.count("heads_kv"),
        head_dim=head_dim,
        kv_bytes_per_token_bf16=entry.count("kv_bytes_per_token_bf16"),
        context_tokens=entry.count("context_tokens"),
        source=entry.text("source"),
        as_of=entry.date("as_of"),
        **_moe_fields(entry, layers, head_dim),  # type: ignore[arg-type]
    )
    _check_model(entry, spec)
    return spec


def _check_model(entry: _Entry, spec: ModelSpec) -> None:
    """Relations between fields that each look fine alone."""
    if spec.parameters_active > spec.parameters:
        raise entry.fail("parameters_active", "must not exceed 'parameters'")
    if spec.heads_kv > spec.heads_query:
        raise entry.fail("heads_kv", "must not exceed 'heads_query'")
    if spec.attention_layers > spec.layers:
        raise entry.fail("attention_layers", "must not exceed 'layers'")
    if spec.experts == 0:
        return
    if spec.experts_per_token > spec.experts:
        raise entry.fail("experts_per_token", "must not exceed 'experts'")
    if spec.moe_layers > spec.layers:
        raise entry.fail("moe_layers", "must not exceed 'layers'")
    if spec.expert_parameters >= spec.parameters:
        raise entry.fail("expert_parameters", "must be less than 'parameters'")
    if not 0 <= spec.dense_parameters_active <= spec.dense_parameters:
        message = (
            "does not add up: parameters_active minus the active experts' share must lie"
            " between 0 and the parameters outside the experts"
        )
        raise entry.fail("expert_parameters", message)


def parse_gpus(document: object, file_name: str = GPUS_FILE) -> dict[str, Gpu]:
    """The GPUs of a parsed YAML document; raises ``ConfigurationError`` on a bad entry."""
    gpus = {entry.entry_id: _gpu_from(entry) for entry in _entries(document, file_name)}
    assert all(gpu_id == gpu.id for gpu_id, gpu in gpus.items())
    return gpus


def parse_models(document: object, file_name: str = MODELS_FILE) -> dict[str, ModelSpec]:
    """The models of a parsed YAML document; raises ``ConfigurationError`` on a bad entry."""
    models = {entry.entry_id: _model_from(entry) for entry in _entries(document, file_name)}
    assert all(model_id == spec.id for model_id, spec in models.items())
    return models


def read_packaged(file_name: str) -> object:
    """A packaged catalog file, parsed (YAML)."""
    resource = importlib.resources.files("tokenmill.economics") / "catalogs" / file_name
    document: object = yaml.safe_load(resource.read_text(encoding="utf-8"))
    return document


@functools.cache
def _gpus_cached() -> dict[str, Gpu]:
    return parse_gpus(read_packaged(GPUS_FILE))


@functools.cache
def _models_cached() -> dict[str, ModelSpec]:
    return parse_models(read_packaged(MODELS_FILE))


def load_gpus() -> dict[str, Gpu]:
    """Every GPU in the packaged catalog, by id (a fresh dict; the entries are frozen)."""
    return dict(_gpus_cached())


def load_models() -> dict[str, ModelSpec]:
    """Every model in the packaged catalog, by id (a fresh dict; the entries are frozen)."""
    return dict(_models_cached())


# Short names people use for a GPU whose catalog id says more.
GPU_ALIASES = {"h200": "h200-sxm", "a100": "a100-sxm-80gb", "h100": "h100-sxm"}


def gpu(gpu_id: str) -> Gpu:
    """The catalog GPU with this id (or a short alias: ``h200``); raises ``NotFound`` (param
    ``gpu``) for an unknown id."""
    gpus = _gpus_cached()
    gpu_id = GPU_ALIASES.get(gpu_id, gpu_id)
    if gpu_id not in gpus:
        known = ", ".join(sorted(gpus))
        raise NotFound(f"unknown GPU '{gpu_id}'; known: {known}", param="gpu")
    return gpus[gpu_id]


def model(model_id: str) -> ModelSpec:
    """The catalog model with this id; raises ``NotFound`` (param ``model``) for an unknown id."""
    models = _models_cached()
    if model_id not in models:
        known = ", ".join(sorted(models))
        raise NotFound(f"unknown model '{model_id}'; known: {known}", param="model")
    return models[model_id]
