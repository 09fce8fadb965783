"""`run.py orgs usage`: spans accepted this month against each org's quota.

The live ledger belongs to the writer: while the node runs it is asked over the link; when the
node is stopped the ledger is rebuilt exactly as the writer would on start (the spool
checkpoint's ledger plus the unflushed spool records).
"""

from __future__ import annotations

import time

from pipeline import messages
from pipeline.config import Config
from pipeline.controlplane import Org
from pipeline.errors import PermanentError
from pipeline.query import ask_writer
from pipeline.spool import Spool
from pipeline.supervisor import node_running
from stages.admission import month_of, replay_ledgers


def usage_by_org(config: Config) -> tuple[int, dict[str, int]]:
    """(month YYYYMM, spans accepted per org id that month)."""
    if node_running(config.data_dir):
        reply = ask_writer(config, messages.Usage(1))
        if not isinstance(reply, messages.UsageReply):
            raise PermanentError(f"unexpected reply from the writer: {type(reply).__name__}")
        return reply.month, reply.spans
    month = month_of(time.time() + config.clock_offset_s)
    with Spool.open(config.spool_dir, segment_max_bytes=config.spool_segment_bytes) as spool:
        _, live = replay_ledgers(spool)
    return month, {org: live.used(org, month) for org in live.usage}


def usage_rows(config: Config, orgs: list[Org]) -> list[tuple]:
    month, spans = usage_by_org(config)
    return [(o.id, o.name, month, spans.get(o.id, 0),
             "unlimited" if o.monthly_span_quota is None else o.monthly_span_quota) for o in orgs]  # fmt: skip
