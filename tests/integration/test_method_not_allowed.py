"""A wrong method on the admin and dashboard routes is a 405 that says which methods work
(``Allow``), in the API's error shape, like the OpenAI routes."""

from __future__ import annotations

import httpx
import pytest

from tests.assertions import assert_openai_error
from tests.conftest import LiveGateway


class TestOtherRoutes:
    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("DELETE", "/v1/dashboard/balance", {"GET", "HEAD"}),
            ("PUT", "/admin/v1/accounts", {"POST"}),  # Starlette names the first route's
        ],
        ids=["dashboard", "admin"],
    )
    def test_a_wrong_method_gets_405_with_allow(
        self, gateway: LiveGateway, method: str, path: str, allowed: set[str]
    ) -> None:
        """405, Allow naming methods the route serves, OpenAI's error shape."""
        headers = {"Authorization": f"Bearer {gateway.admin_token}"}
        response = httpx.request(method, gateway.url + path, headers=headers, timeout=10)
        assert_openai_error(response, 405)
        assert allowed <= {m.strip() for m in response.headers["allow"].split(",")}
