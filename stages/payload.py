"""Payload v1 (SPEC §2) as msgspec Structs: the one and only definition of the batch schema.

Attributes are snake_case; the wire names are camelCase (``rename="camel"``). Every constraint
of SPEC §2 that concerns one field (types, string lengths, list sizes, enums, token counts ≥ 0,
timezone-aware timestamps) is declared here with ``Annotated[..., msgspec.Meta(...)]``, so that
``msgspec.json.Decoder(Batch)`` enforces it and ``stages.validate`` can re-check it field by field.
Rules that relate several fields (end ≥ start, unique span ids, token sums) live in
``stages.validate``.

Conventions:
- Unknown fields are ignored everywhere (msgspec's default).
- Optional fields without a default (``name``, ``userId``, ``model``, ``usage``, ``tags``, ...)
  accept JSON ``null`` as "absent". Fields with a default (``environment``, ``kind``,
  ``status``, token counts) must be absent or valid.
- Absent token counts are ``0``; counts are at most 2**53 - 1 (exact in every JSON parser).
- ``Span.input`` / ``Span.output`` are decoded as ``msgspec.Raw`` (any JSON value, kept
  undecoded). ``stages.validate.decode_batch`` replaces them with ``bytes | None``: the value
  as UTF-8 JSON text, ``None`` for null or absent.

Ownership: these are plain data; whoever holds a decoded ``Batch`` owns it. Structs are
``gc=False`` (decoded data never forms reference cycles), which keeps decoding fast.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Raw

Id = Annotated[str, Meta(min_length=1, max_length=128)]
# The range is the store's (DateTime64(6)); a cross-field rule in stages/validate.py checks it.
TIMESTAMP_RULE = "RFC 3339 date-time with a UTC offset, between 1900-01-01T00:00:00Z and 2299-12-31T23:59:59Z"
Timestamp = Annotated[datetime, Meta(tz=True, description=TIMESTAMP_RULE)]
# JSON's safe integers; an integral float (12.0) is accepted as its integer (JSON Schema's view).
TokenCount = Annotated[int, Meta(ge=0, le=2**53 - 1)]
Scalar = str | int | float | bool
ScalarMap = dict[str, Scalar]

SpanKind = Literal["llm", "embedding", "tool", "retrieval", "agent", "chain", "custom"]
SpanStatus = Literal["ok", "error", "unset"]


class _Payload(msgspec.Struct, rename="camel", gc=False):
    """Common options of every payload Struct (subclasses add ``kw_only=True``: it is not inherited)."""


class Sdk(_Payload, kw_only=True):
    """The SDK that sent the batch."""

    name: str
    version: str


class Usage(_Payload, kw_only=True):
    """Token counts, OpenAI / OpenTelemetry convention (inputs include cached, outputs include
    reasoning). Absent counts are 0."""

    input_tokens: TokenCount = 0
    output_tokens: TokenCount = 0
    cache_read_tokens: TokenCount = 0
    cache_write_tokens: TokenCount = 0
    reasoning_tokens: TokenCount = 0


class Cost(_Payload, kw_only=True):
    """Caller-supplied cost in USD; overrides pricing."""

    total: Annotated[float, Meta(ge=0, le=1e12)]  # finite: no infinity from msgpack


class Span(_Payload, kw_only=True):
    """One unit of work in a trace: an LLM call, a tool call, a retrieval, ...

    ``input`` and ``output`` take any JSON value; they are stored as JSON text.
    """

    id: Id
    parent_id: str | None = None
    name: Annotated[str, Meta(min_length=1, max_length=512)]
    kind: SpanKind = "custom"
    start_time: Timestamp
    end_time: Timestamp | None = None
    status: SpanStatus = "unset"
    status_message: str | None = None
    model: Annotated[str, Meta(max_length=256)] | None = None
    provider: Annotated[str, Meta(max_length=64)] | None = None
    usage: Usage | None = None
    cost: Cost | None = None
    input: Raw = msgspec.field(default_factory=Raw)  # absent: an empty Raw
    output: Raw = msgspec.field(default_factory=Raw)
    attributes: ScalarMap | None = None


class Trace(_Payload, kw_only=True):
    """One trace and its spans (1..2000)."""

    id: Id
    name: Annotated[str, Meta(max_length=512)] | None = None
    user_id: Annotated[str, Meta(max_length=256)] | None = None
    session_id: Annotated[str, Meta(max_length=256)] | None = None
    environment: Annotated[str, Meta(max_length=64)] = "default"
    release: Annotated[str, Meta(max_length=128)] | None = None
    tags: Annotated[list[Annotated[str, Meta(max_length=128)]], Meta(max_length=50)] | None = None
    metadata: ScalarMap | None = None
    spans: Annotated[list[Span], Meta(min_length=1, max_length=2000)]


class Batch(_Payload, kw_only=True):
    """The body of ``POST /ingest`` (JSON or msgpack, same shape)."""

    version: Literal["v1"]
    traces: Annotated[list[Trace], Meta(min_length=1, max_length=1000)]
    sdk: Sdk | None = None
