"""Configuration: one YAML file (engines, deployments, models, limits) -> frozen settings.

The built-in default (``default_config.yaml`` in the package) is the same format. Errors name
the bad field by its dotted path (``deployments.llama-8b.gpu_count``). Secrets never live in
the file: an upstream's API key is read from the environment variable the file names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tokenmill.errors import ConfigurationError, InvalidRequest
from tokenmill.money import parse_amount
from tokenmill.retail.plan_specs import plan_from_spec

DEFAULT_PORT = 8080


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(_Frozen):
    """System bounds, each with its unit; documented in docs/limits.md."""

    request_body_bytes_max: int = Field(4 * 1024 * 1024, ge=1024)
    admin_body_bytes_max: int = Field(1024 * 1024, ge=1024)
    header_bytes_max: int = Field(32 * 1024, ge=1024, le=16 * 1024 * 1024)
    header_count_max: int = Field(100, ge=8, le=10_000)
    request_head_s_max: float = Field(10.0, gt=0, le=3600)
    keep_alive_idle_s_max: float = Field(65.0, gt=0, le=3600)
    connections_count_max: int = Field(10_000, ge=1)
    output_tokens_max: int = Field(32768, ge=1)
    messages_count_max: int = Field(2048, ge=1)
    stop_count_max: int = Field(4, ge=1)
    embedding_inputs_count_max: int = Field(2048, ge=1)
    timeout_s_connect: float = Field(5.0, gt=0)
    timeout_s_read: float = Field(120.0, gt=0)
    upstream_connections_max: int = Field(256, ge=1)
    commit_queue_count_max: int = Field(100_000, ge=1)
    commit_batch_count_max: int = Field(2_000, ge=1)
    change_poll_interval_ms: int = Field(250, ge=10, le=1000)
    shutdown_drain_s_max: float = Field(30.0, ge=0)
    sim_queue_count_max: int = Field(10_000, ge=1)
    hold_ttl_s: float = Field(3600.0, gt=0)
    holds_count_max: int = Field(100_000, ge=1)
    breaker_failures_count_max: int = Field(5, ge=1)
    breaker_open_s: float = Field(10.0, ge=0)
    breaker_failure_ratio_max: float = Field(0.5, gt=0, le=1)
    route_queue_count_max: int = Field(1000, ge=0)
    route_queue_wait_s_max: float = Field(5.0, ge=0)
    failover_deadline_s: float = Field(30.0, gt=0)
    health_check_interval_s: float = Field(10.0, ge=0)
    responses_retention_s: float = Field(30 * 24 * 3600.0, gt=0)
    responses_stored_count_max: int = Field(100_000, ge=1)
    response_chain_count_max: int = Field(1000, ge=1)
    response_context_bytes_max: int = Field(16 * 1024 * 1024, ge=1024)


class SimEngineConfig(_Frozen):
    kind: Literal["sim"]
    time_scale: float = Field(1.0, ge=0, description="1 = real time, 0 = instant")


class PriceConfig(_Frozen):
    """A model's price, in currency units per million tokens (``"0.20"``), exact as decimals."""

    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    input: int = Field(description="per million input tokens; stored as nano-units")
    output: int = 0
    cached_input: int | None = None  # a prompt token read from a cache; None: the input price
    cache_write_input: int | None = None  # one written to a cache; None: the input price
    request_fee: int = 0  # per request, in currency units

    @field_validator(
        "input", "output", "cached_input", "cache_write_input", "request_fee", mode="before"
    )
    @classmethod
    def _nano(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, float):
            value = repr(value)  # YAML read 0.57 as a float: its shortest text is what was typed
        try:
            return parse_amount(value, param="price")
        except InvalidRequest as exc:
            raise ValueError(exc.message) from exc


class OpenAIEngineConfig(_Frozen):
    kind: Literal["openai"]
    base_url: str = Field(pattern=r"^https?://")
    api_key_env: str | None = None
    timeout_s_connect: float | None = Field(None, gt=0)
    timeout_s_read: float | None = Field(None, gt=0)
    connections_max: int | None = Field(None, ge=1)
    # What the vendor charges the operator, per upstream model name (per million tokens).
    prices: dict[str, PriceConfig] = Field(default_factory=dict)


class AnthropicEngineConfig(_Frozen):
    """An Anthropic Messages API endpoint (``POST {base_url}/v1/messages``): chat only."""

    kind: Literal["anthropic"]
    base_url: str = Field("https://api.anthropic.com", pattern=r"^https?://")
    api_key_env: str | None = None
    anthropic_version: str = Field("2023-06-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
    timeout_s_connect: float | None = Field(None, gt=0)
    timeout_s_read: float | None = Field(None, gt=0)
    connections_max: int | None = Field(None, ge=1)
    # What the vendor charges the operator, per upstream model name (per million tokens).
    prices: dict[str, PriceConfig] = Field(default_factory=dict)


class MarkupConfig(_Frozen):
    """A resold model's price from its upstream's: cost x factor, or cost + a fixed amount."""

    factor: str | float | None = None  # "1.3": 30% above cost
    plus_input: int = 0  # per million input tokens, added to the cost
    plus_output: int = 0

    @field_validator("plus_input", "plus_output", mode="before")
    @classmethod
    def _nano(cls, value: Any) -> Any:
        return PriceConfig._nano(value)

    @field_validator("factor", mode="before")
    @classmethod
    def _factor(cls, value: Any) -> Any:
        if value is None:
            return None
        text = repr(value) if isinstance(value, float) else str(value)
        if not re.fullmatch(r"[0-9]+(\.[0-9]{1,6})?", text) or Decimal(text) < 1:
            raise ValueError("factor must be a decimal of at least 1 with at most 6 decimals")
        return text


EngineConfig = Annotated[
    SimEngineConfig | OpenAIEngineConfig | AnthropicEngineConfig, Field(discriminator="kind")
]


class DeploymentConfig(_Frozen):
    engine: str
    model: str = Field(description="sim: catalog model id; openai: the upstream's model name")
    gpu: str | None = None
    gpu_count: int = Field(1, ge=1, le=4096)
    precision: Literal["bf16", "fp16", "fp8", "fp4"] = "bf16"
    kv_precision: Literal["bf16", "fp16", "fp8", "fp4"] | None = None
    efficiency_compute_ratio: float = Field(0.5, gt=0, le=1)
    efficiency_memory_ratio: float = Field(0.7, gt=0, le=1)
    efficiency_moe_ratio: float = Field(0.4, gt=0, le=1)
    parallel: Literal["tp", "dep"] = "tp"  # dep: attention data parallel, experts spread
    batch_requests_max: int = Field(512, ge=1, le=1_000_000)  # the scheduler's cap
    embedding_dimensions: int | None = Field(None, ge=1, le=65536)
    concurrency_max: int | None = Field(None, ge=1)  # requests in flight here at most
    pool: str | None = None  # the own hardware it runs on (its gpu_count GPUs of the pool)
    catalog_model: str | None = None  # catalog model id, to model throughput (sim: model)
    measured_prefill_tokens_per_s: float | None = Field(None, gt=0)
    measured_output_tokens_per_s: float | None = Field(None, gt=0)


def _ratio_text(value: Any) -> Any:
    """A ratio as exact decimal text (YAML may have read 1.3 as a float: its shortest text)."""
    if value is None or isinstance(value, bool):
        return value
    text = repr(value) if isinstance(value, float) else str(value)
    if not re.fullmatch(r"[0-9]+(\.[0-9]{1,9})?", text):
        raise ValueError("must be a plain decimal number such as 1.3")
    return text


class PoolConfig(_Frozen):
    """Own hardware and what it costs: bought (purchase over depreciation) or rented, plus
    power, hosting and operations; amounts in currency units, as text (``"2.35"``)."""

    gpu: str = Field(description="catalog GPU id, e.g. h100-sxm")
    gpu_count: int = Field(ge=1, le=1_000_000)
    site: str = ""
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    purchase_per_gpu: int | None = None
    depreciation_years: str | None = None
    residual_ratio: str | None = None
    rent_per_gpu_hour: int | None = None
    power_w_per_gpu: int | None = Field(None, ge=1, le=100_000)  # None: the catalog's
    node_overhead_ratio: str = "0.3"  # CPUs, network and fans on top of the GPUs' power
    pue: str = "1.3"
    energy_per_kwh: int = 0
    utilization_power_ratio: str = "0.8"  # average draw over peak
    hosting_per_month: int = 0
    operations_per_month: int = 0
    utilization_ratio: str = "0.6"  # share of time serving: idle time is spread over tokens

    @field_validator(
        "purchase_per_gpu",
        "rent_per_gpu_hour",
        "energy_per_kwh",
        "hosting_per_month",
        "operations_per_month",
        mode="before",
    )
    @classmethod
    def _nano(cls, value: Any) -> Any:
        return PriceConfig._nano(value)

    @field_validator(
        "depreciation_years",
        "residual_ratio",
        "node_overhead_ratio",
        "pue",
        "utilization_power_ratio",
        "utilization_ratio",
        mode="before",
    )
    @classmethod
    def _ratio(cls, value: Any) -> Any:
        return _ratio_text(value)


class PromptAllowanceConfig(_Frozen):
    """Tokens the chat template may add to a prompt, for the hold's prompt bound."""

    template_tokens: int = Field(32, ge=0)
    tokens_per_message: int = Field(8, ge=0)
    tokens_per_tool: int = Field(16, ge=0)
    tokens_per_image: int = Field(4096, ge=0)


class ModelConfig(_Frozen):
    kind: Literal["chat", "embedding"] = "chat"
    deployments: list[str] = Field(min_length=1)
    context_tokens: int = Field(131072, ge=16)
    output_tokens_max: int = Field(8192, ge=1)
    description: str = ""
    price: PriceConfig | None = None  # seeded into the price book if the model has none there
    tier: str = Field("standard", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")  # for plans
    routing: Literal["own-first", "cheapest", "least-busy", "latency"] = "own-first"
    weights: dict[str, int] | None = None  # canary shares: deployment -> weight (>= 0)
    markup: MarkupConfig | None = None  # price from the upstream's price list (not with price)
    prompt_allowance: PromptAllowanceConfig = PromptAllowanceConfig()


class StoreConfig(_Frozen):
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"


class Config(_Frozen):
    engines: dict[str, EngineConfig]
    deployments: dict[str, DeploymentConfig]
    models: dict[str, ModelConfig]
    limits: Limits = Limits()
    store: StoreConfig = StoreConfig()
    pools: dict[str, PoolConfig] = Field(default_factory=dict)
    # Plans as written in billing/plans.py, seeded into the store if it has none of that name.
    plans: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def _check_markup(self, name: str, model: ModelConfig) -> None:
        if model.price is not None:
            raise ValueError(f"models.{name}: give a price or a markup, not both")
        if upstream_cost(self, model) is None:
            raise ValueError(
                f"models.{name}.markup: none of its deployments has an upstream price (engines."
                "<engine>.prices.<upstream model>)"
            )

    @model_validator(mode="after")
    def _plans_are_valid(self) -> Config:
        for name, spec in self.plans.items():
            try:
                plan_from_spec(name, spec)
            except InvalidRequest as exc:
                raise ValueError(f"plans.{name}: {exc.message}") from exc
        return self

    @model_validator(mode="after")
    def _references_resolve(self) -> Config:
        for name, deployment in self.deployments.items():
            if deployment.engine not in self.engines:
                raise ValueError(
                    f"deployments.{name}.engine: unknown engine '{deployment.engine}'"
                    f" (defined: {', '.join(sorted(self.engines))})"
                )
            engine = self.engines[deployment.engine]
            if engine.kind == "sim" and deployment.gpu is None:
                raise ValueError(f"deployments.{name}.gpu: a sim deployment needs a gpu")
            if deployment.pool is not None and deployment.pool not in self.pools:
                raise ValueError(
                    f"deployments.{name}.pool: unknown pool '{deployment.pool}'"
                    f" (defined: {', '.join(sorted(self.pools)) or 'none'})"
                )
        for name, model in self.models.items():
            for listed in model.deployments:
                if listed not in self.deployments:
                    raise ValueError(f"models.{name}.deployments: unknown deployment '{listed}'")
            if model.markup is not None:
                self._check_markup(name, model)
            for listed, weight in (model.weights or {}).items():
                if listed not in model.deployments or weight < 0:
                    raise ValueError(
                        f"models.{name}.weights.{listed}: a weight is a whole number >= 0 for"
                        " one of the model's deployments"
                    )
            if model.kind == "embedding":
                for used in model.deployments:
                    engine = self.engines[self.deployments[used].engine]
                    dims = self.deployments[used].embedding_dimensions
                    if engine.kind == "sim" and dims is None:
                        raise ValueError(
                            f"deployments.{used}.embedding_dimensions: a sim embedding"
                            " deployment needs embedding_dimensions"
                        )
        return self


def upstream_cost(config: Config, model: ModelConfig) -> PriceConfig | None:
    """The upstream price list entry of ``model``'s first deployment that has one."""
    for name in model.deployments:
        deployment = config.deployments[name]
        engine = config.engines[deployment.engine]
        if not isinstance(engine, OpenAIEngineConfig | AnthropicEngineConfig):
            continue  # a sim engine has no vendor price
        if deployment.model in engine.prices:
            return engine.prices[deployment.model]
    return None


def parse_config(data: Any, *, source: str = "configuration") -> Config:
    """Validate a parsed YAML document; raise ConfigurationError naming the bad field."""
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source}: expected a mapping at the top level")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        if len(loc) > 2 and loc[0] == "engines" and loc[2] in ("sim", "openai", "anthropic"):
            del loc[2]  # the discriminator's tag, not a field the user wrote
        path = ".".join(str(part) for part in loc)
        message = first["msg"].removeprefix("Value error, ")
        if path:
            message = f"{path}: {message}"
        raise ConfigurationError(f"{source}: {message}", param=path or None) from exc


def load_config(path: Path | None) -> Config:
    """The configuration in ``path``, or the built-in default when ``path`` is None."""
    if path is None:
        text = resources.files("tokenmill").joinpath("default_config.yaml").read_text("utf-8")
        source = "built-in default configuration"
    else:
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{source}: not valid YAML: {exc}") from exc
    return parse_config(data, source=source)


@dataclass(frozen=True)
class Settings:
    """Everything ``tokenmill serve`` (and the CLI) needs, resolved from flags and env."""

    home: Path
    database_url: str
    config: Config
    admin_token: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    environ: dict[str, str] = field(default_factory=dict)


def resolve_home(home: str | None, environ: dict[str, str]) -> Path:
    return Path(home or environ.get("TOKENMILL_HOME") or ".tokenmill").resolve()


def resolve_settings(
    *,
    home: str | None = None,
    config_path: str | None = None,
    database_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Flags first, then environment variables, then defaults."""
    env = dict(os.environ if environ is None else environ)
    home_path = resolve_home(home, env)
    url = database_url or env.get("TOKENMILL_DATABASE_URL") or _sqlite_url(home_path)
    config_file = config_path or env.get("TOKENMILL_CONFIG")
    return Settings(
        home=home_path,
        database_url=url,
        config=load_config(Path(config_file) if config_file else None),
        admin_token=env.get("TOKENMILL_ADMIN_TOKEN") or None,
        host=host,
        port=port,
        environ=env,
    )


def _sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'tokenmill.db'}"
