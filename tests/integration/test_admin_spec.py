"""The admin OpenAPI spec says what the API does: bearer auth, and 400 (not 422) for bad
input, in the error shape the API sends."""

from __future__ import annotations

import re

import httpx

from tests.conftest import LiveGateway
from tokenmill.billing.service import check_idempotency_key
from tokenmill.errors import InvalidRequest
from tokenmill.money import parse_amount


class TestAdminSpec:
    def test_the_spec_declares_the_bearer_admin_token_on_every_operation(
        self, gateway: LiveGateway
    ) -> None:
        """A bearer security scheme, required globally; every operation lists 401."""
        spec = httpx.get(gateway.url + "/admin/v1/openapi.json", timeout=10).json()
        schemes = spec["components"]["securitySchemes"]
        assert schemes["adminToken"] == {
            "type": "http",
            "scheme": "bearer",
            "description": "the admin token",
        }
        assert spec["security"] == [{"adminToken": []}]
        operations = [op for path in spec["paths"].values() for op in path.values()]
        assert operations
        assert all("401" in op["responses"] for op in operations)

    def test_bad_input_is_declared_as_the_400_the_api_answers(self, gateway: LiveGateway) -> None:
        """No operation promises a 422; a bad body really gets the declared 400 shape."""
        spec = httpx.get(gateway.url + "/admin/v1/openapi.json", timeout=10).json()
        operations = [op for path in spec["paths"].values() for op in path.values()]
        assert not [op["operationId"] for op in operations if "422" in op["responses"]]
        shape = spec["components"]["schemas"]["Error"]["properties"]["error"]["required"]
        answer = httpx.post(
            gateway.url + "/admin/v1/accounts",
            json={"name": 7},
            headers={"Authorization": f"Bearer {gateway.admin_token}"},
            timeout=10,
        )
        assert answer.status_code == 400
        assert sorted(answer.json()["error"]) == sorted(shape)

    def test_declared_patterns_are_the_ones_the_api_enforces(self, gateway: LiveGateway) -> None:
        """The spec's amount and idempotency-key patterns accept exactly what the services
        accept, on a sample of right and wrong values (the services also trim spaces)."""
        spec = httpx.get(gateway.url + "/admin/v1/openapi.json", timeout=10).json()
        movement = spec["components"]["schemas"]["MovementIn"]["properties"]
        amount = movement["amount"]["pattern"]
        key = movement["idempotency_key"]["pattern"]
        for text in ("12.50", "-3", "0.000000001", "1e3", "1_000", "1.0000000001", "", "+5", "٣"):
            try:
                parse_amount(text, allow_negative=True)
                accepted = True
            except InvalidRequest:
                accepted = False
            assert bool(re.fullmatch(amount, text)) == accepted, text
        for text in ("k-1", "A.b_c:d", "", "-starts-with-dash", "x" * 129, "sp ace"):
            try:
                check_idempotency_key(text)
                accepted = True
            except InvalidRequest:
                accepted = False
            assert bool(re.fullmatch(key, text)) == accepted, text
