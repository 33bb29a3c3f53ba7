"""API keys and admin tokens: made at random, shown once, kept only as SHA-256 (pure)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from tokenmill.errors import AuthenticationFailed, PermissionDenied, unknown_model
from tokenmill.retail.rate_limits import RateLimit, Scope, scopes_for

__all__ = ["unknown_model"]  # re-exported: its home is errors

KEY_PREFIX = "tm-"
ADMIN_PREFIX = "tmadmin-"
KEY_RANDOM_BYTES = 24  # 192 bits
KEY_DISPLAY_CHARS = 10  # "tm-" and the first 7 random characters, shown in listings
SCOPE_CACHE_MODELS_MAX = 256  # models whose rate-limit scopes a grant remembers


def new_secret(prefix: str) -> str:
    """A fresh secret: ``prefix`` then 192 random bits, URL-safe base64."""
    secret = prefix + secrets.token_urlsafe(KEY_RANDOM_BYTES)
    assert len(secret) >= len(prefix) + 32
    return secret


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Grant:
    """What a live key may do: the hot-path view of a key and its account."""

    key_id: str
    account_id: str
    models: frozenset[str] | None  # None: every model
    expires_at_ms: int | None
    account_active: bool
    key_limits: Mapping[str, RateLimit] = field(default_factory=dict, compare=False)
    account_limits: Mapping[str, RateLimit] = field(default_factory=dict, compare=False)

    scopes_by_model: dict[str, list[Scope]] = field(default_factory=dict, compare=False)

    def rate_scopes(self, model: str) -> list[Scope]:
        """The rate-limit scopes a request for ``model`` touches (usually none); made once
        per model (a grant is replaced, not changed, when its limits change)."""
        if not self.key_limits and not self.account_limits:
            return []
        found = self.scopes_by_model.get(model)
        if found is None:
            found = [
                *scopes_for(f"key:{self.key_id}", self.key_limits, model),
                *scopes_for(f"account:{self.account_id}", self.account_limits, model),
            ]
            if len(self.scopes_by_model) < SCOPE_CACHE_MODELS_MAX:
                self.scopes_by_model[model] = found
        return found


def check_grant(grant: Grant, now_ms: int) -> None:
    """Raise if ``grant`` may not be used at ``now_ms`` (expired key, disabled account)."""
    if grant.expires_at_ms is not None and now_ms >= grant.expires_at_ms:
        raise AuthenticationFailed("This API key has expired.", code="expired_api_key")
    if not grant.account_active:
        raise PermissionDenied("The account of this API key is disabled.", code="account_disabled")


def may_use_model(grant: Grant, model: str) -> bool:
    return grant.models is None or model in grant.models


def check_model(grant: Grant, model: str) -> None:
    if not may_use_model(grant, model):
        raise unknown_model(model)
