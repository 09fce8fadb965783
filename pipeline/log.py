"""Structured logs: one JSON object per line on stderr, bound with the process role and pid.

Log at boundaries (ready, drained, flushed N rows, rejected counts), never once per span:

    log = get_logger("flush")
    log.info("flushed", rows=50000, ms=412.5)
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_state: dict[str, Any] = {"role": "cli", "level": 20}


def configure(role: str, level: str = "info") -> None:
    """Set this process's role (supervisor, writer, front-1, ...) and minimum level."""
    _state["role"] = role
    _state["level"] = _LEVELS.get(level.lower(), 20)


class Logger:
    def __init__(self, stage: str) -> None:
        self.stage = stage

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if _LEVELS[level] < _state["level"]:
            return
        record = {
            "ts": round(time.time(), 3),
            "level": level,
            "role": _state["role"],
            "pid": os.getpid(),
            "stage": self.stage,
            "event": event,
            **fields,
        }
        sys.stderr.write(json.dumps(record, default=str) + "\n")
        sys.stderr.flush()

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)


def get_logger(stage: str) -> Logger:
    return Logger(stage)
