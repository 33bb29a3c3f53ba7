"""What the request path works with, named and fixed once: built by the composition root
(``api.gateway``) and never changed, so the hot path reads its collaborators in one step
and every one of them is visible here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tokenmill.access.directory import KeyDirectory
from tokenmill.api.fleet_router import FleetRouter
from tokenmill.api.metrics import GatewayMetrics
from tokenmill.api.serving.request_ids import RequestIds
from tokenmill.api.serving.stored_responses import ResponseStore
from tokenmill.config import Limits, ModelConfig
from tokenmill.fleet.costs import ServingCost
from tokenmill.retail.charging import Charge
from tokenmill.retail.funds import FundsBook
from tokenmill.retail.plans import Plan
from tokenmill.retail.rate_limits import RateLimiter
from tokenmill.retail.rating import PriceBook, PromptAllowance
from tokenmill.store.group_commit import GroupCommitWriter
from tokenmill.usage import UsageRecord


@dataclass(frozen=True)
class Collaborators:
    limits: Limits
    models: Mapping[str, ModelConfig]
    allowances: Mapping[str, PromptAllowance]
    directory: KeyDirectory  # keys by hash, kept current by the change follower
    funds: FundsBook  # balances and holds, kept current by the money follower
    prices: PriceBook
    plans: Mapping[str, Plan]
    rate_limiter: RateLimiter
    router: FleetRouter
    writer: GroupCommitWriter  # commits usage records with their transfers
    metrics: GatewayMetrics
    serving_costs: Mapping[str, ServingCost]  # by deployment
    request_ids: RequestIds
    report_loss: Callable[[UsageRecord, Charge], None]
    responses: ResponseStore  # stored responses (OpenAI Responses' store)
