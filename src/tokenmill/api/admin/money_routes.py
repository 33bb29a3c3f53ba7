"""Admin API routes for money: movements of funds, balances, account terms, prices, audit.

Same rules as the rest of the admin API: a wire model in, the ``billing`` service (the same
functions the CLI calls) on a worker thread, then the gateway's in-memory state refreshed so
the change is spendable at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Query, Response
from starlette.concurrency import run_in_threadpool

from tokenmill.access import service
from tokenmill.api.admin.auth import ADMIN, Actor
from tokenmill.api.admin.money_wire import (
    BalanceOut,
    BudgetIn,
    CloseIn,
    CreditIn,
    MovementIn,
    PriceIn,
    PriceOut,
    SubscribeIn,
    TermsIn,
    TransferOut,
    balance_out,
    price_from,
    price_out,
    transfer_out,
    utc_time,
)
from tokenmill.api.gateway import Gateway
from tokenmill.api.openai_routes import html_response
from tokenmill.billing import periods
from tokenmill.billing import service as billing
from tokenmill.billing.margins import GROUPS, MarginRow, margin_csv, margin_json, margin_report
from tokenmill.billing.statements import build_statement, revenue_json, revenue_report
from tokenmill.errors import InvalidRequest
from tokenmill.instants import ms_of
from tokenmill.money import format_amount, parse_amount
from tokenmill.retail.invoices import invoice_html, invoice_json, period_bounds, previous_period
from tokenmill.retail.ledger import Transfer
from tokenmill.retail.plan_specs import plan_to_spec
from tokenmill.retail.statements import month_of, statement_csv, statement_html, statement_json
from tokenmill.store.audit import entries
from tokenmill.store.database import now_ms


def money_routes(app: FastAPI, gateway: Gateway) -> None:
    for register in (
        _funds_routes,
        _terms_routes,
        _pricing_routes,
        _period_routes,
        _report_routes,
    ):
        register(app, gateway)


def _funds_routes(app: FastAPI, gateway: Gateway) -> None:
    """Movements of funds and balances."""
    db = gateway.db
    admin = ADMIN[0]

    @app.post("/accounts/{account}/transfers", response_model=TransferOut)
    async def move_funds(
        account: str,
        body: MovementIn,
        response: Response,
        actor: Actor,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> TransferOut:
        amount = parse_amount(body.amount, param="amount", allow_negative=True)
        key = billing.check_idempotency_key(
            billing.one_idempotency_key(body.idempotency_key, idempotency_key)
        )
        found = await run_in_threadpool(service.find_account, db, account)
        # A debit takes funds that requests in flight may hold: reserve it like a request
        # would, so no settle can then take the balance below its floor.
        hold = None
        if amount < 0 and not await run_in_threadpool(billing.transfer_exists, db, key):
            hold = gateway.reserve_debit(found.id, -amount)
        try:
            posted = await run_in_threadpool(
                lambda: billing.move_funds(
                    db,
                    found.id,
                    amount,
                    kind=body.kind,
                    idempotency_key=key,
                    actor=actor,
                    reference=body.reference,
                )
            )
            await gateway.sync_directory()
        finally:
            if hold is not None:
                gateway.money.funds.release(hold)
        if posted.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return transfer_out(posted.transfer)

    @app.get(
        "/accounts/{account}/transfers", dependencies=[admin], response_model=list[TransferOut]
    )
    async def list_transfers(
        account: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
    ) -> list[TransferOut]:
        def query() -> list[Transfer]:
            found = service.find_account(db, account)
            return billing.transfers_of(db, found.id, limit=limit)

        return [transfer_out(t) for t in await run_in_threadpool(query)]

    @app.get("/accounts/{account}/balance", dependencies=[admin], response_model=BalanceOut)
    async def balance(account: str) -> BalanceOut:
        found = await run_in_threadpool(service.find_account, db, account)
        return balance_out(gateway, found.id)


def _terms_routes(app: FastAPI, gateway: Gateway) -> None:
    """Credit limits and spend budgets."""
    db = gateway.db

    @app.post("/accounts/{account}/terms", response_model=dict[str, Any])
    async def set_terms(account: str, body: TermsIn, actor: Actor) -> dict[str, Any]:
        limit = None
        if body.credit_limit is not None:
            limit = parse_amount(body.credit_limit, param="credit_limit")
        row = await run_in_threadpool(
            lambda: billing.set_terms(
                db, account, currency=body.currency, credit_limit_nano=limit, actor=actor
            )
        )
        await gateway.sync_directory()
        return {
            "id": row.id,
            "currency": row.currency,
            "credit_limit": format_amount(row.credit_limit_nano),
        }

    async def _budget(entity: str, ref: str, body: BudgetIn, actor: str) -> dict[str, Any]:
        daily = None if body.daily is None else parse_amount(body.daily, param="daily")
        monthly = None if body.monthly is None else parse_amount(body.monthly, param="monthly")
        entity_id, daily, monthly = await run_in_threadpool(
            lambda: billing.set_budget(
                db, entity, ref, daily_nano=daily, monthly_nano=monthly, actor=actor
            )
        )
        await gateway.sync_directory()
        return {
            "id": entity_id,
            "daily_budget_nano": daily,
            "monthly_budget_nano": monthly,
        }

    @app.post("/accounts/{account}/budget", response_model=dict[str, Any])
    async def account_budget(account: str, body: BudgetIn, actor: Actor) -> dict[str, Any]:
        return await _budget("account", account, body, actor)

    @app.post("/keys/{key_id}/budget", response_model=dict[str, Any])
    async def key_budget(key_id: str, body: BudgetIn, actor: Actor) -> dict[str, Any]:
        return await _budget("key", key_id, body, actor)


def _pricing_routes(app: FastAPI, gateway: Gateway) -> None:
    """The price book and plans."""
    db = gateway.db
    admin = ADMIN[0]

    @app.get("/prices", dependencies=[admin], response_model=list[PriceOut])
    async def list_prices() -> list[PriceOut]:
        return [price_out(p) for p in await run_in_threadpool(billing.list_prices, db)]

    @app.post("/prices", status_code=201, response_model=PriceOut)
    async def set_price(body: PriceIn, actor: Actor) -> PriceOut:
        if body.model not in gateway.models:
            raise InvalidRequest(f"unknown model '{body.model[:200]}'", param="model")
        price = price_from(body)
        await run_in_threadpool(lambda: billing.set_price(db, price, actor=actor))
        await gateway.sync_directory()
        return price_out(price)

    @app.get("/plans", dependencies=[admin], response_model=dict[str, Any])
    async def list_plans() -> dict[str, Any]:
        return await run_in_threadpool(billing.list_plans, db)

    @app.put("/plans/{name}", response_model=dict[str, Any])
    async def set_plan(name: str, body: dict[str, Any], actor: Actor) -> dict[str, Any]:
        plan = await run_in_threadpool(lambda: billing.set_plan(db, name, body, actor=actor))
        await gateway.sync_directory()
        return {"name": plan.name, **plan_to_spec(plan)}

    @app.post("/accounts/{account}/plan", response_model=dict[str, Any])
    async def subscribe(account: str, body: SubscribeIn, actor: Actor) -> dict[str, Any]:
        row = await run_in_threadpool(
            lambda: billing.subscribe(db, account, body.plan, actor=actor)
        )
        await gateway.sync_directory()
        return {"id": row.id, "plan": row.plan}


def _period_routes(app: FastAPI, gateway: Gateway) -> None:
    """Closing periods, invoices, credit notes."""
    db = gateway.db
    admin = ADMIN[0]

    @app.post("/billing/close-period", response_model=dict[str, Any])
    async def close(body: CloseIn, actor: Actor) -> dict[str, Any]:
        period = previous_period(now_ms()) if body.period is None else body.period
        period_bounds(period)  # a clear 400 for a bad period, before anything is held
        due = await run_in_threadpool(periods.fees_due, db, period)
        holds = {}
        try:
            for account, fee in due:
                funds = gateway.money.funds.funds(account.id)
                payable = min(fee, max(0, funds.available_nano)) if funds else 0
                if payable:
                    holds[account.id] = gateway.reserve_debit(account.id, payable)
            report = await run_in_threadpool(
                lambda: periods.close_period(
                    db,
                    period,
                    actor=actor,
                    spendable=lambda a: holds[a.id].amount_nano if a.id in holds else 0,
                )
            )
            await gateway.sync_directory()
        finally:
            for hold in holds.values():
                gateway.money.funds.release(hold)
        return report.__dict__

    @app.get("/invoices", dependencies=[admin], response_model=list[dict[str, Any]])
    async def list_invoices(
        account: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
    ) -> list[dict[str, Any]]:
        found = await run_in_threadpool(periods.invoices_of, db, account, limit)
        return [invoice_json(invoice, credited) for invoice, credited in found]

    @app.get("/invoices/{number}", dependencies=[admin])
    async def show_invoice(number: str, format: Literal["json", "html"] = "json") -> Any:
        invoice, credited = await run_in_threadpool(periods.find_invoice, db, number)
        if format == "html":
            account = await run_in_threadpool(service.find_account, db, invoice.account_id)
            page = invoice_html(invoice, account.name, credited)
            return html_response(page)
        return invoice_json(invoice, credited)

    @app.post("/invoices/{number}/credit-notes", status_code=201, response_model=dict[str, Any])
    async def credit(number: str, body: CreditIn, actor: Actor) -> dict[str, Any]:
        amount = parse_amount(body.amount, param="amount")
        note, refund = await run_in_threadpool(
            lambda: periods.credit_note(db, number, amount, body.reason, actor=actor)
        )
        await gateway.sync_directory()
        return {"number": note, "invoice": number, "transfer": transfer_out(refund).model_dump()}


def _report_routes(app: FastAPI, gateway: Gateway) -> None:
    """Statements, revenue, the audit log."""
    db = gateway.db
    admin = ADMIN[0]

    @app.get("/accounts/{account}/statement", dependencies=[admin])
    async def statement(
        account: str,
        since: datetime | None = None,
        until: datetime | None = None,
        format: Literal["json", "csv", "html"] = "json",
    ) -> Any:
        month_start, month_end = month_of(now_ms())
        found = await run_in_threadpool(
            lambda: build_statement(
                db,
                account,
                month_start if since is None else ms_of(since),
                month_end if until is None else ms_of(until),
            )
        )
        if format == "csv":
            return Response(statement_csv(found), media_type="text/csv; charset=utf-8")
        if format == "html":
            return html_response(statement_html(found))
        return statement_json(found)

    @app.get("/reports/revenue", dependencies=[admin], response_model=list[dict[str, Any]])
    async def revenue(
        since: datetime | None = None, until: datetime | None = None, account: str | None = None
    ) -> list[dict[str, Any]]:
        month_start, month_end = month_of(now_ms())

        def query() -> list[dict[str, Any]]:
            account_id = service.find_account(db, account).id if account else None
            rows = revenue_report(
                db,
                month_start if since is None else ms_of(since),
                month_end if until is None else ms_of(until),
                account_id=account_id,
            )
            return [revenue_json(row) for row in rows]

        return await run_in_threadpool(query)

    @app.get("/reports/margin", dependencies=[admin], response_model=None)
    async def margin(
        since: datetime | None = None,
        until: datetime | None = None,
        by: str = ",".join(GROUPS),
        account: str | None = None,
        format: Literal["json", "csv"] = "json",
    ) -> Any:
        month_start, month_end = month_of(now_ms())
        groups = [name.strip() for name in by.split(",") if name.strip()]

        def query() -> list[MarginRow]:
            return margin_report(
                db,
                month_start if since is None else ms_of(since),
                month_end if until is None else ms_of(until),
                groups,
                account_id=service.find_account(db, account).id if account else None,
            )

        rows = await run_in_threadpool(query)
        if format == "csv":
            return Response(margin_csv(rows, groups), media_type="text/csv; charset=utf-8")
        return [margin_json(row) for row in rows]

    @app.get("/audit", dependencies=[admin], response_model=list[dict[str, Any]])
    async def audit_log(
        entity_id: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
    ) -> list[dict[str, Any]]:
        def query() -> list[dict[str, Any]]:
            with db.connect() as connection:
                return [
                    {**entry.__dict__, "at": utc_time(entry.at_ms)}
                    for entry in entries(connection, entity_id=entity_id, limit=limit)
                ]

        return await run_in_threadpool(query)
