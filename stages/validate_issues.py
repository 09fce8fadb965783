"""What a refused ingest body turns into: `InvalidBody`, or `InvalidPayload` with its issues.

`Issues` collects the issues of one decode up to a cap; the helpers below turn msgspec's error
messages into an issue's code and path (wire keys and list indexes from the batch root).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import msgspec

Media = Literal["json", "msgpack"]
Path = list[str | int]

_MEDIA_NAMES = {"json": "JSON", "msgpack": "msgpack"}


@dataclass(frozen=True, slots=True)
class InvalidBody:
    """The body is not valid JSON / msgpack (-> 400 invalid_body)."""

    message: str


@dataclass(frozen=True, slots=True)
class InvalidPayload:
    """The payload breaks the schema or a rule (-> 400 invalid_payload)."""

    issues: list[dict]


class Issues:
    """The issues of one decode, capped at ``cap``; ``full`` once more have been seen."""

    __slots__ = ("cap", "from_json", "full", "items")

    def __init__(self, cap: int, *, from_json: bool = False) -> None:
        self.cap = max(1, cap)
        self.from_json = from_json  # values decoded from JSON: each has a JSON text
        self.items: list[dict] = []
        self.full = False

    def add(self, path: Path, code: str, message: str) -> None:
        if len(self.items) < self.cap:
            self.items.append({"path": path, "code": code, "message": message})
        else:
            self.full = True

    def add_error(self, path: Path, exc: msgspec.ValidationError, hint: str = "") -> None:
        """Add a msgspec error raised while checking the value at ``path``."""
        message, where = _split_error(str(exc))
        self.add([*path, *where], _code(message), message + hint)

    def result(self) -> InvalidPayload:
        if not self.full:
            return InvalidPayload(self.items)
        kept = self.items[: self.cap - 1]
        cut = f"too many issues: only the first {len(kept)} are listed"
        return InvalidPayload([*kept, {"path": [], "code": "too_many_issues", "message": cut}])


# -- messages ---------------------------------------------------------------------------------

_CODES = (  # msgspec 0.22 message prefix -> issue code; first match wins
    ("Expected `str` of length >=", "too_short"),
    ("Expected `str` of length <=", "too_long"),
    ("Expected `array` of length >=", "too_few"),
    ("Expected `array` of length <=", "too_many"),
    ("Expected `object` of length >=", "too_few"),
    ("Expected `object` of length <=", "too_many"),
    ("Object missing required field", "required"),
    ("Invalid RFC3339", "invalid_timestamp"),
    ("Expected `datetime` with a timezone", "invalid_timestamp"),
)
_STEP = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]|\[\.\.\.\]")  # `[...]`: a key msgspec omits


def _code(message: str) -> str:
    for prefix, code in _CODES:
        if message.startswith(prefix):
            return code
    return "invalid_type" if ", got `" in message else "invalid_value"


def _split_error(text: str) -> tuple[str, Path]:
    """``"Expected `int` - at `$.a[0]`"`` -> ``("Expected `int`", ["a", 0])``."""
    message, sep, where = text.partition(" - at `")
    if not sep:
        return text, []
    where = where.rstrip("`").removeprefix("key` in `")
    path: Path = []
    for m in _STEP.finditer(where, 1):
        if m[1] is None and m[2] is None:
            break
        path.append(m[1] if m[1] is not None else int(m[2]))
    return message, path


def invalid_body(media: Media, exc: BaseException) -> InvalidBody:
    if isinstance(exc, UnicodeDecodeError):
        return InvalidBody(f"body is not valid {_MEDIA_NAMES[media]}: a string is not UTF-8")
    if isinstance(exc, RecursionError):
        return InvalidBody(f"body is not valid {_MEDIA_NAMES[media]}: nested too deeply")
    return InvalidBody(f"body is not valid {_MEDIA_NAMES[media]}: {exc}")


def allowed(tp: Any) -> str:
    if get_origin(tp) is not Literal:
        return ""
    return " (allowed: " + ", ".join(f'"{value}"' for value in get_args(tp)) + ")"


def kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")
