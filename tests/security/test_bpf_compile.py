"""Security follow-up of 9.2/9.8: libpcap's compiler takes seconds on long expressions.
It never runs on the API's event loop (the native compile releases the GIL and the API
compiles in a worker thread before planning), and one API query may not have more than
MAX_BPF_PORT_TERMS port/portrange terms, the terms that make it slow."""

from __future__ import annotations

import threading

from apiutil import Tokens
from pcapwire import _native
from pcapwire.api import ApiConfig, create_app
from pcapwire.api.limits import MAX_BPF_PORT_TERMS
from pcapwire.query import bpfcache


def _ports(n: int) -> str:
    return " or ".join(f"portrange {i}-{i + 1}" for i in range(1, n + 1))


def test_the_native_compile_lets_other_threads_run():
    expr = " or ".join(f"host 10.0.{i // 250}.{i % 250}" for i in range(1, 300))
    done = threading.Event()
    spins = 0

    def compile_it() -> None:
        _native.Filter(expr, 1, 65535)
        done.set()

    worker = threading.Thread(target=compile_it)
    worker.start()
    while not done.is_set():  # with the GIL held by the compile, this loop could not run
        spins += 1
    worker.join()
    assert spins > 1000


def test_compiled_filters_and_errors_are_cached():
    bpfcache._cache.clear()
    a = bpfcache.compiled("tcp port 80", 1, 65535)
    assert bpfcache.compiled("tcp port 80", 1, 65535) is a
    assert bpfcache.compiled("tcp port 80", 1, 262144) is not a
    for _ in range(2):
        try:
            bpfcache.compiled("tcp port", 1, 65535)
        except Exception as exc:  # noqa: BLE001 - the same QueryError both times
            assert str(exc).startswith("invalid BPF expression 'tcp port': ")
    assert len(bpfcache._cache) == 3


async def test_api_refuses_more_port_terms_than_the_limit(aiohttp_client, tmp_path):
    tokens = Tokens(tmp_path)
    client = await aiohttp_client(create_app(ApiConfig(data_dir=tmp_path)))
    headers = tokens.headers("acme", "analyst")
    ok = await client.post("/api/v1/queries/check", json={"bpf": _ports(MAX_BPF_PORT_TERMS)},
                           headers=headers)
    assert await ok.json() == {"valid": True, "error": None}
    over = _ports(MAX_BPF_PORT_TERMS + 1)
    check = await (await client.post("/api/v1/queries/check", json={"bpf": over},
                                     headers=headers)).json()
    message = (f"the BPF expression has {MAX_BPF_PORT_TERMS + 1} port/portrange terms, more "
               f"than the limit of {MAX_BPF_PORT_TERMS} (max_bpf_port_terms) that libpcap "
               "compiles in reasonable time; use a portrange, or several queries")
    assert check == {"valid": False, "error": message}
    resp = await client.post("/api/v1/queries", json={"bpf": over}, headers=headers)
    body = await resp.json()
    assert (resp.status, body["message"]) == (400, message)
