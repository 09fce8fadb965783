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
OTLP_ENCODINGS = (*ENCODINGS, "deflate")  # OTLP/HTTP clients may send deflate; /ingest refuses it


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
    if encoding == "deflate":  # zlib-wrapped as HTTP says; raw deflate as some clients send
        if len(body) >= 2 and (body[0] * 256 + body[1]) % 31 == 0 and body[0] & 0x0F == 8:
            return _gunzip(body, limit, wbits=15, name="deflate")
        return _gunzip(body, limit, wbits=-15, name="deflate")
    raise ValueError(f"unsupported encoding {encoding!r}")  # the front refused it with 415 already


def _gunzip(body: bytes | bytearray, limit: int, wbits: int = 31, name: str = "gzip") -> bytes | TooLarge | Undecodable:
    out = bytearray()
    data = body
    try:
        while data:  # concatenated gzip members are one stream (RFC 1952)
            inflater = zlib.decompressobj(wbits=wbits)
            while data:
                out += inflater.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    return TooLarge(limit)
                data = inflater.unconsumed_tail
            if not inflater.eof:
                return Undecodable(f"{name} stream is truncated")
            data = inflater.unused_data if wbits == 31 else b""
    except zlib.error as exc:
        return Undecodable(f"{name}: {exc}")
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
