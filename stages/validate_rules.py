"""The cross-field rules of a batch (SPEC §2), checked on both the fast and the slow path.

On the slow path invalid values are None, so every rule skips what it cannot compare.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from stages.payload import Batch, Trace
from stages.validate_issues import Issues as _Issues
from stages.validate_issues import Path

# The range the store's DateTime64(6) column holds; outside it a timestamp would be stored wrong.
EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2299, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
OUT_OF_RANGE = "timestamp must be between 1900-01-01 and 2299-12-31 (UTC)"


def _check_rules(batch: Batch, issues: _Issues) -> None:
    """End ≥ start, parentId ≠ id, token sums, span ids unique per trace id.

    Hot loop (runs on every valid batch): kept inline; paths are built only on a violation.
    """
    ids_by_trace: dict[str, set[str]] = {}
    for ti, trace in enumerate(batch.traces or ()):
        if issues.full:
            return
        spans = trace.spans or ()
        for si, span in enumerate(spans):
            pid = span.parent_id
            if pid is not None and pid == span.id:
                issues.add(_at(ti, si, "parentId"), "parent_is_self", "parentId equals the span id")
            start, end = span.start_time, span.end_time
            if start is not None and not EARLIEST <= start <= LATEST:
                issues.add(_at(ti, si, "startTime"), "invalid_timestamp", OUT_OF_RANGE)
            if end is not None and not EARLIEST <= end <= LATEST:
                issues.add(_at(ti, si, "endTime"), "invalid_timestamp", OUT_OF_RANGE)
            elif end is not None and start is not None and end < start:
                issues.add(_at(ti, si, "endTime"), "end_before_start", "endTime is before startTime")
            usage = span.usage
            if usage is None:
                continue
            it, cr, cw = usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens
            if it is not None and cr is not None and cw is not None and cr + cw > it:
                message = f"inputTokens ({it}) must include cacheReadTokens + cacheWriteTokens ({cr + cw})"
                issues.add(_at(ti, si, "usage", "inputTokens"), "token_counts", message)
            ot, rt = usage.output_tokens, usage.reasoning_tokens
            if ot is not None and rt is not None and rt > ot:
                message = f"outputTokens ({ot}) must include reasoningTokens ({rt})"
                issues.add(_at(ti, si, "usage", "outputTokens"), "token_counts", message)
        ids = {span.id for span in spans}
        earlier = ids_by_trace.get(trace.id)
        if len(ids) != len(spans) or (earlier is not None and not earlier.isdisjoint(ids)):
            _report_duplicates(trace, ti, earlier or set(), issues)
        if trace.id is not None:
            ids_by_trace[trace.id] = ids | earlier if earlier else ids


def _report_duplicates(trace: Trace, ti: int, seen: set[str], issues: _Issues) -> None:
    seen = set(seen)
    for si, span in enumerate(trace.spans or ()):
        if span.id is None:
            continue
        if span.id in seen:
            message = f"span id {span.id!r} is used more than once in trace {trace.id!r}"
            issues.add(_at(ti, si, "id"), "duplicate_id", message)
        seen.add(span.id)


def _at(ti: int, si: int, *rest: str) -> Path:
    return ["traces", ti, "spans", si, *rest]


def ints_in_usage(value: Any) -> Any:
    """`value` (a generic batch) with integral float token counts made ints, in place."""
    traces = value.get("traces") if isinstance(value, dict) else None
    for trace in traces if isinstance(traces, list) else ():
        spans = trace.get("spans") if isinstance(trace, dict) else None
        for span in spans if isinstance(spans, list) else ():
            usage = span.get("usage") if isinstance(span, dict) else None
            if isinstance(usage, dict):
                for name, count in usage.items():
                    if isinstance(count, float) and count.is_integer() and abs(count) < 2**63:
                        usage[name] = int(count)
    return value
