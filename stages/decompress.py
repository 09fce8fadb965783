"""Content-Encoding decoding under a size cap (SPEC §1): a decompression bomb is a 413, not an OOM.

Plain functions, no I/O. The output never grows past `limit + 1` bytes whatever the input claims:
gzip is inflated with `max_length`, zstd is read through a bounded stream reader.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import zstandard

ENCODINGS = ("identity", "gzip", "zstd")


@dataclass(frozen=True, slots=True)
class TooLarge:
    limit: int


@dataclass(frozen=True, slots=True)
class Undecodable:
    message: str


def decompress(body: bytes | bytearray, encoding: str, limit: int) -> bytes | bytearray | TooLarge | Undecodable:
    if encoding == "identity":
        return body if len(body) <= limit else TooLarge(limit)
    if encoding == "gzip":
        return _gunzip(body, limit)
    if encoding == "zstd":
        return _unzstd(body, limit)
    raise ValueError(f"unsupported encoding {encoding!r}")  # the front refused it with 415 already


def _gunzip(body: bytes | bytearray, limit: int) -> bytes | TooLarge | Undecodable:
    out = bytearray()
    data = body
    try:
        while data:  # concatenated gzip members are one stream (RFC 1952)
            inflater = zlib.decompressobj(wbits=31)
            while data:
                out += inflater.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    return TooLarge(limit)
                data = inflater.unconsumed_tail
            if not inflater.eof:
                return Undecodable("gzip stream is truncated")
            data = inflater.unused_data
    except zlib.error as exc:
        return Undecodable(f"gzip: {exc}")
    return bytes(out)


def _unzstd(body: bytes | bytearray, limit: int) -> bytes | TooLarge | Undecodable:
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(body), read_across_frames=True
        )
        out = reader.read(limit + 1)
        while len(out) <= limit:
            more = reader.read(limit + 1 - len(out))
            if not more:
                break
            out += more
    except zstandard.ZstdError as exc:
        return Undecodable(f"zstd: {exc}")
    return TooLarge(limit) if len(out) > limit else out
