"""``pcapwire worker --job`` as a process (result on stdout, exit codes, SIGTERM) and
:func:`pcapwire.jobs.local.run`, which runs it for the API (same results as in-process,
cancellation kills the child)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import corpus_file
from hashlistutil import http_pcap
from pcapwire.jobs import Job, JobResult, local
from pcapwire.jobs.model import MAX_JOB_BYTES
from pcapwire.jobs.runner import run_job
from pcapwire.store import Store


def worker(root: Path, stdin: bytes, *args: str) -> tuple[int, JobResult]:
    proc = subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(root),
                           "worker", "--job", "-", *args], input=stdin, capture_output=True,
                          check=False, timeout=60)
    [line] = proc.stdout.splitlines()
    return proc.returncode, JobResult.from_json(line)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "acme"
    path.mkdir()
    return path


def test_worker_exit_codes(root: Path, tmp_path: Path) -> None:
    ping = Job("ping", "p1", "acme")
    rc, result = worker(root, ping.to_json(), "--sensor", "site-a")
    assert (rc, result.ok, result.worker) == (0, True, "site-a")
    rc, result = worker(root, Job("extract", "e1", "acme", {"pcap": "no.pcap", "out": "c"})
                        .to_json())
    assert (rc, result.code, result.unit_id) == (1, "not_found", "e1")
    for raw, code in ((Job("nope", "n1", "acme").to_json(), "unknown_kind"),
                      (Job("extract", "e2", "acme", {"pcap": "/etc/passwd", "out": "c"})
                       .to_json(), "path_not_allowed"),
                      (b"{not json", "invalid_job"),
                      (b'{"kind": "ping", "unit_id": "../x", "tenant": "a"}', "invalid_job"),
                      (b'{"kind": "ping"}', "invalid_job"),
                      (b" " * (MAX_JOB_BYTES + 1), "invalid_job")):
        rc, result = worker(root, raw)
        assert (rc, result.ok, result.code) == (2, False, code), raw[:40]
    job_file = tmp_path / "job.json"
    job_file.write_bytes(ping.to_json())
    proc = subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(root),
                           "worker", "--job", str(job_file)], capture_output=True, check=False)
    assert (proc.returncode, JobResult.from_json(proc.stdout).ok) == (0, True)
    nats = subprocess.run([sys.executable, "-m", "pcapwire.cli", "--data-dir", str(root),
                           "worker", "--nats", "nats://127.0.0.1:1"], capture_output=True,
                          check=False)
    assert nats.returncode == 2 and b"--sensor" in nats.stderr


async def test_local_run_gives_what_the_runner_gives(root: Path) -> None:
    http_pcap(root / "dl.pcap", [("a.bin", b"payload " * 500)])
    job = Job("extract", "e1", "acme", {"pcap": "dl.pcap", "out": "local.carve"})
    child = await local.run(job, root)
    same = run_job(Job("extract", "e1", "acme", {"pcap": "dl.pcap", "out": "own.carve"}),
                   root, child.worker)
    assert child.ok and child == same
    assert (root / "local.carve" / "files.jsonl").read_bytes() == (
        root / "own.carve" / "files.jsonl").read_bytes().replace(b"own.carve", b"local.carve")
    shared = root.parent / "pcaps"
    shared.mkdir()
    (shared / "get.pcap").write_bytes(corpus_file("zeek-http-get").read_bytes())
    ingest = Job("ingest", "i1", "acme", {"paths": [str(shared / "get.pcap")]})
    assert (await local.run(ingest, root)).code == "path_not_allowed"
    assert (await local.run(ingest, root, read_roots=[shared])).data["packets"] == 14


async def test_cancelling_local_run_kills_the_worker(root: Path) -> None:
    (root / "get.pcap").write_bytes(corpus_file("zeek-http-get").read_bytes())
    Store(root).close()
    held = sqlite3.connect(root / "catalog.sqlite", isolation_level=None)
    held.execute("BEGIN EXCLUSIVE")  # the ingest waits for the catalog (busy_timeout)
    pids: list[int] = []
    spawned = asyncio.Event()

    def started(pid: int) -> None:
        pids.append(pid)
        spawned.set()

    task = asyncio.ensure_future(local.run(Job("ingest", "i1", "acme", {"paths": ["get.pcap"]}),
                                           root, started=started))
    try:
        await spawned.wait()  # the worker runs; it cannot finish while the catalog is held
        task.cancel()
        await asyncio.wait({task})
        assert task.cancelled()
        with pytest.raises(ProcessLookupError):  # killed and reaped
            os.kill(pids[0], 0)
    finally:
        held.rollback()
        held.close()
    with Store(root) as store:
        assert store.catalog.stats()["packets"] == 0


def test_a_worker_serves_one_store_while_another_job_ingests(root: Path) -> None:
    """The store's ingest lock holds across worker processes: a second ingest is busy."""
    (root / "get.pcap").write_bytes(corpus_file("zeek-http-get").read_bytes())
    with Store(root) as store, store.ingest_lock():
        rc, result = worker(root, Job("ingest", "i2", "acme", {"paths": ["get.pcap"]})
                            .to_json())
    assert (rc, result.code) == (1, "ingest_busy")
    rc, result = worker(root, Job("ingest", "i3", "acme", {"paths": ["get.pcap"]}).to_json())
    assert (rc, result.data["packets"]) == (0, 14)
