"""Wire models of the money routes of the admin API, and their conversions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

from tokenmill.api.gateway import Gateway
from tokenmill.billing import service as billing
from tokenmill.instants import ms_of
from tokenmill.money import format_amount, parse_amount
from tokenmill.retail.ledger import Transfer
from tokenmill.retail.rating import Price
from tokenmill.store.database import now_ms


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The patterns the services enforce (money.parse_amount, billing.service), declared in the
# OpenAPI spec; the services check them (with their own messages), pydantic does not.
SIGNED_AMOUNT: JsonDict = {"pattern": r"^-?[0-9]+(\.[0-9]{1,9})?$"}
AMOUNT: JsonDict = {"pattern": r"^[0-9]+(\.[0-9]{1,9})?$"}
CURRENCY: JsonDict = {"pattern": billing.CURRENCY.pattern}
IDEMPOTENCY_KEY: JsonDict = {"pattern": billing.IDEMPOTENCY_KEY.pattern}
PERIOD: JsonDict = {"pattern": r"^[0-9]{4}-(0[1-9]|1[0-2])$"}


class MovementIn(_Strict):
    amount: str = Field(
        description="currency units as text, e.g. '12.50'; negative only for an adjustment",
        json_schema_extra=SIGNED_AMOUNT,
    )
    kind: Literal["topup", "grant", "refund", "adjustment"] = "topup"
    idempotency_key: str | None = Field(
        None,
        description="the same key again applies once; also the Idempotency-Key header",
        json_schema_extra=IDEMPOTENCY_KEY,
    )
    reference: str | None = Field(None, max_length=200)


class TransferOut(BaseModel):
    id: str
    debit_account: str
    credit_account: str
    amount: str
    amount_nano: int
    currency: str
    kind: str
    reference: str | None
    created_at: datetime


class BalanceOut(BaseModel):
    account_id: str
    currency: str
    balance: str
    balance_nano: int
    held_nano: int
    available_nano: int = Field(description="what new requests can spend: balance - held + credit")
    credit_limit_nano: int
    holds_count: int


class TermsIn(_Strict):
    currency: str | None = Field(None, json_schema_extra=CURRENCY)
    credit_limit: str | None = Field(
        None, description="postpaid credit limit; '0' for prepaid", json_schema_extra=AMOUNT
    )


class SubscribeIn(_Strict):
    plan: str | None = Field(description="plan name; null: pay as you go")


class CloseIn(_Strict):
    period: str | None = Field(
        None, description="YYYY-MM (UTC); default: the previous month", json_schema_extra=PERIOD
    )


class CreditIn(_Strict):
    amount: str = Field(json_schema_extra=AMOUNT)
    reason: str = Field(min_length=1, max_length=500)


class BudgetIn(_Strict):
    daily: str | None = Field(
        None, description="per UTC day, e.g. '5.00'; omit or null: none", json_schema_extra=AMOUNT
    )
    monthly: str | None = Field(
        None, description="per UTC month; omit or null: none", json_schema_extra=AMOUNT
    )


class PriceIn(_Strict):
    model: str
    currency: str = Field("USD", json_schema_extra=CURRENCY)
    input: str = Field(
        description="per million input tokens, e.g. '0.20'", json_schema_extra=AMOUNT
    )
    output: str = Field("0", description="per million output tokens", json_schema_extra=AMOUNT)
    cached_input: str | None = Field(
        None,
        description="per million input tokens read from a prompt cache; omit: the input price",
        json_schema_extra=AMOUNT,
    )
    cache_write_input: str | None = Field(
        None,
        description="per million input tokens written to a prompt cache; omit: the input price",
        json_schema_extra=AMOUNT,
    )
    request_fee: str = Field("0", json_schema_extra=AMOUNT)
    effective_from: datetime | None = Field(None, description="ISO 8601; omit for now")


class PriceOut(BaseModel):
    model: str
    currency: str
    effective_from: datetime
    input: str
    output: str
    cached_input: str
    cache_write_input: str
    request_fee: str
    input_nano_per_mtok: int
    output_nano_per_mtok: int
    cached_input_nano_per_mtok: int
    cache_write_input_nano_per_mtok: int
    request_fee_nano: int


def utc_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def transfer_out(transfer: Transfer) -> TransferOut:
    return TransferOut(
        id=transfer.id,
        debit_account=transfer.debit_account,
        credit_account=transfer.credit_account,
        amount=format_amount(transfer.amount_nano),
        amount_nano=transfer.amount_nano,
        currency=transfer.currency,
        kind=transfer.kind,
        reference=transfer.reference,
        created_at=utc_time(transfer.created_at_ms),
    )


def price_out(price: Price) -> PriceOut:
    return PriceOut(
        model=price.model,
        currency=price.currency,
        effective_from=utc_time(price.effective_from_ms),
        input=format_amount(price.input_nano_per_mtok),
        output=format_amount(price.output_nano_per_mtok),
        cached_input=format_amount(price.cached_input_nano_per_mtok),
        cache_write_input=format_amount(price.cache_write_input_nano_per_mtok),
        request_fee=format_amount(price.request_fee_nano),
        input_nano_per_mtok=price.input_nano_per_mtok,
        output_nano_per_mtok=price.output_nano_per_mtok,
        cached_input_nano_per_mtok=price.cached_input_nano_per_mtok,
        cache_write_input_nano_per_mtok=price.cache_write_input_nano_per_mtok,
        request_fee_nano=price.request_fee_nano,
    )


def balance_out(gateway: Gateway, account_id: str) -> BalanceOut:
    funds = gateway.money.funds.funds(account_id)
    if funds is None:  # made a moment ago; the follower has not seen it yet
        return BalanceOut(
            account_id=account_id,
            currency="USD",
            balance="0.00",
            balance_nano=0,
            held_nano=0,
            available_nano=0,
            credit_limit_nano=0,
            holds_count=0,
        )
    return BalanceOut(
        account_id=account_id,
        currency=funds.currency,
        balance=format_amount(funds.balance_nano),
        balance_nano=funds.balance_nano,
        held_nano=funds.held_nano,
        available_nano=funds.available_nano,
        credit_limit_nano=-funds.floor_nano,
        holds_count=funds.holds_count,
    )


def price_from(body: PriceIn) -> Price:
    effective = now_ms()
    if body.effective_from is not None:
        value = body.effective_from
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        effective = ms_of(value)
    input_nano = parse_amount(body.input, param="input")
    return Price(
        model=body.model,
        currency=body.currency,
        effective_from_ms=effective,
        input_nano_per_mtok=input_nano,
        output_nano_per_mtok=parse_amount(body.output, param="output"),
        cached_input_nano_per_mtok=(
            input_nano
            if body.cached_input is None
            else parse_amount(body.cached_input, param="cached_input")
        ),
        cache_write_input_nano_per_mtok=(
            input_nano
            if body.cache_write_input is None
            else parse_amount(body.cache_write_input, param="cache_write_input")
        ),
        request_fee_nano=parse_amount(body.request_fee, param="request_fee"),
    )
