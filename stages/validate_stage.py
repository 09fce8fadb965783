"""The validate stage (front worker): decompress, decode and validate each batch.

Logic lives in plain functions (`check_job` here, `stages.validate.decode_batch`,
`stages.decompress.decompress`); this module adds only the actor loop around them.
"""

from __future__ import annotations

from dataclasses import replace

import trio

from pipeline.config import Config
from pipeline.jobs import Job, Rejected, answer
from pipeline.messages import AppendReply
from stages.decompress import TooLarge, Undecodable, decompress
from stages.otlp import check_otlp
from stages.payload import Batch
from stages.validate import InvalidBody, InvalidPayload, decode_batch


# --------------------------------------------------------------------------- the stage
async def run_validate(
    config: Config,
    receive: trio.MemoryReceiveChannel[Job],
    send: trio.MemorySendChannel[Job],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Decompress, decode and validate each job's body; pass valid batches on, answer the rest.

    Owns both channel ends: returns, closing `send`, when `receive` ends."""
    async with receive, send:
        task_status.started()
        async for job in receive:
            result = check_job(job, config.max_decompressed_bytes, config.max_issues)
            if isinstance(result, Rejected):
                answer(job, result)
            elif not result.traces:  # an OTLP request with no usable span: nothing to store
                answer(job, AppendReply(0, "ok", 0))
            else:
                await send.send(replace(job, body=b"", payload=result))


def check_job(job: Job, max_decompressed_bytes: int, max_issues: int) -> Batch | Rejected:
    """Decompression under its cap, then decoding and validation, as a value. Plain function."""
    if job.media.startswith("otlp-"):
        return check_otlp(job.body, job.media, job.encoding, max_decompressed_bytes, job.partial)
    body = decompress(job.body, job.encoding, max_decompressed_bytes)
    if isinstance(body, TooLarge):
        return Rejected(413, {"error": "payload_too_large", "limit": body.limit})
    if isinstance(body, Undecodable):
        return Rejected(400, {"error": "invalid_body", "message": body.message})
    result = decode_batch(body, job.media, max_issues=max_issues)  # type: ignore[arg-type]
    if isinstance(result, InvalidBody):
        return Rejected(400, {"error": "invalid_body", "message": result.message})
    if isinstance(result, InvalidPayload):
        return Rejected(400, {"error": "invalid_payload", "issues": result.issues})
    return result
