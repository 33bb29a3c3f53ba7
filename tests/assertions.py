"""Assertions shared by the HTTP tests."""

from __future__ import annotations

from typing import Any

import httpx


def assert_openai_error(
    response: httpx.Response, status: int, param: str | None = None
) -> dict[str, Any]:
    """``response`` is ``status`` with exactly OpenAI's error body and a request id.

    ``param`` must match too (None when the error names no field). Returns the error.
    """
    assert response.status_code == status, response.text
    assert response.headers.get("x-request-id"), response.headers
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["code"] is None or isinstance(error["code"], str), error
    assert error["param"] == param, error
    return dict(error)


def assert_anthropic_error(response: httpx.Response, status: int, kind: str | None = None) -> str:
    """``response`` is ``status`` with exactly Anthropic's error body
    (``{"type": "error", "error": {"type", "message"}}``) and a request id; ``kind`` must be
    the error's type when given. Returns the message."""
    assert response.status_code == status, response.text
    assert response.headers.get("x-request-id"), response.headers
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    error = body["error"]
    assert set(error) == {"type", "message"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert kind is None or error["type"] == kind, error
    message: str = error["message"]
    return message
