"""The content parts of OpenAI Responses items (pure): checked, measured, read into neutral
parts and normalized for the store.

A user, system or developer message (and a function call's output) carries ``input_text``,
``input_image`` (an http(s) or ``data:`` URL) and ``input_file`` (base64 data or a URL,
a neutral ``DocumentPart``); an assistant message carries ``output_text`` and ``refusal``.
Uploaded files (``file_id``) are refused: no store of files is kept here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokenmill.errors import InvalidRequest
from tokenmill.neutral import DocumentPart, ImagePart, TextPart

INPUT_PARTS = frozenset({"input_text", "input_image", "input_file"})
ASSISTANT_PARTS = frozenset({"output_text", "refusal"})
IMAGE_DETAILS = ("auto", "low", "high", "original")
IMAGE_URL_PREFIXES = ("http://", "https://", "data:")
FILE_URL_PREFIXES = ("http://", "https://")
MEDIA_TYPES = {
    "pdf": "application/pdf",
    "txt": "text/plain",
    "md": "text/markdown",
    "csv": "text/csv",
    "json": "application/json",
    "html": "text/html",
}
UNKNOWN_MEDIA_TYPE = "application/octet-stream"


def check_parts(param: str, parts: list[Any], allowed: frozenset[str]) -> None:
    for number, part in enumerate(parts):
        where = f"{param}.[{number}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            raise InvalidRequest(
                f"{where} must be a content part with a 'type'.", param=f"{where}.type"
            )
        if kind not in allowed:
            raise InvalidRequest(
                f"{where}: a '{kind[:40]}' part is not supported here; this message takes "
                + ", ".join(sorted(allowed))
                + ".",
                param=f"{where}.type",
                code="unsupported_value",
            )
        _CHECKS[kind](where, part)


def _check_string(where: str, part: dict[str, Any], name: str) -> None:
    if not isinstance(part.get(name), str):
        raise InvalidRequest(
            f"{where}.{name} is required and must be a string.", param=f"{where}.{name}"
        )


def _refuse_file_id(where: str, part: dict[str, Any], instead: str) -> None:
    if part.get("file_id") is not None:
        raise InvalidRequest(
            f"{where}.file_id: uploaded files are not kept here; send {instead}.",
            param=f"{where}.file_id",
            code="unsupported_value",
        )


def _check_image(where: str, part: dict[str, Any]) -> None:
    _refuse_file_id(where, part, "the image as 'image_url' (an http(s) or data: URL)")
    url = part.get("image_url")
    if not isinstance(url, str) or not url.startswith(IMAGE_URL_PREFIXES):
        raise InvalidRequest(
            f"{where}.image_url must be an http(s) or data: URL.", param=f"{where}.image_url"
        )
    detail = part.get("detail")
    if detail is not None and detail not in IMAGE_DETAILS:
        raise InvalidRequest(
            f"{where}.detail must be one of {', '.join(IMAGE_DETAILS)}.",
            param=f"{where}.detail",
            code="invalid_value",
        )


def _check_file(where: str, part: dict[str, Any]) -> None:
    _refuse_file_id(where, part, "its bytes as 'file_data' or its address as 'file_url'")
    data, url = part.get("file_data"), part.get("file_url")
    if data is not None:
        valid = isinstance(data, str) and (not data.startswith("data:") or ";base64," in data)
        if not valid:
            raise InvalidRequest(
                f"{where}.file_data must be base64 text or a base64 data: URL.",
                param=f"{where}.file_data",
            )
    elif not isinstance(url, str) or not url.startswith(FILE_URL_PREFIXES):
        raise InvalidRequest(
            f"{where} needs 'file_data' (base64) or 'file_url' (an http(s) URL).",
            param=f"{where}.file_url" if url is not None else f"{where}.file_data",
        )
    if part.get("filename") is not None and not isinstance(part.get("filename"), str):
        raise InvalidRequest(f"{where}.filename must be a string.", param=f"{where}.filename")


_CHECKS: dict[str, Callable[[str, dict[str, Any]], None]] = {
    "input_text": lambda where, part: _check_string(where, part, "text"),
    "output_text": lambda where, part: _check_string(where, part, "text"),
    "refusal": lambda where, part: _check_string(where, part, "refusal"),
    "input_image": _check_image,
    "input_file": _check_file,
}
assert set(_CHECKS) == INPUT_PARTS | ASSISTANT_PARTS


def images_in(item: dict[str, Any]) -> tuple[int, int]:
    """The images of one item and the bytes their URLs take; any shape reads safely (the
    stored context is measured with it)."""
    parts = item.get("content", item.get("output"))
    if not isinstance(parts, list):
        return 0, 0
    urls = [
        part["image_url"]
        for part in parts
        if isinstance(part, dict)
        and part.get("type") == "input_image"
        and isinstance(part.get("image_url"), str)
    ]
    return len(urls), sum(len(url) for url in urls)


def read_part(part: dict[str, Any]) -> TextPart | ImagePart | DocumentPart:
    """A checked content part as a neutral part."""
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        return TextPart(part["text"])
    if kind == "refusal":
        return TextPart(part["refusal"])
    if kind == "input_image":
        return ImagePart(part["image_url"], part.get("detail"))
    assert kind == "input_file"
    filename = part.get("filename")
    data = part.get("file_data")
    if data is None:
        url = part["file_url"]
        return DocumentPart(_media_type(filename or url), url=url, title=filename)
    media_type = _media_type(filename)
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        media_type = head.removeprefix("data:").removesuffix(";base64") or media_type
    return DocumentPart(media_type, data=data, title=filename)


def _media_type(name: str | None) -> str:
    """A document's media type from the extension of its file name or URL."""
    if name is None:
        return UNKNOWN_MEDIA_TYPE
    extension = name.split("?", 1)[0].rsplit(".", 1)[-1].lower()
    return MEDIA_TYPES.get(extension, UNKNOWN_MEDIA_TYPE)


def normal_part(part: dict[str, Any]) -> dict[str, Any]:
    """A checked content part as the store keeps it: its own fields, no others."""
    kind = part["type"]
    if kind == "output_text":
        return {"type": kind, "text": part["text"], "annotations": []}
    if kind == "input_image":
        return {
            "type": kind,
            "image_url": part["image_url"],
            "detail": part.get("detail") or "auto",
        }
    names = {"input_text": ("text",), "refusal": ("refusal",)}.get(
        kind, ("filename", "file_data", "file_url")
    )
    return {"type": kind} | {name: part[name] for name in names if part.get(name) is not None}
