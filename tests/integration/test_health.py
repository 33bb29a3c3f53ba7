"""The health probes: /healthz and /health, the path some load tools probe, answer alike."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import LiveGateway


class TestHealth:
    @pytest.mark.parametrize("path", ["/healthz", "/health"])
    def test_each_health_path_answers_ok_with_the_number_of_live_keys(
        self, gateway: LiveGateway, key: str, path: str
    ) -> None:
        """GET on either path is 200 with the same body; HEAD is 200 too."""
        response = httpx.get(gateway.url + path)
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ok", "keys": 1}
        assert response.headers["x-request-id"].startswith("req_")
        assert httpx.head(gateway.url + path).status_code == 200
