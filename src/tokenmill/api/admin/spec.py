"""The admin API's OpenAPI spec as the API answers: a bearer admin token on every
operation, and the error statuses it really sends (a bad body or query is a 400 in the
OpenAI error shape, never FastAPI's 422)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
ERRORS = {
    "400": "the body, query or path is not valid; `param` names the field",
    "401": "no admin token, or not an admin's",
    "413": "the body is larger than `limits.admin_body_bytes_max`",
}


def _error_response(description: str) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {"description": description, "content": content}


def admin_openapi(app: FastAPI) -> dict[str, Any]:
    """The spec, made once and kept (FastAPI's ``app.openapi`` contract)."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    components["securitySchemes"] = {
        "adminToken": {"type": "http", "scheme": "bearer", "description": "the admin token"}
    }
    spec["security"] = [{"adminToken": []}]
    for path in spec.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, description in ERRORS.items():
                responses.setdefault(status, _error_response(description))
    app.openapi_schema = spec
    return spec
