"""A span's input and output from OTLP attributes and events (OTLP.md §2, rows `input`/`output`):
the first family present wins, the value is stored as JSON text. Plain functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import msgspec

from stages.otlp_decode import Attributes

Events = list[tuple[str, Attributes]]
_json = msgspec.json.Encoder()
_json_decode = msgspec.json.decode
_json_check = msgspec.json.Decoder(msgspec.Raw).decode  # validates without building the value
_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
_LEGACY_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                  "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}  # fmt: skip

# Keys whose values become the input/output columns: not repeated in `attributes`.
IO_KEYS = frozenset({
    "gen_ai.input.messages", "gen_ai.system_instructions", "gen_ai.output.messages",
    "input.value", "input.mime_type", "output.value", "output.mime_type",
    "ai.prompt.messages", "ai.prompt", "ai.response.text", "ai.response.object",
    "gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "ai.toolCall.args",
    "ai.toolCall.result", "traceloop.entity.input", "traceloop.entity.output",
})  # fmt: skip
IO_PREFIXES = ("llm.input_messages.", "llm.output_messages.", "gen_ai.prompt.", "gen_ai.completion.")


_INPUT_LAST = ("ai.prompt.messages", "ai.prompt", "gen_ai.tool.call.arguments", "ai.toolCall.args",
               "traceloop.entity.input")  # fmt: skip
_OUTPUT_LAST = ("ai.response.text", "ai.response.object", "gen_ai.tool.call.result", "ai.toolCall.result",
                "traceloop.entity.output")  # fmt: skip


def is_io_key(key: str) -> bool:
    return key in IO_KEYS or key.startswith(IO_PREFIXES)


def io_present(attrs: Attributes) -> set[str]:
    """The `IO_KEYS` an attribute set has, and the `IO_PREFIXES` some of its keys start with."""
    present = {key for key in attrs if key in IO_KEYS}
    present.update(prefix for prefix in IO_PREFIXES if any(key.startswith(prefix) for key in attrs))
    return present


def extract_input(attrs: Attributes, events: Events, present: Collection[str] | None = None) -> bytes | None:
    """`present`, when known, is `io_present(attrs)`: a family whose keys are absent is not looked for."""
    if present is None:
        present = io_present(attrs)
    value = None
    if "gen_ai.input.messages" in present:
        value = _messages(attrs, "gen_ai.input.messages", with_system=True)
    if value is None and events:
        details = _event(events, _DETAILS_EVENT)
        if details is not None:
            value = _messages(details, "gen_ai.input.messages", with_system=True)
    if value is None and "llm.input_messages." in present:
        value = _unflatten(attrs, "llm.input_messages.")
    if value is None and "input.value" in present:
        value = _typed_value(attrs, "input.value", "input.mime_type")
    if value is None and "gen_ai.prompt." in present:
        value = _unflatten(attrs, "gen_ai.prompt.")
    if value is None and events:
        value = _legacy_messages(events)
    if value is None:
        value = _first(attrs, _INPUT_LAST, present)
    return _text(value)


def extract_output(attrs: Attributes, events: Events, present: Collection[str] | None = None) -> bytes | None:
    if present is None:
        present = io_present(attrs)
    value = None
    if "gen_ai.output.messages" in present:
        value = _messages(attrs, "gen_ai.output.messages")
    if value is None and events:
        details = _event(events, _DETAILS_EVENT)
        if details is not None:
            value = _messages(details, "gen_ai.output.messages")
    if value is None and "llm.output_messages." in present:
        value = _unflatten(attrs, "llm.output_messages.")
    if value is None and "output.value" in present:
        value = _typed_value(attrs, "output.value", "output.mime_type")
    if value is None and "gen_ai.completion." in present:
        value = _unflatten(attrs, "gen_ai.completion.")
    if value is None and events:
        choices = [_parsed_map(a) for name, a in events if name == "gen_ai.choice"]
        value = choices or None
    if value is None:
        value = _first(attrs, _OUTPUT_LAST, present)
    return _text(value)


def _messages(attrs: Attributes, key: str, *, with_system: bool = False) -> Any:
    messages = _parsed(attrs.get(key))
    if messages is None:
        return None
    system = _parsed(attrs.get("gen_ai.system_instructions")) if with_system else None
    if system is None:
        return messages
    messages, system = _value(messages), _value(system)
    listed = messages if isinstance(messages, list) else [messages]
    return [{"role": "system", "parts": system}, *listed]


def _event(events: Events, name: str) -> Attributes | None:
    for event_name, attrs in events:
        if event_name == name:
            return attrs
    return None


def _legacy_messages(events: Events) -> list[Any] | None:
    messages = []
    for name, attrs in events:
        role = _LEGACY_EVENTS.get(name)
        if role is not None:
            body = {k: v for k, v in _parsed_map(attrs).items() if k != "gen_ai.system"}
            messages.append({"role": role, **body})
    return messages or None


def _typed_value(attrs: Attributes, key: str, mime_key: str) -> Any:
    value = attrs.get(key)
    if value is None or value == "":
        return None
    mime = str(attrs.get(mime_key) or "").lower()
    if isinstance(value, str) and "json" in mime:
        return _json_text(value)
    return value


def _unflatten(attrs: Attributes, prefix: str) -> list[Any] | None:
    """`llm.input_messages.0.message.role = "user"` … -> `[{"role": "user", …}]`."""
    tree: dict[str, Any] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        node = tree
        parts = key[len(prefix) :].split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    if not tree:
        return None
    listed = _lists(tree)
    items = listed if isinstance(listed, list) else [listed]
    return [item["message"] if isinstance(item, dict) and set(item) == {"message"} else item
            for item in items]  # fmt: skip


def _lists(node: Any) -> Any:
    """Dicts keyed by indexes become lists, in index order."""
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def _first(attrs: Attributes, keys: tuple[str, ...], present: Collection[str]) -> Any:
    for key in keys:
        if key not in present:
            continue
        value = attrs.get(key)
        if value is not None and value != "":
            return _parsed(value)
    return None


_OPENERS = frozenset('{["')  # how JSON text of an object, array or string starts


class JsonText(msgspec.Struct, gc=False):
    """An attribute's JSON text, checked to parse, kept as sent: stored without a re-encode. A
    wrapper, not a `bytes` subclass: the text is not copied into it, nor out of it (`_text`)."""

    raw: bytes


def _parsed(value: Any) -> Any:
    """A JSON string as its JSON text (emitters send structured values as JSON text), else as is."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        first = value[:1]
        if first in _OPENERS or (first.isspace() and value.lstrip()[:1] in _OPENERS):
            return _json_text(value)
    return value


def _json_text(text: str) -> JsonText | str:
    """`text` as JSON text when it parses as JSON (checked, kept as sent, as v1 keeps its `input`),
    else the string itself."""
    raw = text.encode()
    try:
        _json_check(raw)
    except (msgspec.DecodeError, RecursionError):
        return text
    return JsonText(raw)


def _value(value: Any) -> Any:
    """The value of `_parsed`, decoded (to combine it with others)."""
    return _json_decode(value.raw) if type(value) is JsonText else value


def _parsed_map(attrs: Attributes) -> dict[str, Any]:
    return {k: _value(_parsed(v)) for k, v in attrs.items()}


def _text(value: Any) -> bytes | None:
    if value is None:
        return None
    if type(value) is JsonText:
        return value.raw
    try:
        return _json.encode(value)
    except (TypeError, ValueError, OverflowError):  # bytes, NaN, huge ints: made JSON-safe first
        return _json.encode(jsonable(value))


def jsonable(value: Any) -> Any:
    """An attribute value as JSON can hold it: bytes as hex, NaN/inf as strings."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value
