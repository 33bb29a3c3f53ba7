"""Every reference catalog in one place: GPUs, models, market token prices and site
defaults, packaged (``economics/catalogs/*.yaml``) and extended by a user's own YAML file.

A user file may hold any of four sections, each shaped like its packaged file::

    gpus:            {my-gpu: {name: ..., flops_bf16_per_s: ..., source: ..., as_of: ...}}
    models:          {my-model: {...}}
    market_prices:   [{model: ..., input_usd_per_mtok: "0.20", ..., source: ..., date: ...}]
    site_defaults:   {energy_usd_per_kwh: {value: "0.05", unit: USD/kWh, source: ..., as_of: ...}}

Entries with a packaged id replace it; market prices add to the packaged list. Every entry
is validated as strictly as the packaged ones (``ConfigurationError`` naming the field).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import re
from dataclasses import dataclass
from decimal import Decimal

from tokenmill.economics import catalog
from tokenmill.economics.catalog import Gpu, ModelSpec
from tokenmill.errors import ConfigurationError, InvalidRequest, NotFound

MARKET_PRICES_FILE = "market_prices.yaml"
SITE_DEFAULTS_FILE = "site_defaults.yaml"
_DECIMAL_TEXT = re.compile(r"[0-9]{1,15}(\.[0-9]{1,9})?")
_SECTIONS = ("gpus", "models", "market_prices", "site_defaults")
# Where a known site default must lie: (least, most, whether the least is excluded).
_DEFAULT_BOUNDS = {
    "pue": (Decimal(1), Decimal(5), False),
    "mining_pue": (Decimal(1), Decimal(5), False),
    "node_overhead_ratio": (Decimal(0), Decimal(10), False),
    "utilization_power_ratio": (Decimal(0), Decimal(1), True),
    "utilization_ratio": (Decimal(0), Decimal(1), True),
    "residual_ratio": (Decimal(0), Decimal(1), False),
    "cluster_servers_share": (Decimal(0), Decimal(1), True),
    "cluster_network_share": (Decimal(0), Decimal(1), False),
    "cluster_storage_share": (Decimal(0), Decimal(1), False),
    "build_power_cooling_share": (Decimal(0), Decimal(1), False),
    "depreciation_years": (Decimal(0), Decimal(100), True),
    "facility_depreciation_years": (Decimal(0), Decimal(100), True),
    "miner_j_per_th": (Decimal(0), Decimal(10_000), True),
}


@dataclass(frozen=True)
class MarketPrice:
    """What one provider charged for a model's tokens, US dollars per million, on a date."""

    model: str
    provider: str
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    date: str
    source: str
    catalog_model: str | None = None  # the models.yaml id, for open-weight models


@dataclass(frozen=True)
class SiteDefault:
    """One default figure for sites and capital, with its unit and source."""

    name: str
    value: Decimal
    unit: str
    source: str
    as_of: str


def _text(raw: dict[object, object], field: str, where: str) -> str:
    value = raw.get(field)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}: '{field}' must be a non-empty string", param=field)
    return value.strip()


def _decimal(raw: dict[object, object], field: str, where: str) -> Decimal:
    value = raw.get(field)
    if not isinstance(value, str) or not _DECIMAL_TEXT.fullmatch(value.strip()):
        message = f"{where}: '{field}' must be decimal text like \"0.23\", got {value!r}"
        raise ConfigurationError(message, param=field)
    return Decimal(value.strip())


def _date(raw: dict[object, object], field: str, where: str) -> str:
    value = raw.get(field)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    message = f"{where}: '{field}' must be an ISO date like '2026-11-25', got {value!r}"
    raise ConfigurationError(message, param=field)


def _reject_unknown(raw: dict[object, object], known: set[str], where: str) -> None:
    for field in raw:
        if field not in known:
            raise ConfigurationError(f"{where}: '{field}' is not a known field", param=str(field))


def parse_market_prices(document: object, file_name: str) -> list[MarketPrice]:
    """The market prices of a parsed YAML list; raises ``ConfigurationError`` on a bad one."""
    if not isinstance(document, list):
        raise ConfigurationError(f"{file_name} must be a list of prices")
    known = {field.name for field in dataclasses.fields(MarketPrice)}
    prices = []
    for index, raw in enumerate(document):
        where = f"{file_name} price {index}"
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{where} must be a mapping")
        _reject_unknown(raw, known, where)
        linked = raw.get("catalog_model")
        prices.append(
            MarketPrice(
                model=_text(raw, "model", where),
                provider=_text(raw, "provider", where),
                input_usd_per_mtok=_decimal(raw, "input_usd_per_mtok", where),
                output_usd_per_mtok=_decimal(raw, "output_usd_per_mtok", where),
                date=_date(raw, "date", where),
                source=_text(raw, "source", where),
                catalog_model=None if linked is None else _text(raw, "catalog_model", where),
            )
        )
    return prices


def parse_site_defaults(document: object, file_name: str) -> dict[str, SiteDefault]:
    """The site defaults of a parsed YAML mapping; raises ``ConfigurationError`` on a bad one."""
    if not isinstance(document, dict):
        raise ConfigurationError(f"{file_name} must map names to defaults")
    known = {"value", "unit", "source", "as_of"}
    defaults = {}
    for name, raw in document.items():
        where = f"{file_name} default '{name}'"
        if not isinstance(name, str) or not isinstance(raw, dict):
            raise ConfigurationError(f"{where} must be a mapping under a string name")
        _reject_unknown(raw, known, where)
        defaults[name] = SiteDefault(
            name=name,
            value=_decimal(raw, "value", where),
            unit=_text(raw, "unit", where),
            source=_text(raw, "source", where),
            as_of=_date(raw, "as_of", where),
        )
        _check_bounds(name, defaults[name].value, where)
    return defaults


def _check_bounds(name: str, value: Decimal, where: str) -> None:
    if name not in _DEFAULT_BOUNDS:
        return
    least, most, open_below = _DEFAULT_BOUNDS[name]
    too_low = value <= least if open_below else value < least
    if too_low or value > most:
        below = "(" if open_below else "["
        message = f"{where}: 'value' must be in {below}{least}, {most}], got {value}"
        raise ConfigurationError(message, param="value")


@dataclass(frozen=True)
class Catalogs:
    """The four reference catalogs, looked up by id."""

    gpus: dict[str, Gpu]
    models: dict[str, ModelSpec]
    market_prices: list[MarketPrice]
    site_defaults: dict[str, SiteDefault]

    def gpu(self, gpu_id: str) -> Gpu:
        """A GPU by id or short alias (``h200``); ``NotFound`` (param ``gpu``) if unknown."""
        gpu_id = catalog.GPU_ALIASES.get(gpu_id, gpu_id)
        if gpu_id not in self.gpus:
            known = ", ".join(sorted(self.gpus))
            raise NotFound(f"unknown GPU '{gpu_id}'; known: {known}", param="gpu")
        return self.gpus[gpu_id]

    def model(self, model_id: str) -> ModelSpec:
        """A model by id; ``NotFound`` (param ``model``) if unknown."""
        if model_id not in self.models:
            known = ", ".join(sorted(self.models))
            raise NotFound(f"unknown model '{model_id}'; known: {known}", param="model")
        return self.models[model_id]

    def default(self, name: str) -> Decimal:
        """A site default's value; a missing one is a bug in the packaged file."""
        return self.site_defaults[name].value

    def prices_of(self, model_id: str) -> list[MarketPrice]:
        """Market prices of this catalog model, oldest first."""
        linked = [price for price in self.market_prices if price.catalog_model == model_id]
        return sorted(linked, key=lambda price: price.date)

    def network_storage_ratio(self) -> Decimal:
        """A cluster's network and storage capex over its GPU servers' (0.15 / 0.85)."""
        network = self.default("cluster_network_share") + self.default("cluster_storage_share")
        return network / self.default("cluster_servers_share")

    def token_prices(
        self, model_id: str, given_in: Decimal | None, given_out: Decimal | None
    ) -> tuple[Decimal, Decimal, str]:
        """(input, output) USD per million tokens and where they came from: each side as
        given, the other from the market's lowest output price for the model; with no
        market price, a given output price alone leaves prompts free."""
        if given_in is not None and given_out is not None:
            return given_in, given_out, "given"
        prices = self.prices_of(model_id)
        if not prices:
            if given_out is not None:
                return Decimal(0), given_out, "given (prompts free: no market price)"
            message = f"the catalog has no market price for {model_id}; give the token prices"
            raise InvalidRequest(message, param="price_output_usd_per_mtok")
        cheapest = min(prices, key=lambda price: (price.output_usd_per_mtok, price.date))
        source = f"{cheapest.provider} {cheapest.model}, {cheapest.date}"
        if given_in is not None or given_out is not None:
            source = f"given, the rest from {source}"
        price_in = cheapest.input_usd_per_mtok if given_in is None else given_in
        price_out = cheapest.output_usd_per_mtok if given_out is None else given_out
        return price_in, price_out, source

    def extended(self, document: object, file_name: str) -> Catalogs:
        """These catalogs with a user file's sections added (see the module docstring)."""
        if not isinstance(document, dict):
            raise ConfigurationError(f"{file_name} must be a mapping of sections")
        for section in document:
            if section not in _SECTIONS:
                known = ", ".join(_SECTIONS)
                message = f"{file_name}: unknown section {section!r}; known: {known}"
                raise ConfigurationError(message, param=str(section))
        gpus = dict(self.gpus)
        models = dict(self.models)
        prices = list(self.market_prices)
        defaults = dict(self.site_defaults)
        if "gpus" in document:
            gpus.update(catalog.parse_gpus(document["gpus"], f"{file_name} gpus"))
        if "models" in document:
            models.update(catalog.parse_models(document["models"], f"{file_name} models"))
        if "market_prices" in document:
            prices += parse_market_prices(document["market_prices"], f"{file_name} market_prices")
        if "site_defaults" in document:
            extra = parse_site_defaults(document["site_defaults"], f"{file_name} site_defaults")
            defaults.update(extra)
        result = Catalogs(gpus, models, prices, defaults)
        result.check_links()
        return result

    def check_links(self) -> None:
        """Every market price's ``catalog_model`` names a model of the catalog."""
        for price in self.market_prices:
            if price.catalog_model is not None and price.catalog_model not in self.models:
                message = f"market price of {price.model}: unknown catalog_model"
                message += f" '{price.catalog_model}'"
                raise ConfigurationError(message, param="catalog_model")


@functools.cache
def packaged() -> Catalogs:
    """The catalogs shipped in the package (read once)."""
    result = Catalogs(
        gpus=catalog.load_gpus(),
        models=catalog.load_models(),
        market_prices=parse_market_prices(
            catalog.read_packaged(MARKET_PRICES_FILE), MARKET_PRICES_FILE
        ),
        site_defaults=parse_site_defaults(
            catalog.read_packaged(SITE_DEFAULTS_FILE), SITE_DEFAULTS_FILE
        ),
    )
    result.check_links()
    return result
