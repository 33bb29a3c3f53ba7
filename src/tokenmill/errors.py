"""The one error hierarchy of tokenmill.

Every error a client can cause or meet is a ``TokenmillError``; the HTTP layer renders it in
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with ``http_status``.

    TokenmillError
    ├── InvalidRequest        400  invalid_request_error
    │   └── MethodNotAllowed  405  (with an Allow header)
    ├── AuthenticationFailed  401  authentication_error
    ├── InsufficientFunds     402  insufficient_quota
    ├── PermissionDenied      403  permission_error
    ├── NotFound              404  not_found_error
    ├── RequestTimeout        408  invalid_request_error (the request head came too slowly)
    ├── Conflict              409  conflict_error
    ├── PayloadTooLarge       413  invalid_request_error
    ├── HeadersTooLarge       431  invalid_request_error
    ├── Unprocessable         422  invalid_request_error
    ├── RateLimited           429  rate_limit_error
    ├── UpstreamError         502  upstream_error
    ├── Unavailable           503  service_unavailable
    └── UpstreamTimeout       504  timeout_error

A ``ConfigurationError`` (a bad YAML file or setting) is an ``InvalidRequest`` whose
``param`` names the bad field.
"""

from __future__ import annotations


class TokenmillError(Exception):
    """Base of every error that tokenmill reports to a caller."""

    http_status: int = 500
    type: str = "server_error"
    code: str | None = None
    retry_after_s: int | None = None  # sent as Retry-After (429, 503): when to try again

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if retry_after_s is not None:
            assert retry_after_s >= 0
            self.retry_after_s = retry_after_s

    def to_body(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error body for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(TokenmillError):
    http_status = 400
    type = "invalid_request_error"


class MethodNotAllowed(InvalidRequest):
    """An OpenAI path asked with a method it does not serve: 405, with an ``Allow`` header."""

    http_status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, path: str, allowed: tuple[str, ...]) -> None:
        assert allowed
        super().__init__(
            f"Invalid method for URL ({method[:16]} {path[:200]}); use {' or '.join(allowed)}."
        )
        self.allowed = allowed

    @property
    def allow_header(self) -> tuple[bytes, bytes]:
        return (b"allow", ", ".join(self.allowed).encode())


class ConfigurationError(InvalidRequest):
    """A configuration file or setting is wrong; ``param`` names the field."""

    code = "invalid_configuration"


class AuthenticationFailed(TokenmillError):
    http_status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class InsufficientFunds(TokenmillError):
    http_status = 402
    type = "insufficient_quota"
    code = "insufficient_quota"


class PermissionDenied(TokenmillError):
    http_status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(TokenmillError):
    http_status = 404
    type = "not_found_error"
    code = "not_found"


class Conflict(TokenmillError):
    http_status = 409
    type = "conflict_error"
    code = "conflict"


class PayloadTooLarge(TokenmillError):
    http_status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RequestTimeout(TokenmillError):
    http_status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class HeadersTooLarge(TokenmillError):
    http_status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class Unprocessable(TokenmillError):
    http_status = 422
    type = "invalid_request_error"
    code = "unprocessable_entity"


class RateLimited(TokenmillError):
    http_status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(TokenmillError):
    http_status = 502
    type = "upstream_error"
    code = "bad_gateway"


class Unavailable(TokenmillError):
    http_status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class UpstreamTimeout(TokenmillError):
    http_status = 504
    type = "timeout_error"
    code = "upstream_timeout"


def unknown_model(model: str) -> NotFound:
    """The one answer for a model that does not exist and for one the key may not use.

    Both are the same bytes (a 404 ``model_not_found``), so a key cannot learn from the
    answer which models exist beyond its allow-list.
    """
    return NotFound(
        f"The model '{model[:200]}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )
