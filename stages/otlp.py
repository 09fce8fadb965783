"""An OTLP/HTTP traces body -> the v1 `Batch` the price stage consumes, as a value (OTLP.md).

`check_otlp` is what the validate stage runs for a `/v1/traces` job: decompress under the cap,
decode (protobuf or OTLP JSON), map every span; unusable spans are counted and the first few
named (`Partial`), the usable ones go on like any v1 batch. Plain function, no I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.jobs import Rejected
from stages.decompress import TooLarge, Undecodable, decompress
from stages.otlp_answer import PROTOBUF
from stages.otlp_decode import OtlpSpan, decode_json, decode_protobuf
from stages.otlp_map import Problem, map_span
from stages.payload import Batch, Trace

log = logging.getLogger("foglamp.otlp")
PROBLEMS_NAMED = 5  # how many problems the partial_success message names


@dataclass(slots=True)
class Partial:
    """Filled by the validate stage, read by the front for the answer: spans not stored, and why."""

    rejected: int = 0
    message: str = ""


def check_otlp(body: bytes | bytearray, media: str, encoding: str, max_decompressed_bytes: int,
               partial: Partial | None = None) -> Batch | Rejected:  # fmt: skip
    """The usable spans as a Batch of one-span traces (possibly none); `partial` gets the rest."""
    raw = decompress(body, encoding, max_decompressed_bytes)
    if isinstance(raw, TooLarge):
        return Rejected(413, {"error": "payload_too_large", "limit": raw.limit})
    if isinstance(raw, Undecodable):
        return Rejected(400, {"error": "invalid_body", "message": raw.message})
    spans = decode_protobuf(raw) if media == PROTOBUF else decode_json(raw)
    if isinstance(spans, Undecodable):
        return Rejected(400, {"error": "invalid_body", "message": spans.message})
    return map_spans(spans, partial)


def map_spans(spans: list[OtlpSpan], partial: Partial | None = None) -> Batch:
    """Decoded spans as a Batch of one-span traces (the usable ones); `partial` gets the rest."""
    roots = {s.trace_id: s.name for s in spans if not s.parent_span_id.strip("0")}
    traces: list[Trace] = []
    problems: list[Problem] = []
    cache: dict[int, object] = {}
    for span in spans:
        try:
            result = map_span(span, roots.get(span.trace_id, ""), cache)
        except Exception as exc:  # a mapping bug must cost one span, never the request (no 500)
            log.exception("otlp span could not be mapped", extra={"path": span.path})
            result = Problem(span.path, f"could not be mapped: {type(exc).__name__}")
        if isinstance(result, Problem):
            problems.append(result)
        else:
            traces.append(result)
    if problems and partial is not None:
        partial.rejected = len(problems)
        named = "; ".join(str(problem) for problem in problems[:PROBLEMS_NAMED])
        more = f" (and {len(problems) - PROBLEMS_NAMED} more)" if len(problems) > PROBLEMS_NAMED else ""
        partial.message = f"{len(problems)} span(s) rejected: {named}{more}"
    return Batch(version="v1", traces=traces)
