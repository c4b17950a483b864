"""Security finding 9.4/9.6: compressed uploads are limited (decompressed size, ratio, the
tenant's quota) and say where a limit stopped them; a truncated ``.pcap.gz`` keeps every
packet decompressed before the damage, as many as ``zcat | tcpdump`` reads."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from apiutil import PCAP_TYPE, Tokens, upload
from conftest import corpus_file
from pcaputil import read_records
from pcapwire.api import ApiConfig, create_app, limits
from pcapwire.api.keys import TENANTS
from pcapwire.query import QuerySpec
from pcapwire.store import Store
from pcapwire.store.limits import RATIO_GRACE_BYTES, tree_bytes
from pcapwire.synth import generate

GZ_TYPE = "application/gzip"
# The bomb: BOMB_PACKETS identical records of RECORD bytes (16-byte header + packet), a
# 24-byte pcap header before them; ~20 MB that gzip -9 makes ~45 KB (about 450:1).
PACKET = (b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
          + struct.pack("!BBHHHBBH4s4s", 0x45, 0, 986, 1, 0, 64, 17, 0, b"\n\0\0\1",
                        b"\n\0\0\2") + struct.pack("!HHHH", 1000, 2000, 966, 0) + bytes(958))
RECORD = struct.pack("<IIII", 1_700_000_000, 0, len(PACKET), len(PACKET)) + PACKET
BOMB_PACKETS = 20_000
# The catalog pages an ingest of one flow adds (SQLite pages and their WAL copies): the most
# a store grows beyond the packet bytes a limit lets in.
INDEX_SLACK = 256 * 1024


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.pcap.gz"
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + RECORD * BOMB_PACKETS
    path.write_bytes(gzip.compress(pcap, compresslevel=9))
    assert len(pcap) / path.stat().st_size > 400  # the probe sent 535:1
    return path


def kept_before(offset: int) -> int:
    """Packets of the bomb wholly before ``offset`` of its decompressed stream."""
    return (offset - 24) // len(RECORD)


async def client_for(aiohttp_client: Any, data: Path, **config: Any) -> Any:
    return await aiohttp_client(create_app(ApiConfig(data_dir=data, **config)))


def stored_packets(client: Any, tenant: str = "acme") -> int:
    return int(client.app[TENANTS].get(tenant).catalog.stats()["packets"])


def segment_bytes(tenant_dir: Path) -> int:
    return sum(p.stat().st_size for p in (tenant_dir / "segments").rglob("*.pcap"))


async def post(client: Any, path: Path, headers: dict[str, str], ctype: str = GZ_TYPE,
               **params: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/api/v1/ingest", data=path.read_bytes(), params=params,
                             headers={**headers, "Content-Type": ctype})
    return resp.status, await resp.json()


# -- decompression limits ------------------------------------------------------------------
async def test_gzip_bomb_upload_is_refused_at_the_decompressed_size_limit(
        aiohttp_client: Any, tmp_path: Path, bomb: Path) -> None:
    limit = 2 * 2**20
    client = await client_for(aiohttp_client, tmp_path, max_decompressed_bytes=limit,
                              max_decompression_ratio=0)
    auth = Tokens(tmp_path).headers("acme", "analyst")
    tenant = tmp_path / "tenants" / "acme"
    client.app[TENANTS].get("acme")
    before = tree_bytes(tenant)
    status, body = await post(client, bomb, auth, filename="bomb.pcap.gz")
    assert (status, body["code"]) == (413, "decompressed_too_large")
    d = body["details"]
    assert (d["limit_name"], d["limit"], d["file"], d["offset"], d["decompressed"]) == (
        "max_decompressed_bytes", limit, "bomb.pcap.gz", limit, True)
    assert d["kept"]["packets"] == kept_before(limit) == stored_packets(client)
    assert "bomb.pcap.gz: stopped at byte 2097152 of its decompressed stream" in body["message"]
    assert "--max-decompressed-mb" in body["message"]  # what to do
    assert segment_bytes(tenant) <= limit
    assert tree_bytes(tenant) - before <= limit + INDEX_SLACK
    assert list((tenant / "uploads").iterdir()) == []


async def test_gzip_bomb_upload_is_refused_at_the_ratio_limit(
        aiohttp_client: Any, tmp_path: Path, bomb: Path) -> None:
    client = await client_for(aiohttp_client, tmp_path, max_decompression_ratio=50)
    auth = Tokens(tmp_path).headers("acme", "analyst")
    status, body = await post(client, bomb, auth, filename="bomb.pcap.gz")
    assert (status, body["code"]) == (413, "compression_ratio_too_high")
    d = body["details"]
    assert (d["limit_name"], d["limit"], d["offset"]) == (
        "max_decompression_ratio", 50, RATIO_GRACE_BYTES)
    assert 0 < d["compressed_offset"] < RATIO_GRACE_BYTES / 50
    assert d["kept"]["packets"] == kept_before(RATIO_GRACE_BYTES) == stored_packets(client)
    assert segment_bytes(tmp_path / "tenants" / "acme") <= RATIO_GRACE_BYTES


async def test_default_limits_refuse_a_bomb_like_the_probes(
        aiohttp_client: Any, tmp_path: Path, bomb: Path) -> None:
    assert (limits.MAX_DECOMPRESSION_RATIO, limits.MAX_DECOMPRESSED_BYTES) == (200, 16 * 2**30)
    client = await client_for(aiohttp_client, tmp_path)
    status, body = await post(client, bomb, Tokens(tmp_path).headers("acme", "analyst"))
    assert (status, body["details"]["limit_name"]) == (413, "max_decompression_ratio")
    assert stored_packets(client) == kept_before(RATIO_GRACE_BYTES)


# -- tenant quota --------------------------------------------------------------------------
async def test_tenant_quota_refuses_the_upload_that_would_exceed_it(
        aiohttp_client: Any, tmp_path: Path, bomb: Path) -> None:
    quota = 6 * 2**20
    first, second = tmp_path / "first.pcap", tmp_path / "second.pcap"
    generate(first, 2 * 2**20, seed=1)
    generate(second, 5 * 2**20, seed=2)
    data = tmp_path / "data"
    client = await client_for(aiohttp_client, data, tenant_quota_bytes=quota,
                              max_decompression_ratio=0)
    tokens = Tokens(data)
    auth = tokens.headers("acme", "analyst")
    tenant = data / "tenants" / "acme"
    summary = await upload(client, first, tokens["acme", "analyst"])
    assert summary["packets"] == len(read_records(first.read_bytes())[1])
    used = tree_bytes(tenant)
    assert used + second.stat().st_size > quota

    # a plain capture larger than the room left: refused while it streams in, nothing kept
    status, body = await post(client, second, auth, PCAP_TYPE)
    assert (status, body["code"], body["details"]["limit_name"]) == (
        507, "tenant_quota_exceeded", "tenant_quota_bytes")
    assert body["details"]["limit"] == quota and "--tenant-quota-gb" in body["message"]
    assert stored_packets(client) == summary["packets"]
    assert list((tenant / "uploads").iterdir()) == []

    # a small .gz that decompresses past the quota: stopped while writing; what was kept
    # (the bomb's packets before the byte named) is exactly what the store gained
    status, body = await post(client, bomb, auth, filename="bomb.pcap.gz")
    assert (status, body["code"]) == (507, "tenant_quota_exceeded")
    d = body["details"]
    kept = d["kept"]["packets"]
    assert stored_packets(client) == summary["packets"] + kept
    assert d["offset"] == 24 + kept * len(RECORD) and d["decompressed"]
    assert f"stopped at byte {d['offset']} of its decompressed stream" in body["message"]
    assert tree_bytes(tenant) <= quota
    # other tenants are not affected
    other = await upload(client, first, tokens["globex", "analyst"])
    assert other["packets"] == summary["packets"]


# -- truncated gzip ------------------------------------------------------------------------
def cut(src: Path, dst: Path, fraction: float = 0.99) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * fraction)])
    return dst


def zcat_tcpdump(path: Path, tmp: Path) -> tuple[int, bytes, int]:
    """(bytes zcat writes, what ``zcat PATH | tcpdump -r - -w OUT`` writes, its packets)."""
    out = tmp / (path.name + ".tcpdump.pcap")
    zcat = subprocess.run(["zcat", str(path)], capture_output=True, check=False)
    subprocess.run(["tcpdump", "-r", "-", "-w", str(out)], input=zcat.stdout,
                   capture_output=True, check=False)
    data = out.read_bytes()
    return len(zcat.stdout), data, len(read_records(data)[1])


@pytest.fixture
def big_gz(tmp_path: Path) -> Path:
    """A generated capture of 12 MiB, gzip'd: more than one 8 MiB read block."""
    plain = tmp_path / "big.pcap"
    generate(plain, 12 * 2**20, seed=4)
    gz = tmp_path / "big.pcap.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=6))
    return gz


@pytest.mark.parametrize("which", ["corpus", "generated"])
def test_truncated_gzip_keeps_every_packet_zcat_reads(tmp_path: Path, big_gz: Path,
                                                      which: str) -> None:
    src = corpus_file("zeek-gzip-pcap-iso-download") if which == "corpus" else big_gz
    damaged = cut(src, tmp_path / "cut.pcap.gz")
    out_len, expected, packets = zcat_tcpdump(damaged, tmp_path)
    if which == "corpus":
        assert packets == 286  # of 289
    with Store(tmp_path / "s") as store:
        report = store.ingest([damaged])
        assert report.packets == packets
        assert store.query_engine().to_bytes(QuerySpec()) == expected
    (gz_off, gz_msg), (rec_off, rec_msg) = report.files[0].errors
    assert gz_off == out_len and f"gzip stream broken after {out_len} decompressed" in gz_msg
    assert "truncated at compressed byte" in gz_msg
    assert rec_off == len(expected) and "truncated record" in rec_msg


def test_gzip_with_a_bad_crc_keeps_every_packet(tmp_path: Path) -> None:
    data = bytearray(corpus_file("zeek-gzip-pcap-iso-download").read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 in the trailer
    bad = tmp_path / "badcrc.pcap.gz"
    bad.write_bytes(bytes(data))
    _, expected, packets = zcat_tcpdump(bad, tmp_path)
    with Store(tmp_path / "s") as store:
        report = store.ingest([bad])
        assert report.packets == packets == 289
        assert store.query_engine().to_bytes(QuerySpec()) == expected
    ((off, msg),) = report.files[0].errors
    assert off == 382478 and "incorrect data check" in msg


def test_concatenated_gzip_members_are_one_stream(tmp_path: Path) -> None:
    plain = gzip.decompress(corpus_file("zeek-gzip-pcap-iso-download").read_bytes())
    half = 24 + sum(len(r) for r in read_records(plain)[1][:100])
    two = tmp_path / "two.pcap.gz"
    two.write_bytes(gzip.compress(plain[:half]) + gzip.compress(plain[half:]) + bytes(10))
    _, expected, packets = zcat_tcpdump(two, tmp_path)
    with Store(tmp_path / "s") as store:
        report = store.ingest([two])
        assert report.ok, report.errors
        assert report.packets == packets == 289
        assert store.query_engine().to_bytes(QuerySpec()) == expected


# -- the CLI -------------------------------------------------------------------------------
def pcapwire(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(data),
                           "ingest", *args], capture_output=True, text=True, check=False)


def test_cli_ingest_of_a_truncated_gzip_is_partial_with_the_offset(tmp_path: Path) -> None:
    damaged = cut(corpus_file("zeek-gzip-pcap-iso-download"), tmp_path / "cut.pcap.gz")
    out_len, _, packets = zcat_tcpdump(damaged, tmp_path)
    text = pcapwire(tmp_path / "s", str(damaged))
    assert text.returncode == 1
    assert f"ingested {packets} packets" in text.stdout
    assert f"{damaged}: byte {out_len}: gzip stream broken after {out_len} " in text.stderr
    as_json = pcapwire(tmp_path / "j", "--json", str(damaged))
    assert as_json.returncode == 1
    summary = json.loads(as_json.stdout)
    assert summary["packets"] == packets == 286 and "stopped" not in summary


def test_cli_decompression_limit_stops_then_a_higher_limit_resumes(tmp_path: Path,
                                                                   bomb: Path) -> None:
    data = tmp_path / "s"
    stopped = pcapwire(data, "--json", "--max-decompressed-mb", "1", str(bomb))
    assert stopped.returncode == 1
    (stop,) = json.loads(stopped.stdout)["stopped"]
    assert (stop["limit_name"], stop["offset"], stop["packets_kept"]) == (
        "max_decompressed_bytes", 2**20, kept_before(2**20))
    text = pcapwire(data, "--max-decompressed-mb", "1", str(bomb))
    assert "stopped at byte 1048576 of its decompressed stream" in text.stderr
    assert "raise --max-decompressed-mb" in text.stderr
    rest = pcapwire(data, "--json", str(bomb))  # the CLI's default: no limit
    assert rest.returncode == 0, rest.stderr
    assert json.loads(rest.stdout)["packets"] == BOMB_PACKETS - kept_before(2**20)
    with Store(data) as store:
        assert store.catalog.stats()["packets"] == BOMB_PACKETS


def test_cli_quota_is_never_exceeded(tmp_path: Path, bomb: Path) -> None:
    data = tmp_path / "s"
    result = pcapwire(data, "--json", "--quota-mb", "5", str(bomb))
    assert result.returncode == 1
    (stop,) = json.loads(result.stdout)["stopped"]
    assert stop["limit_name"] == "quota_bytes" and stop["packets_kept"] > 0
    assert stop["offset"] == 24 + stop["packets_kept"] * len(RECORD)
    assert tree_bytes(data) <= 5 * 2**20


def test_plain_capture_still_ingests_under_default_api_limits(tmp_path: Path) -> None:
    """The limits leave ordinary input alone: the corpus .gz (50:1) goes in whole."""
    path = corpus_file("zeek-gzip-pcap-iso-download")
    api = ApiConfig(data_dir=tmp_path).ingest_limits
    with Store(tmp_path / "s") as store:
        report = store.ingest([path], limits=api)
        assert report.ok and report.packets == 289
