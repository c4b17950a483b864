"""The index's native postings (core/native/postings.c, pcapwire._native.index_add,
group_add, key_order, doc_time_us) give exactly what their Python statement in
pcapwire.search.index gives: the walk (postings and _value), the grouping (one posting a
value a document) and the B-tree order, on fixed-seed random documents of every value
kind the walk dispatches on, and the edges (cut, case folds, dates, addresses)."""

from __future__ import annotations

import random
import string
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pcapwire import _native
from pcapwire.search import ecs
from pcapwire.search import index as ix
from pcapwire.search.fields import FIELDS, OPAQUE_OBJECTS
from pcapwire.search.values import iso_us, parse_ip

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
from postings_check import (  # noqa: E402
    check,
    reference_date_us,
    reference_groups,
    reference_key_order,
)

SEED = 20261207
#: Random documents compared (a few seconds).
DOCS = 3000
#: Random inputs of the fuzz harness's check (tests/fuzz/postings_check.py).
FUZZ_INPUTS = 3000


def _native_walk(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any],
                                                      list[dict[str, str] | None]]:
    terms: dict[str, dict[Any, list[int]]] = {}
    nums: dict[str, dict[Any, list[int]]] = {}
    texts = [_native.index_add(doc_id, body, ix._ROOT, ix._value, terms, nums,
                               ix.MAX_TERM_CHARS) for doc_id, body in enumerate(docs)]
    return terms, nums, texts


_NAMES = sorted(FIELDS)
_WORDS = ["GET", "get", "Example.COM", "straße", "STRASSE", "ǅ", "İstanbul", "ﬁle", "x",
          "", " ", "a\nb", "10.0.0.1", "evil.example", "ΣΑΣ", "\u00e9t\u00e9", "\x00",
          "abc\u0301"]


def _text(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.5:
        return rng.choice(_WORDS)
    if pick < 0.6:
        return rng.choice(string.ascii_letters) * rng.choice((129, 511, 512, 513, 700))
    return "".join(rng.choice(string.ascii_letters + "0123456789.-_ ÄÖü") for _ in
                   range(rng.randrange(0, 20)))


def _date(rng: random.Random) -> Any:
    pick = rng.random()
    if pick < 0.5:  # the documents' own form, valid times of years 1-9999
        us = rng.randrange(-62135596800 * 10**6, 253402300800 * 10**6)
        dt = datetime(1970, 1, 1) + timedelta(microseconds=us)
        return f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}.{dt.microsecond:06d}Z"
    if pick < 0.8:  # that form, one part out of range or misplaced
        y, mo, d, h, mi, s = (rng.choice(("0000", "2023", "2024", "1900", "2000")),
                              rng.choice(("00", "01", "02", "12", "13")),
                              rng.choice(("00", "28", "29", "30", "31", "32")),
                              rng.choice(("00", "23", "24")), rng.choice(("00", "59", "60")),
                              rng.choice(("00", "59", "60", "61")))
        sep, end = rng.choice("T T t"), rng.choice(("Z", "Z", "z", "+"))
        return f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}.{rng.randrange(10**6):06d}{end}"
    return rng.choice(("2023-11-14T22:13:20Z", "2023-11-14", "2023-11-14T22:13:20.5+01:00",
                       "2023-11-14 22:13:20.000003", "１２３", "now", 1.7e9, 17, True, None,
                       "2023-11-14T22:13:20.000003Z\x00"))


def _ip(rng: random.Random) -> Any:
    pick = rng.random()
    if pick < 0.5:
        return ".".join(str(rng.randrange(256)) for _ in range(4))
    return rng.choice(("010.0.0.1", "256.1.1.1", "1.2.3", "1.2.3.4.5", " 1.2.3.4", "1.2.3.4 ",
                       "::1", "[::1]", "fe80::1%eth0", "2001:db8::", "::ffff:1.2.3.4", "",
                       "1.2.3.4\x00", "１.２.３.４", "x" * 20, 3232235777, None, True))


def _value(rng: random.Random, name: str, depth: int) -> Any:
    ftype = FIELDS.get(name)
    pick = rng.random()
    if pick < 0.08 and depth < 3:
        return [_value(rng, name, depth + 1) for _ in range(rng.randrange(0, 4))]
    if pick < 0.12:
        return rng.choice((None, True, False, 3.7, -2, 2**40, (1, "a"), b"x"))
    if ftype == "date":
        return _date(rng)
    if ftype == "ip":
        return _ip(rng)
    if ftype == "long":
        return rng.choice((rng.randrange(-10**6, 10**6), rng.random() * 1e4, "12", -0.5,
                           2**62))
    return _text(rng) if rng.random() < 0.9 else rng.randrange(1000)


def _object(rng: random.Random, prefix: str, depth: int) -> dict[str, Any]:
    """Keys leading to indexed fields (and some that lead nowhere), nested as the dotted
    names say, some objects inside lists, an opaque object now and then."""
    obj: dict[str, Any] = {}
    names = [n[len(prefix):] for n in _NAMES if n.startswith(prefix)]
    for _ in range(rng.randrange(1, 8)):
        rest = rng.choice(names) if names and rng.random() < 0.85 else rng.choice(
            ("observer", "ecs", "unknown", "pivot", "evidence"))
        head, dot, _tail = rest.partition(".")
        if dot and depth < 4:
            child = _object(rng, prefix + head + ".", depth + 1)
            obj[head] = [child, _object(rng, prefix + head + ".", depth + 1)] \
                if rng.random() < 0.15 else child
        elif prefix + rest in OPAQUE_OBJECTS or rest in ("pivot", "evidence"):
            obj[rest] = {"url": {"domain": "hidden.example"}, "source": {"ip": "1.1.1.1"}}
        else:
            obj[rest] = _value(rng, prefix + rest, 0)
    return obj


def test_native_walk_and_groups_are_the_python_ones_on_random_documents() -> None:
    rng = random.Random(SEED)
    docs = [_object(rng, "", 0) for _ in range(DOCS)]
    docs += [{"pcapwire": _object(rng, "pcapwire.", 1)} for _ in range(100)]
    ref = reference_groups([{k: v for k, v in d.items()} for d in docs])
    got = _native_walk(docs)
    assert got[2] == ref[2]
    assert [list(t) for t in got[2] if t is not None] == [list(t) for t in ref[2]]  # order
    assert got[0] == ref[0] and got[1] == ref[1]
    # every kind of value is there: keywords, addresses, text columns, longs, dates
    assert sum(len(d) for v in ref[0].values() for d in v.values()) > 5 * DOCS
    kinds = {FIELDS[name] for groups in ref[:2] for name in groups}
    assert kinds == {"keyword", "ip", "text", "long", "date"}
    assert sum(len(t) > 1 for t in ref[2]) > DOCS // 10


def test_real_documents_give_the_same_postings() -> None:
    """Documents as the builders make them (EVE http, a flow, a verdict's shape)."""
    origin = ecs.Origin("case-1", "run-1", "q-1", "ids")
    eve = {"timestamp": "2023-11-14T22:13:20.000003+0000", "event_type": "http",
           "src_ip": "10.1.2.3", "src_port": 5555, "dest_ip": "192.0.2.9", "dest_port": 80,
           "proto": "TCP", "app_proto": "http",
           "http": {"hostname": "Demo.Example", "url": "/a/B?c=1", "http_method": "GET",
                    "status": 200, "http_user_agent": "Mozilla/5.0 (X11)", "length": 42}}
    doc = ecs.eve_doc(eve, origin, 1, 7)
    assert doc is not None
    flow = ecs.flow_doc({"flow_id": 3, "proto": "udp", "src_ip": "2001:db8::1",
                         "src_port": 53, "dest_ip": "2001:db8::2", "dest_port": 5353,
                         "pkts_toserver": 1, "pkts_toclient": 2, "bytes_toserver": 80,
                         "bytes_toclient": 90}, 1_700_000_000_000_000_000,
                        1_700_000_001_000_000_000)
    docs = [doc.body, flow.body]
    assert _native_walk(docs) == reference_groups(docs)


def test_a_container_of_a_subclass_is_left_to_the_python_walk() -> None:
    class Obj(dict):  # type: ignore[type-arg]
        pass

    class Items(list):  # type: ignore[type-arg]
        pass

    terms: dict[str, Any] = {}
    nums: dict[str, Any] = {}
    for body in ({"url": Obj(domain="a.example")}, {"tags": Items(["a"])},
                 {"dns": {"answers": [Obj(data="x")]}}, Obj(tags="t")):
        assert _native.index_add(1, body, ix._ROOT, ix._value, terms, nums, 512) is None
    assert terms == {} and nums == {}  # nothing added before it gave up
    groups_t: ix.Groups = {}
    groups_n: ix.Groups = {}
    text = ix._walk(4, {"url": Obj(domain="A.example"), "source": {"port": 53}},
                    groups_t, groups_n)
    assert text == {"anytext": "A.example"}
    assert groups_t == {"url.domain": {"a.example": [4]}}
    assert groups_n == {"source.port": {53: [4]}}


def test_errors_are_the_python_walks() -> None:
    for body, error in (({"url": {1: "x"}}, TypeError),  # a key that is not a name
                        ({"source": {"port": float("nan")}}, ValueError),
                        ({"source": {"port": float("inf")}}, OverflowError)):
        with pytest.raises(error):
            ix.postings(body)
        with pytest.raises(error):
            _native.index_add(1, body, ix._ROOT, ix._value, {}, {}, 512)
    with pytest.raises(TypeError, match="dict"):
        _native.index_add(1, {}, ix._ROOT, ix._value, [], {}, 512)
    with pytest.raises(ValueError, match="max_chars"):
        _native.index_add(1, {}, ix._ROOT, ix._value, {}, {}, -1)


def test_keywords_are_cut_and_folded_as_python_does() -> None:
    assert ix.MAX_TERM_CHARS == 512
    terms: dict[str, Any] = {}
    values = ["A" * 600, "ß" * 300, "abc", "ABC", "İ" * 300, "x" * 512, "y" * 513]
    _native.index_add(9, {"url": {"domain": values}}, ix._ROOT, ix._value, terms, {},
                      ix.MAX_TERM_CHARS)
    assert terms == {"url.domain": {v.casefold()[:512]: [9] for v in values}}
    assert set(map(len, terms["url.domain"])) == {512, 3}
    # ASCII without capitals is its own fold; the others are str.casefold's
    t2: dict[str, Any] = {}
    _native.index_add(1, {"rule": {"id": ["Straße", "é", "abc"]}}, ix._ROOT, ix._value, t2,
                      {}, 5)
    assert t2 == {"rule.id": {"strasse"[:5]: [1], "é": [1], "abc": [1]}}


def test_dates_in_the_documents_form_read_as_iso_us() -> None:
    rng = random.Random(SEED)
    for _ in range(20000):
        value = _date(rng)
        native = _native.doc_time_us(value)
        if native is not None:
            assert native == iso_us(value), value
        assert ix._date_us(value) == reference_date_us(value), value
    assert _native.doc_time_us("1970-01-01T00:00:00.000000Z") == 0
    assert _native.doc_time_us("0001-01-01T00:00:00.000000Z") == -62135596800 * 10**6
    assert _native.doc_time_us("9999-12-31T23:59:59.999999Z") == 253402300800 * 10**6 - 1
    assert _native.doc_time_us("2024-02-29T00:00:00.000000Z") is not None
    for refused in ("2023-02-29T00:00:00.000000Z", "0000-01-01T00:00:00.000000Z",
                    "2023-11-14T24:00:00.000000Z", "2023-11-14T22:13:20.00000Z",
                    "2023-11-14T22:13:20.000003+", 17, None):
        assert _native.doc_time_us(refused) is None


def test_dotted_ipv4_reads_as_parse_ip() -> None:
    rng = random.Random(SEED)
    seen = 0
    for _ in range(5000):
        value = _ip(rng)
        if not isinstance(value, str):
            continue
        terms: dict[str, Any] = {}
        _native.index_add(1, {"source": {"ip": value}}, ix._ROOT, ix._value, terms, {}, 512)
        key = parse_ip(value)
        assert terms == ({"source.ip": {key: [1]}} if key else {}), value
        seen += key is not None
    assert seen > 2000
    # a NUL is not an address (inet_pton's argument refused it: a ValueError failed the
    # batch before)
    assert parse_ip("1.2.3.4\x00") is None
    assert ix.postings({"source": {"ip": "1.2.3.4\x00"}})[0] == []
    terms = {}
    _native.index_add(1, {"source": {"ip": "1.2.3.4\x00"}}, ix._ROOT, ix._value, terms, {},
                      512)
    assert terms == {}


def test_key_order_is_sorted_field_then_value_with_reversed_values() -> None:
    rng = random.Random(SEED)
    for _ in range(200):
        names = rng.sample(_NAMES, rng.randrange(0, 12))
        ids = {n: (i + 1, -(i + 1) if rng.random() < 0.3 else 0) for i, n in
               enumerate(rng.sample(names, len(names)))}
        groups: dict[str, dict[Any, list[int]]] = {}
        for n in names:
            ints = rng.random() < 0.3
            groups[n] = {(rng.randrange(-50, 50) if ints and not ids[n][1] else _text(rng)):
                         sorted(rng.sample(range(100), rng.randrange(1, 5)))
                         for _ in range(rng.randrange(1, 30))}
        calls: list[str] = []

        def field_ids(name: str, ids: dict[str, tuple[int, int]] = ids,
                      calls: list[str] = calls) -> tuple[int, int]:
            calls.append(name)
            return ids[name]

        assert _native.key_order(groups, field_ids) == reference_key_order(groups, ids)
        assert calls == list(groups)  # once a name, in the order the batch met them
    with pytest.raises(TypeError):
        _native.key_order({"a": {"v": [1]}}, lambda name: "no")
    with pytest.raises(ZeroDivisionError):
        _native.key_order({"a": {"v": [1]}}, lambda name: 1 / 0)


def test_group_add_is_one_posting_a_value_a_document() -> None:
    groups: dict[str, Any] = {}
    _native.group_add(groups, 1, [("a", "x"), ("a", "x"), ("b", 2), ("a", "y")])
    _native.group_add(groups, 2, [("a", "x"), ("b", 2), ("b", 2)])
    _native.group_add(groups, 3, [])
    assert groups == {"a": {"x": [1, 2], "y": [1]}, "b": {2: [1, 2]}}
    with pytest.raises(TypeError, match="tuple"):
        _native.group_add(groups, 4, [("a", "x", "z")])


def test_origins_kept_are_bounded() -> None:
    assert ecs.ORIGINS_KEPT == 256
    ecs._NAMED.clear()
    for i in range(ecs.ORIGINS_KEPT + 2):
        assert ecs._named((f"c{i}", "", "q", "")) == (("case", f"c{i}"), ("query_id", "q"))
    assert len(ecs._NAMED) == 2  # cleared at 256, then two more
    assert ecs._named(("", "", "", "")) == ()


def test_us_iso_pads_microseconds() -> None:
    from pcapwire.search.values import us_iso

    assert us_iso(1_700_000_000_000_000) == "2023-11-14T22:13:20.000000Z"
    assert us_iso(1_700_000_000_999_999) == "2023-11-14T22:13:20.999999Z"
    assert us_iso(-1) == "1969-12-31T23:59:59.999999Z"
    assert datetime.fromisoformat(us_iso(1_700_000_000_000_042)) == datetime(
        2023, 11, 14, 22, 13, 20, 42, tzinfo=UTC)


def test_the_fuzz_check_on_fixed_seed_inputs() -> None:
    """The check fuzz_native.py runs under ASan, on random bytes and on pieces made to
    look like dates, addresses and keywords."""
    rng = random.Random(SEED)
    looks = [b"2023-11-14T22:13:20.000003Z", b"2024-02-30T00:00:00.000000Z", b"10.0.0.1",
             b"1.2.3.4\x00", b"::1", "Straße".encode(), b"A" * 600, b"9999-12-31T23:59:59.999999Z"]
    for _ in range(FUZZ_INPUTS):
        pieces = [bytes([rng.randrange(256)]) + (rng.choice(looks) if rng.random() < 0.5 else
                                                  rng.randbytes(rng.randrange(0, 30)))
                  for _ in range(rng.randrange(0, 12))]
        check(_native, b"|".join(pieces))
