"""Settling one request, pure: what it produced -> its usage record and ledger transfers.

The request path measures (tokens, times, which deployment served it, how it ended); this
turns that into money in one place: the hold is settled for what was produced (nothing when
the client got no byte), the excess over the hold, should the upstream count more prompt
tokens than the bound, goes to the operator's loss, and the usage record carries the charge,
the loss, the included tokens and the cost of serving. No I/O: the funds book is memory;
the caller commits the record and the transfers together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tokenmill.retail.charging import Charge, close_charge
from tokenmill.retail.funds import FundsBook
from tokenmill.retail.ledger import Transfer, usage_transfers
from tokenmill.usage import TokenCounts, UsageRecord

Status = str  # ok | error | cancelled


@dataclass(frozen=True)
class Served:
    """What the request path measured of one request, however it ended."""

    request_id: str
    account_id: str
    key_id: str
    model: str
    deployment: str
    engine: str
    surface: str
    started_at_ms: int
    duration_ms: int
    ttft_ms: int | None
    counts: TokenCounts
    estimated: bool  # the counts are a local count: the engine reported none
    produced: bool  # the engine produced something and the client got it (or could have)


@dataclass(frozen=True)
class Ending:
    status: Status
    http_status: int
    error_type: str | None = None


class ServingCostOf(Protocol):
    """What serving a request's tokens cost the operator, and where that figure comes from
    (the fleet's ``ServingCost``)."""

    @property
    def basis(self) -> str: ...

    def cost_nano(self, counts: TokenCounts) -> int: ...


@dataclass(frozen=True)
class Settled:
    record: UsageRecord
    transfers: tuple[Transfer, ...]

    @property
    def lost(self) -> bool:
        return self.record.loss_nano > 0


def settle_request(
    funds: FundsBook,
    charge: Charge,
    served: Served,
    ending: Ending,
    cost: ServingCostOf | None,
) -> Settled:
    """Settle ``charge`` for what ``served`` produced; the record and its transfers."""
    counts = served.counts if served.produced else TokenCounts(0, 0)
    settlement = close_charge(funds, charge, counts if served.produced else None)
    cost_nano = cost.cost_nano(counts) if cost is not None and served.produced else 0
    record = UsageRecord(
        request_id=served.request_id,
        account_id=served.account_id,
        key_id=served.key_id,
        model=served.model,
        deployment=served.deployment,
        engine=served.engine,
        endpoint=served.surface,
        prompt_tokens=counts.prompt_tokens,
        completion_tokens=counts.completion_tokens,
        cached_tokens=counts.cached_tokens,
        cache_write_tokens=counts.cache_write_tokens,
        reasoning_tokens=counts.reasoning_tokens,
        estimated=served.estimated and served.produced,
        status=ending.status,
        http_status=ending.http_status,
        error_type=ending.error_type,
        started_at_ms=served.started_at_ms,
        ttft_ms=served.ttft_ms,
        duration_ms=served.duration_ms,
        charge_nano=settlement.charged_nano,
        loss_nano=settlement.loss_nano,
        included_tokens=settlement.included_tokens,
        cost_nano=cost_nano,
        cost_basis=cost.basis if cost is not None else None,
    )
    if not settlement.total_nano:
        return Settled(record, ())
    assert charge.price is not None  # only a priced request moves money
    transfers = usage_transfers(
        served.request_id,
        served.account_id,
        charge.price.currency,
        settlement,
        served.started_at_ms + served.duration_ms,
    )
    assert sum(transfer.amount_nano for transfer in transfers) == settlement.total_nano
    return Settled(record, transfers)
