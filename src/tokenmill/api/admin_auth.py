"""Who calls the admin API: the bearer admin token, named for the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tokenmill.access.keys import hash_secret
from tokenmill.errors import AuthenticationFailed


def require_admin(request: Request) -> str:
    """The actor (``admin:<token id>``) the request acts as; 401 without a valid token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("The admin API needs 'Authorization: Bearer <admin token>'.")
    actor = request.app.state.admin_actors.get(hash_secret(token.strip()))
    if actor is None:
        raise AuthenticationFailed("Incorrect admin token.")
    assert isinstance(actor, str)
    return actor


Actor = Annotated[str, Depends(require_admin)]
ADMIN = [Depends(require_admin)]
