"""The OpenAI Responses store keeps only answers that were paid for and delivered: a request
refused with 402 stores nothing, nor does a stream whose client left (it pays for what was
produced, but no response exists to read back or continue); the same requests paid and
read to their end are stored, on SQLite and PostgreSQL.

A response's id is the request's id under ``resp_`` (each test checks it on a stored one).
"""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import func, select

from tests.conftest import LiveGateway
from tests.integration.test_billing import (
    HELLO,
    NANO,
    PRICE,
    SIM_ANSWER_TOKENS_MIN,
    SLOW,
    billed_gateway,
    cost_nano,
    ledger_of,
    priced_config,
    top_up,
    usage_transfer,
    wait_for_no_holds,
    wait_for_record,
)
from tests.surface_requests import (
    INSUFFICIENT_FUNDS,
    PATHS,
    assert_error,
    key_headers,
    outcome_of,
    post,
    read_until,
    request_body,
)
from tokenmill.store.tables import stored_responses


def response_id_of(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("req_")


def stored_count(live: LiveGateway, account_id: str) -> int:
    """How many responses the store holds for the account."""
    query = select(func.count()).where(stored_responses.c.account_id == account_id)
    with live.db.connect() as connection:
        count: int = connection.execute(query).scalar_one()
    return count


def shown(live: LiveGateway, secret: str, response_id: str) -> httpx.Response:
    """``GET /v1/responses/{id}`` with the key."""
    return httpx.get(
        f"{live.url}/v1/responses/{response_id}", headers=key_headers(secret), timeout=10
    )


def continued(live: LiveGateway, secret: str, response_id: str) -> httpx.Response:
    """A request (of one output token) that continues ``response_id``."""
    raw = request_body("responses", HELLO, 1, previous_response_id=response_id)
    return post(live.url, "responses", secret, raw)


def assert_not_stored(live: LiveGateway, secret: str, response_id: str) -> None:
    """Nothing to read back or to continue: a 404, and a 400 naming previous_response_id."""
    assert_error("responses", shown(live, secret, response_id), 404, "response_id")
    refused = continued(live, secret, response_id)
    assert_error("responses", refused, 400, "previous_response_id")


def assert_stored(live: LiveGateway, secret: str, response: httpx.Response) -> None:
    """The answer ``response`` ended well and is stored under its request's id, with the
    usage the client was shown."""
    outcome = outcome_of("responses", response)
    assert outcome.ended and outcome.usage is not None, response.text
    response_id = response_id_of(response.headers["x-request-id"])
    found = shown(live, secret, response_id)
    assert found.status_code == 200, found.text
    assert found.json()["id"] == response_id
    usage = found.json()["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == outcome.usage
    assert continued(live, secret, response_id).status_code == 200


class TestStoredResponsesAndMoney:
    def test_a_request_refused_with_402_stores_nothing(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """An empty account: streamed or not, a 402 and no stored response; once funded, the
        same requests are stored."""
        with billed_gateway(database_url, tmp_path, priced_config()) as (live, admin):
            secret, _, account_id = live.new_key("acme")
            refused_ids = []
            for stream in (False, True):
                raw = request_body("responses", HELLO, 16, stream=stream)
                refused = post(live.url, "responses", secret, raw)
                assert_error("responses", refused, 402, like=INSUFFICIENT_FUNDS["responses"])
                refused_ids.append(response_id_of(refused.headers["x-request-id"]))
            assert stored_count(live, account_id) == 0
            top_up(admin, account_id, NANO)
            for response_id in refused_ids:
                assert_not_stored(live, secret, response_id)
            assert stored_count(live, account_id) == 0

            for stream in (False, True):
                raw = request_body("responses", HELLO, 16, stream=stream)
                assert_stored(live, secret, post(live.url, "responses", secret, raw))
            assert stored_count(live, account_id) == 4  # two answers, two continuations

    def test_a_stream_its_client_left_pays_for_what_was_produced_and_stores_nothing(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """A slow stream closed after a few pieces of text: a cancelled record charged the
        price of its tokens, and no stored response; the same stream read to its end is."""
        with billed_gateway(database_url, tmp_path, priced_config(time_scale=SLOW)) as (
            live,
            admin,
        ):
            secret, _, account_id = live.new_key("acme")
            top_up(admin, account_id, NANO)
            raw = request_body("responses", HELLO, SIM_ANSWER_TOKENS_MIN, stream=True)
            with httpx.stream(
                "POST",
                live.url + PATHS["responses"],
                content=raw,
                headers=key_headers(secret),
                timeout=30,
            ) as response:
                assert response.status_code == 200
                request_id = response.headers["x-request-id"]
                seen = read_until("responses", response, 3)
                assert len(seen.pieces) >= 3 and not seen.ended, seen
            record = wait_for_record(live, request_id)
            assert record.status == "cancelled"
            assert record.charge_nano == cost_nano(
                PRICE, record.prompt_tokens, record.completion_tokens
            )
            assert record.charge_nano > 0
            transfer = usage_transfer(ledger_of(live, account_id), request_id)
            assert transfer is not None and transfer.amount_nano == record.charge_nano
            wait_for_no_holds(admin, account_id)

            # Read to its end, the same stream is stored (and its save is done by then).
            assert_stored(live, secret, post(live.url, "responses", secret, raw))
            assert_not_stored(live, secret, response_id_of(request_id))
            assert stored_count(live, account_id) == 2  # the answer and its continuation
