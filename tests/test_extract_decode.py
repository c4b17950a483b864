"""Content-Encoding decoding and its named limits (pcapwire.extract.decode)."""

from __future__ import annotations

import gzip
import random
import zlib

import brotli
import pytest
from pcapwire.extract import decode
from pcapwire.extract.decode import ContentDecoder, DecodeError, DecodeLimitExceeded, decode_body

TEXT = b"pcapwire carves files out of HTTP bodies.\n" * 500


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("codings,encoded", [
    (["gzip"], gzip.compress(TEXT)),
    (["x-gzip"], gzip.compress(TEXT)),
    (["deflate"], zlib.compress(TEXT)),          # RFC 9110: zlib-wrapped
    (["deflate"], _raw_deflate(TEXT)),           # what many servers send instead
    (["br"], brotli.compress(TEXT)),
    (["gzip", "br"], brotli.compress(gzip.compress(TEXT))),  # applied in order, undone reversed
])
def test_decodes_each_coding(codings: list[str], encoded: bytes) -> None:
    assert decode_body(encoded, codings) == TEXT


def test_multi_member_gzip_and_trailing_garbage() -> None:
    body = gzip.compress(TEXT[:100]) + gzip.compress(TEXT[100:]) + b"\r\n\0junk"
    assert decode_body(body, ["gzip"]) == TEXT


def test_incremental_feed_matches_whole() -> None:
    enc = gzip.compress(TEXT)
    dec = ContentDecoder(["gzip"])
    out = b"".join(dec.feed(enc[i:i + 7]) for i in range(0, len(enc), 7)) + dec.finish()
    assert out == TEXT and dec.consumed == len(enc) and dec.produced == len(TEXT)


def test_parse_codings_drops_identity() -> None:
    assert decode.parse_codings(" GZip , identity,br") == ["gzip", "br"]
    assert decode.supported(["gzip", "deflate", "br"]) and not decode.supported(["zstd"])


def test_invalid_data_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="invalid"):
        decode_body(b"\x1f\x8b\x08\x00garbage-garbage", ["gzip"])
    with pytest.raises(DecodeError, match="unsupported"):
        ContentDecoder(["compress"])


def test_ratio_limit_stops_a_bomb_early() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)  # ~64 KiB in, 64 MiB out
    dec = ContentDecoder(["gzip"])
    with pytest.raises(DecodeLimitExceeded) as info:
        for i in range(0, len(bomb), 4096):
            dec.feed(bomb[i:i + 4096])
    assert info.value.limit == "MAX_DECOMPRESSION_RATIO"
    assert info.value.value == decode.MAX_DECOMPRESSION_RATIO == 200
    # stopped soon after the ratio check started, far before the 64 MiB
    assert decode.RATIO_CHECK_AFTER < dec.produced <= decode.RATIO_CHECK_AFTER + 2 * 4096 * 1100


def test_size_limit() -> None:
    data = random.Random(5).randbytes(2 * 1024 * 1024)  # incompressible: ratio about 1
    with pytest.raises(DecodeLimitExceeded) as info:
        decode_body(gzip.compress(data), ["gzip"], max_size=1024 * 1024)
    assert info.value.limit == "MAX_DECOMPRESSED_SIZE"
    assert decode_body(gzip.compress(data), ["gzip"], max_size=len(data)) == data
    assert decode.MAX_DECOMPRESSED_SIZE == 256 * 1024 * 1024


def test_brotli_bomb_is_stopped_too() -> None:
    bomb = brotli.compress(b"A" * (32 * 1024 * 1024))
    with pytest.raises(DecodeLimitExceeded, match="MAX_DECOMPRESSION_RATIO"):
        decode_body(bomb, ["br"])


def test_encoding_layers_limit() -> None:
    assert decode.MAX_ENCODING_LAYERS == 3
    with pytest.raises(DecodeLimitExceeded, match="MAX_ENCODING_LAYERS"):
        ContentDecoder(["gzip"] * 4)
