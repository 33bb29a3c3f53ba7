"""The audit: recompute the ledger from its transfers and check every invariant.

I2 balances sum to zero; I3 no customer below its floor; I7 cached balances equal the
recomputed ones; I9 every usage record that was charged has exactly its usage (and loss)
transfer, of the same amount, and every usage transfer has its record; each invoice's
total is what the ledger charged its account in its period. Transfer ids are
unique by the primary key (I5), amounts positive by a CHECK (I10). Holds live only in the
serving gateway's memory and vanish with it, so a stopped store has none to leak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, and_, func, literal, or_, select

from tokenmill.billing.periods import invoice_lines
from tokenmill.retail.ledger import Breach, audit_balances
from tokenmill.store import accounts as account_rows
from tokenmill.store import invoices as invoice_rows
from tokenmill.store import ledger as ledger_rows
from tokenmill.store.tables import transfers, usage_records

SHOWN_MAX = 20  # breaches of one kind listed in full; the rest are counted


@dataclass
class AuditReport:
    transfers_count: int = 0
    records_count: int = 0
    accounts_count: int = 0
    breaches: list[Breach] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaches


def run_audit(engine: Engine) -> AuditReport:
    report = AuditReport()
    connection_options = {}
    if engine.dialect.name == "postgresql":
        connection_options["isolation_level"] = "REPEATABLE READ"
    with engine.connect().execution_options(**connection_options) as connection:
        report.transfers_count = int(
            connection.execute(select(func.count()).select_from(transfers)).scalar_one()
        )
        report.records_count = int(
            connection.execute(select(func.count()).select_from(usage_records)).scalar_one()
        )
        accounts = account_rows.all_accounts(connection)
        report.accounts_count = len(accounts)
        floors = {account.id: -account.credit_limit_nano for account in accounts}
        report.breaches = audit_balances(
            ledger_rows.recomputed_balances(connection),
            ledger_rows.cached_balances(connection),
            floors,
        )
        report.breaches += _records_without_transfers(connection)
        report.breaches += _transfers_without_records(connection)
        report.breaches += _invoices_off_the_ledger(connection)
    return report


def _records_without_transfers(connection: Connection) -> list[Breach]:
    """Charged records whose usage or loss transfer is missing or of another amount."""
    breaches = []
    for prefix, column in (("usage:", "charge_nano"), ("loss:", "loss_nano")):
        amount = usage_records.c[column]
        query = (
            select(usage_records.c.request_id, amount, transfers.c.amount_nano)
            .select_from(
                usage_records.outerjoin(
                    transfers, transfers.c.id == literal(prefix) + usage_records.c.request_id
                )
            )
            .where(
                or_(
                    and_(amount > 0, transfers.c.id.is_(None)),
                    and_(transfers.c.id.is_not(None), transfers.c.amount_nano != amount),
                )
            )
            .limit(SHOWN_MAX)
        )
        for request_id, expected, found in connection.execute(query):
            breaches.append(
                Breach(
                    "I9",
                    request_id,
                    f"record's {column} is {expected}, its {prefix[:-1]} transfer"
                    f" {'is missing' if found is None else f'moves {found}'}",
                )
            )
    return breaches


def _transfers_without_records(connection: Connection) -> list[Breach]:
    """Usage and loss transfers that no usage record accounts for."""
    query = (
        select(transfers.c.id)
        .select_from(
            transfers.outerjoin(usage_records, usage_records.c.request_id == transfers.c.reference)
        )
        .where(transfers.c.kind.in_(["usage", "loss"]), usage_records.c.request_id.is_(None))
        .limit(SHOWN_MAX)
    )
    return [
        Breach("I9", transfer_id, "usage transfer without a usage record")
        for (transfer_id,) in connection.execute(query)
    ]


def _invoices_off_the_ledger(connection: Connection) -> list[Breach]:
    """Invoices whose total is not what the ledger charged the account in their period."""
    breaches = []
    for invoice in invoice_rows.list_invoices(connection, limit=1_000_000):
        lines = invoice_lines(connection, invoice.account_id, invoice.since_ms, invoice.until_ms)
        ledger = sum(line.amount_nano for line in lines)
        if invoice.lines_nano != invoice.total_nano:
            breaches.append(
                Breach(
                    "I9",
                    invoice.number,
                    f"invoice total {invoice.total_nano} != {invoice.lines_nano}, its lines",
                )
            )
        elif ledger != invoice.total_nano:
            breaches.append(
                Breach(
                    "I9",
                    invoice.number,
                    f"invoice total {invoice.total_nano} != {ledger} charged in its period",
                )
            )
    return breaches
