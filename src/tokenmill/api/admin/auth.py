"""Who calls the admin API: the bearer admin token, named for the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tokenmill.access.keys import hash_secret
from tokenmill.errors import AuthenticationFailed


def admin_actor(authorization: str, actors: dict[str, str]) -> str:
    """The actor (``admin:<token id>``) an ``Authorization`` header acts as; 401 without a
    valid admin token. The body guard asks it before any body is read, the routes again for
    the actor's name."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("The admin API needs 'Authorization: Bearer <admin token>'.")
    actor = actors.get(hash_secret(token.strip()))
    if actor is None:
        raise AuthenticationFailed("Incorrect admin token.")
    return actor


def require_admin(request: Request) -> str:
    """The actor the request acts as (a FastAPI dependency)."""
    return admin_actor(request.headers.get("authorization", ""), request.app.state.admin_actors)


Actor = Annotated[str, Depends(require_admin)]
ADMIN = [Depends(require_admin)]
