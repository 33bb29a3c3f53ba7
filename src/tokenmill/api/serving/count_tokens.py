"""``POST /v1/messages/count_tokens``: how many prompt tokens a Messages request holds funds
for, free of charge.

The count is the hold's prompt bound (``retail.rating.prompt_bound_tokens``), the number the
gateway reserves before it calls an engine, so a client that budgets by it is never
refused for a prompt it counted. It is free but not unlimited: each call takes one request
of the key's and the account's rate limits (and no tokens).
"""

from __future__ import annotations

import functools

import orjson

from tokenmill.access.keys import may_use_model
from tokenmill.api.error_json import Receive, Scope, Send, send_bytes, send_error
from tokenmill.api.fleet_router import monotonic_ms
from tokenmill.api.serving.collaborators import Collaborators
from tokenmill.api.serving.intake import authenticate, read_body
from tokenmill.errors import MethodNotAllowed, RateLimited, TokenmillError
from tokenmill.retail.rate_limits import quota_headers
from tokenmill.retail.rating import prompt_bound_tokens
from tokenmill.surfaces import Parser, WireShape, decode_json


class CountTokensEndpoint:
    def __init__(self, parts: Collaborators, parse: Parser, wire: WireShape) -> None:
        self.parts = parts
        self.parse = parse
        self.wire = wire

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = self.parts
        request_id = parts.request_ids()
        headers: list[tuple[bytes, bytes]] = []
        try:
            if scope["method"] != "POST":
                refused = MethodNotAllowed(scope["method"], scope["path"], ("POST",))
                headers.append(refused.allow_header)
                raise refused
            grant = authenticate(parts.directory, scope)
            raw = await read_body(scope, receive, parts.limits.request_body_bytes_max)
            call = self.parse(
                decode_json(raw),
                parts.models,  # type: ignore[arg-type]
                parts.limits,
                may_use=functools.partial(may_use_model, grant),
                body_bytes=len(raw),
            )
            model = parts.models[call.model]
            tokens = prompt_bound_tokens(
                call.prompt, parts.allowances[call.model], model.context_tokens
            )
            scopes = grant.rate_scopes(call.model)
            if scopes:
                limiter = parts.rate_limiter
                try:
                    admission = limiter.admit(scopes, 0, monotonic_ms())
                except RateLimited:
                    headers.extend(quota_headers(*limiter.quotas(scopes, monotonic_ms())))
                    raise
                limiter.finish(admission, 0, monotonic_ms())
                headers.extend(quota_headers(admission.requests, admission.tokens))
        except TokenmillError as error:
            wire = self.wire
            body = wire.error_body(error)
            await send_error(
                send, error, request_id, *headers, body=body, status=wire.status(error)
            )
            return
        answer = orjson.dumps({"input_tokens": tokens})
        await send_bytes(send, 200, answer, request_id, *headers)
