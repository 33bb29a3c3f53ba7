"""The delta events the Messages and Responses renderers write without building a dict (a
stream is mostly these) read exactly as the generic event writers would write them."""

from __future__ import annotations

import orjson

from tokenmill.config import Limits, ModelConfig
from tokenmill.neutral import TextDelta, ToolCallDelta, WirePart
from tokenmill.surfaces.messages_render import MessagesRenderer, event
from tokenmill.surfaces.messages_request import parse_messages
from tokenmill.surfaces.responses_render import ResponsesRenderer
from tokenmill.surfaces.responses_request import parse_responses

MODELS = {"m": ModelConfig(deployments=["d"])}
TRICKY = 'quote " backslash \\ newline \n unicode é 🙂'


def events_of(parts: list[WirePart]) -> list[tuple[bytes, dict]]:
    found = []
    for part in parts:
        for frame in part.payload.split(b"\n\n"):
            if frame:
                head, data = frame.split(b"\ndata: ")
                found.append((head.removeprefix(b"event: "), orjson.loads(data)))
    return found


def test_a_messages_text_delta_is_the_event_the_generic_writer_makes() -> None:
    call = parse_messages(
        {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]},
        MODELS,
        Limits(),
    )
    renderer = MessagesRenderer(call, "req_1", 1)
    renderer.parts([TextDelta("a")])
    (written,) = renderer.parts([TextDelta(TRICKY)])
    generic = event(
        "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": TRICKY}}
    )
    assert events_of([written]) == events_of([WirePart(generic)])


def test_responses_deltas_are_the_events_the_generic_writer_makes() -> None:
    """Text and tool-argument deltas: type, place, piece and the running sequence number."""
    call = parse_responses({"model": "m", "input": "hi"}, MODELS, Limits())
    renderer = ResponsesRenderer(call, "req_1", 1)
    first = events_of(renderer.parts([TextDelta("a")]))
    ((kind, text_delta),) = events_of(renderer.parts([TextDelta(TRICKY)]))
    assert kind == b"response.output_text.delta"
    assert text_delta == {
        "type": "response.output_text.delta",
        "sequence_number": first[-1][1]["sequence_number"] + 1,
        "item_id": first[-1][1]["item_id"],
        "output_index": 0,
        "content_index": 0,
        "delta": TRICKY,
        "logprobs": [],
    }
    opened = events_of(renderer.parts([ToolCallDelta(0, "call_1", "f", "{")]))
    ((kind, arguments),) = events_of(renderer.parts([ToolCallDelta(0, arguments=TRICKY)]))
    assert kind == b"response.function_call_arguments.delta"
    added = next(data for kind, data in opened if kind == b"response.output_item.added")
    assert arguments == {
        "type": "response.function_call_arguments.delta",
        "sequence_number": opened[-1][1]["sequence_number"] + 1,
        "item_id": added["item"]["id"],
        "output_index": 1,
        "delta": TRICKY,
    }
