"""Closing a period: plan fees, then invoices for postpaid accounts; credit notes after.

``close_period`` is idempotent: each fee is a transfer whose id names the account and the
period, and each invoice is unique per account and period, so running it again (a scheduler
retrying, an operator unsure) books and issues nothing twice and answers the same.

A plan's fee for a period is booked when the period closes, dated the period's last
millisecond, so it belongs to that period's statement and invoice. An account that cannot
pay all of it (its available funds, held amounts aside, fall short) pays what it can; the
rest is booked to the operator's ``loss`` account, reported, and the subscription lapses:
no balance goes below its floor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError

from tokenmill.access.service import check_ref, find_account
from tokenmill.errors import InvalidRequest, NotFound, Unprocessable
from tokenmill.money import format_amount
from tokenmill.retail.invoices import Invoice, InvoiceLine, period_bounds
from tokenmill.retail.ledger import Transfer, operator_account
from tokenmill.retail.plan_specs import plan_from_spec
from tokenmill.retail.plans import Plan
from tokenmill.store import accounts as account_rows
from tokenmill.store import invoices as invoice_rows
from tokenmill.store import ledger as ledger_rows
from tokenmill.store import plans as plan_rows
from tokenmill.store.audit import record_action
from tokenmill.store.database import now_ms, write_transaction
from tokenmill.store.tables import credit_notes, invoices, transfers, usage_records
from tokenmill.store.usage import TokenSums, token_sums
from tokenmill.store.wide_sums import joined_sum, wide_sum

Spendable = Callable[[account_rows.AccountRow], int]
# A request is charged when it settles, dated then; one that started before a period's end
# and settles after it belongs to the next period. Closing waits this long past the end so
# every usage dated inside the period is committed before its invoice is made.
CLOSE_GRACE_MS = 5 * 60_000


@dataclass
class CloseReport:
    period: str
    fees: list[dict[str, object]] = field(default_factory=list)
    lapsed: list[str] = field(default_factory=list)
    invoices_issued: list[str] = field(default_factory=list)
    invoices_existing: list[str] = field(default_factory=list)


def fee_transfer_ids(account_id: str, period: str) -> tuple[str, str]:
    return f"plan_fee:{account_id}:{period}", f"plan_fee_loss:{account_id}:{period}"


def store_spendable(engine: Engine) -> Spendable:
    """Available funds as the store has them (when no gateway holds anything)."""

    def spendable(account: account_rows.AccountRow) -> int:
        with engine.connect() as connection:
            balance = ledger_rows.cached_balance(connection, account.id)
        return balance + account.credit_limit_nano

    return spendable


def plans_of(engine: Engine) -> dict[str, Plan]:
    with engine.connect() as connection:
        specs = plan_rows.plan_specs(connection)
    return {name: plan_from_spec(name, spec) for name, spec in specs.items()}


def fees_due(engine: Engine, period: str) -> list[tuple[account_rows.AccountRow, int]]:
    """(account, fee) of every subscribed account whose fee for ``period`` is not booked."""
    plans = plans_of(engine)
    _, until = period_bounds(period)
    due = []
    with engine.connect() as connection:
        for account in account_rows.all_accounts(connection):
            plan = plans.get(account.plan) if account.plan else None
            if plan is None or not plan.monthly_fee_nano:
                continue
            if account.plan_since_ms is None or account.plan_since_ms >= until:
                continue  # subscribed after the period: nothing due for it
            ids = fee_transfer_ids(account.id, period)
            if not ledger_rows.transfers_by_ids(connection, list(ids)):
                due.append((account, plan.monthly_fee_nano))
    return due


def close_period(
    engine: Engine, period: str, *, actor: str, spendable: Spendable, now: int | None = None
) -> CloseReport:
    _, until = period_bounds(period)
    if until + CLOSE_GRACE_MS > (now_ms() if now is None else now):
        raise InvalidRequest(
            f"the period {period} can be closed from {CLOSE_GRACE_MS // 60_000} minutes"
            " after its end (requests that started before it may still be settling)",
            param="period",
        )
    report = CloseReport(period)
    for account, fee in fees_due(engine, period):
        _book_fee(engine, account, fee, period, until, spendable(account), actor, report)
    with engine.connect() as connection:
        postpaid = [a for a in account_rows.all_accounts(connection) if a.credit_limit_nano > 0]
    for account in postpaid:
        invoice, issued = issue_invoice(engine, account, period)
        if invoice is not None:
            (report.invoices_issued if issued else report.invoices_existing).append(invoice.number)
    return report


def _book_fee(
    engine: Engine,
    account: account_rows.AccountRow,
    fee: int,
    period: str,
    until: int,
    spendable: int,
    actor: str,
    report: CloseReport,
) -> None:
    paid = min(fee, max(0, spendable))
    short = fee - paid
    fee_id, loss_id = fee_transfer_ids(account.id, period)
    revenue = operator_account("revenue", account.currency)
    booked_at = until - 1  # as of the period's last millisecond
    moves = []
    if paid:
        moves.append(
            Transfer(
                fee_id, account.id, revenue, paid, account.currency, "plan_fee", period, booked_at
            )
        )
    if short:
        loss = operator_account("loss", account.currency)
        moves.append(
            Transfer(loss_id, loss, revenue, short, account.currency, "plan_fee", period, booked_at)
        )
    try:
        booked = _post_fee(engine, account, moves, period, paid, short, actor, report)
    except IntegrityError:
        booked = False  # another close booked it between our check and our insert
    if not booked:
        return
    report.fees.append(
        {"account_id": account.id, "plan": account.plan, "paid_nano": paid, "loss_nano": short}
    )


def _post_fee(
    engine: Engine,
    account: account_rows.AccountRow,
    moves: list[Transfer],
    period: str,
    paid: int,
    short: int,
    actor: str,
    report: CloseReport,
) -> bool:
    """Book the fee's transfers; False if they were booked meanwhile."""
    with write_transaction(engine) as connection:
        if ledger_rows.transfers_by_ids(connection, [move.id for move in moves]):
            return False
        ledger_rows.post_transfers(connection, moves, now_ms())
        record_action(
            connection,
            actor=actor,
            action="plan_fee",
            entity="account",
            entity_id=account.id,
            before=None,
            after={"period": period, "plan": account.plan, "paid_nano": paid, "loss_nano": short},
            now_ms=now_ms(),
        )
        if short:
            account_rows.set_account_plan(connection, account.id, None, now_ms())
            report.lapsed.append(account.id)
    return True


def invoice_lines(
    connection: Connection, account_id: str, since: int, until: int
) -> list[InvoiceLine]:
    in_period = (transfers.c.created_at_ms >= since) & (transfers.c.created_at_ms < until)
    usage = (
        select(
            usage_records.c.model,
            func.count(),
            *token_sums(),
            *wide_sum(transfers.c.amount_nano),
        )
        .select_from(
            transfers.join(usage_records, usage_records.c.request_id == transfers.c.reference)
        )
        .where(transfers.c.debit_account == account_id, transfers.c.kind == "usage", in_period)
        .group_by(usage_records.c.model)
        .order_by(usage_records.c.model)
    )
    lines = [
        _usage_line(model, int(n), TokenSums.of(sums), joined_sum(high, low))
        for model, n, *sums, high, low in connection.execute(usage)
    ]
    fees = (
        select(transfers.c.reference, transfers.c.amount_nano)
        .where(transfers.c.debit_account == account_id, transfers.c.kind == "plan_fee", in_period)
        .order_by(transfers.c.created_at_ms, transfers.c.id)
    )
    lines += [
        InvoiceLine("plan_fee", f"plan fee {reference}", None, 0, 0, int(amount))
        for reference, amount in connection.execute(fees)
    ]
    return lines


def _usage_line(model: str, count: int, tokens: TokenSums, amount_nano: int) -> InvoiceLine:
    total = tokens.prompt_tokens + tokens.completion_tokens
    return InvoiceLine(
        "usage",
        f"{model}: {total:,} tokens",
        model,
        count,
        total,
        amount_nano,
        tokens.cached_tokens,
        tokens.cache_write_tokens,
        tokens.reasoning_tokens,
    )


def issue_invoice(
    engine: Engine, account: account_rows.AccountRow, period: str
) -> tuple[Invoice | None, bool]:
    """(the account's invoice for ``period``, whether it was issued now); None when the
    account was charged nothing in it. Issued once: the same call again returns it."""
    since, until = period_bounds(period)
    for attempt in range(2):
        try:
            with write_transaction(engine) as connection:
                existing = invoice_rows.invoice_of(connection, account.id, period)
                if existing is not None:
                    return existing, False
                lines = invoice_lines(connection, account.id, since, until)
                if not lines:
                    return None, False
                seq = invoice_rows.next_seq(connection, invoices)
                invoice = Invoice(
                    f"INV-{seq:06d}",
                    account.id,
                    account.currency,
                    period,
                    since,
                    until,
                    tuple(lines),
                    sum(line.amount_nano for line in lines),
                    now_ms(),
                )
                assert invoice.total_nano == invoice.lines_nano
                assert (since, until) == period_bounds(invoice.period)
                invoice_rows.insert_invoice(connection, invoice, seq)
            return invoice, True
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def find_invoice(engine: Engine, number: str) -> tuple[Invoice, int]:
    """(invoice, credited so far)."""
    check_ref(number, "invoice")
    with engine.connect() as connection:
        invoice = invoice_rows.invoice_by_number(connection, number)
        if invoice is None:
            raise NotFound(f"no invoice '{number[:40]}'", param="invoice")
        return invoice, invoice_rows.credited_nano(connection, number)


def credit_note(
    engine: Engine, number: str, amount_nano: int, reason: str, *, actor: str
) -> tuple[str, Transfer]:
    """Credit ``amount_nano`` against invoice ``number``: a credit note and its refund."""
    if amount_nano <= 0:
        raise InvalidRequest("a credit note's amount must be positive", param="amount")
    if not 0 < len(reason) <= 500:
        raise InvalidRequest("give a reason of 1-500 characters", param="reason")
    invoice, _ = find_invoice(engine, number)
    for attempt in range(2):
        try:
            return _credit_note(engine, invoice, amount_nano, reason, actor)
        except IntegrityError:
            if attempt:  # a concurrent note took the number twice in a row: let it surface
                raise
    raise AssertionError("unreachable")


def _credit_note(
    engine: Engine, invoice: Invoice, amount_nano: int, reason: str, actor: str
) -> tuple[str, Transfer]:
    number = invoice.number
    with write_transaction(engine) as connection:
        credited = invoice_rows.credited_nano(connection, number)
        if amount_nano > invoice.total_nano - credited:
            raise Unprocessable(
                f"the invoice has {format_amount(invoice.total_nano - credited)}"
                f" {invoice.currency} left to credit",
                param="amount",
            )
        seq = invoice_rows.next_seq(connection, credit_notes)
        note = f"CN-{seq:06d}"
        refund = Transfer(
            f"credit_note:{note}",
            operator_account("revenue", invoice.currency),
            invoice.account_id,
            amount_nano,
            invoice.currency,
            "refund",
            f"{note} on {number}",
            now_ms(),
        )
        ledger_rows.post_transfers(connection, [refund], refund.created_at_ms)
        invoice_rows.insert_credit_note(
            connection, note, seq, number, amount_nano, reason, refund.id, refund.created_at_ms
        )
        record_action(
            connection,
            actor=actor,
            action="credit_note",
            entity="invoice",
            entity_id=number,
            before={"credited_nano": credited},
            after={"credited_nano": credited + amount_nano, "credit_note": note},
            now_ms=refund.created_at_ms,
        )
    return note, refund


def invoices_of(
    engine: Engine, account_ref: str | None, limit: int = 1000
) -> list[tuple[Invoice, int]]:
    account_id = None if account_ref is None else find_account(engine, account_ref).id
    with engine.connect() as connection:
        found = invoice_rows.list_invoices(connection, account_id, limit)
        return [(inv, invoice_rows.credited_nano(connection, inv.number)) for inv in found]
