"""The schema, as SQLAlchemy Core tables. Alembic migrations under ``migrations/`` create it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# Integer primary keys autoincrement on SQLite only as INTEGER; BigInteger elsewhere.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")

meta = Table(
    "meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # active | disabled
    Column("created_at_ms", BigInteger, nullable=False),
    Column("disabled_at_ms", BigInteger),
    Column("currency", String(8), nullable=False, server_default="USD"),
    Column("credit_limit_nano", BigInteger, nullable=False, server_default="0"),  # 0: prepaid
    Column("daily_budget_nano", BigInteger),  # spend budgets; NULL: none
    Column("monthly_budget_nano", BigInteger),
    Column("plan", String(64)),  # NULL: pay as you go
    Column("plan_since_ms", BigInteger),  # when it subscribed to ``plan``
    Column("rate_limits", Text),  # JSON {"*" | model: limits}; NULL: none
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(16), nullable=False),
    Column("models", Text),  # JSON list of allowed model ids; NULL = every model
    Column("created_at_ms", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger),
    Column("revoked_at_ms", BigInteger),
    Column("daily_budget_nano", BigInteger),  # spend budgets; NULL: none
    Column("monthly_budget_nano", BigInteger),
    Column("rate_limits", Text),  # JSON {"*" | model: limits}; NULL: none
    Index("ix_api_keys_account", "account_id"),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at_ms", BigInteger, nullable=False),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("model", String(200), nullable=False),
    Column("deployment", String(200), nullable=False),
    Column("engine", String(200), nullable=False),
    Column("endpoint", String(32), nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("status", String(16), nullable=False),  # ok | error | cancelled
    Column("http_status", Integer, nullable=False),
    Column("error_type", String(64)),
    Column("started_at_ms", BigInteger, nullable=False),
    Column("ttft_ms", Integer),
    Column("duration_ms", Integer, nullable=False),
    Column("charge_nano", BigInteger, nullable=False, server_default="0"),
    Column("loss_nano", BigInteger, nullable=False, server_default="0"),
    Column("included_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cost_nano", BigInteger, nullable=False, server_default="0"),  # to the operator
    Column("cost_basis", String(16)),  # vendor | modeled | measured; NULL: unknown
    # of prompt_tokens (beside cached_tokens, the cache reads); of completion_tokens
    Column("cache_write_tokens", BigInteger, nullable=False, server_default="0"),
    Column("reasoning_tokens", BigInteger, nullable=False, server_default="0"),
    Index("ix_usage_account_started", "account_id", "started_at_ms"),
    Index("ix_usage_key_started", "key_id", "started_at_ms"),
    Index("ix_usage_model_started", "model", "started_at_ms"),
    Index("ix_usage_started", "started_at_ms"),
)

# The change sequence: every change to accounts or keys made outside the hot path appends a
# row; a running gateway follows it to refresh its in-memory state within a second.
changes = Table(
    "changes",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("entity", String(16), nullable=False),  # account | key | transfer | price
    Column("entity_id", String(200), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
)

# The ledger: append-only transfers (id = idempotency key) and each ledger account's
# balance (credits - debits), cached in the transaction that adds its transfers.
transfers = Table(
    "transfers",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("debit_account", String(64), nullable=False),
    Column("credit_account", String(64), nullable=False),
    Column("amount_nano", BigInteger, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("reference", String(200)),
    Column("created_at_ms", BigInteger, nullable=False),
    CheckConstraint("amount_nano > 0", name="ck_transfers_amount_positive"),
    CheckConstraint("debit_account <> credit_account", name="ck_transfers_two_accounts"),
    Index("ix_transfers_debit", "debit_account", "created_at_ms"),
    Index("ix_transfers_credit", "credit_account", "created_at_ms"),
)

ledger_balances = Table(
    "ledger_balances",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("currency", String(8), nullable=False),
    # balance = high * 10**18 + low, 0 <= low < 10**18: past 64 bits (store/wide_sums.py)
    Column("balance_nano_high", BigInteger, nullable=False, server_default="0"),
    Column("balance_nano_low", BigInteger, nullable=False, server_default="0"),
    Column("updated_at_ms", BigInteger, nullable=False),
    CheckConstraint(
        "balance_nano_low >= 0 AND balance_nano_low < 1000000000000000000",
        name="ck_ledger_balances_low_part",
    ),
)

# The fencing token of the one gateway that owns the database (store/ownership.py): each new
# owner adds one to ``epoch``; a group commit whose epoch is not this one's fails.
gateway_owner = Table(
    "gateway_owner",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("holder", String(200), nullable=False),
    Column("taken_at_ms", BigInteger, nullable=False),
)

prices = Table(
    "prices",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("currency", String(8), primary_key=True),
    Column("effective_from_ms", BigInteger, primary_key=True),
    Column("input_nano_per_mtok", BigInteger, nullable=False),
    Column("output_nano_per_mtok", BigInteger, nullable=False),
    Column("cached_input_nano_per_mtok", BigInteger, nullable=False),  # a cache read
    Column("request_fee_nano", BigInteger, nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("cache_write_input_nano_per_mtok", BigInteger, nullable=False),
)

# Every admin action: who (admin token id, or "cli"), what, when, before and after (JSON).
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("entity", String(32), nullable=False),
    Column("entity_id", String(200), nullable=False),
    Column("before", Text),
    Column("after", Text),
    Index("ix_audit_entity", "entity", "entity_id"),
)

plans = Table(
    "plans",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("spec", Text, nullable=False),  # JSON, as written (billing/plans.py)
    Column("created_at_ms", BigInteger, nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
)

# Invoices of postpaid accounts, numbered without gaps, never changed once issued (their lines
# are JSON); corrections are credit notes, each with its refund transfer.
invoices = Table(
    "invoices",
    metadata,
    Column("number", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("account_id", String(40), nullable=False),
    Column("period", String(7), nullable=False),  # YYYY-MM, UTC
    Column("currency", String(8), nullable=False),
    Column("since_ms", BigInteger, nullable=False),
    Column("until_ms", BigInteger, nullable=False),
    # total = high * 10**18 + low, as a cached balance is kept (store/wide_sums.py)
    Column("total_nano_high", BigInteger, nullable=False, server_default="0"),
    Column("total_nano_low", BigInteger, nullable=False),
    Column("lines", Text, nullable=False),
    Column("issued_at_ms", BigInteger, nullable=False),
    UniqueConstraint("account_id", "period", name="uq_invoices_account_period"),
)

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("number", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("invoice_number", String(32), nullable=False),
    Column("amount_nano", BigInteger, nullable=False),
    Column("reason", String(500), nullable=False),
    Column("transfer_id", String(200), nullable=False),
    Column("issued_at_ms", BigInteger, nullable=False),
    CheckConstraint("amount_nano > 0", name="ck_credit_notes_amount_positive"),
    Index("ix_credit_notes_invoice", "invoice_number"),
)

# OpenAI Responses stored for ``previous_response_id`` and GET /v1/responses/{id}: each
# belongs to one account, expires, and keeps its own input and output items (a chain is
# walked back through ``previous_response_id``, so nothing is copied from turn to turn).
stored_responses = Table(
    "stored_responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("previous_response_id", String(64)),
    Column("model", String(200), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False),
    Column("input_items", Text, nullable=False),  # JSON array, this request's own input
    Column("response", Text, nullable=False),  # JSON: the response object, its output in it
    Index("ix_stored_responses_account_created", "account_id", "created_at_ms"),
    Index("ix_stored_responses_expires", "expires_at_ms"),
)
