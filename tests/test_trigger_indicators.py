"""Indicator import (pcapwire.triggers.indicators): STIX 2.1 bundles built with the stix2
package itself, a MISP event written by hand (tests/data/triggers/misp-event.json, in the
shape MISP exports), plain text; every problem with its position, nothing imported
unless bad entries may be skipped, and the named limits."""

from __future__ import annotations

import json

import pytest
import stix2
from conftest import REPO
from pcapwire.triggers import indicators as ind
from pcapwire.triggers.indicators import IndicatorImportError, load_indicator_file, load_indicators

MISP_EVENT = REPO / "tests" / "data" / "triggers" / "misp-event.json"
SHA256 = "6f1b8e5bb1f5f9d4a0ba4e2a13f1e8c08fda8f5b2c4fa3e0e1a38c6d6a8a7f11"


def _bundle(*patterns: str, **extra) -> str:
    objs = [stix2.Indicator(pattern=p, pattern_type=extra.get("pattern_type", "stix"),
                            valid_from="2026-01-01T00:00:00Z", revoked=extra.get("revoked",
                                                                                  False))
            for p in patterns]
    identity = stix2.Identity(name="pcapwire tests", identity_class="organization")
    return stix2.Bundle(identity, *objs).serialize()


def test_stix_bundle_supported_patterns():
    text = _bundle(
        "[ipv4-addr:value = '192.150.187.43'] OR [ipv6-addr:value ISSUBSET '2001:db8::/32']",
        "[domain-name:value = 'Bro.ICIR.org' OR domain-name:value IN ('a.example', "
        "'b.example')]",
        f"[file:hashes.'SHA-256' = '{SHA256.upper()}' AND file:name = 'bro.tar.gz']",
        "[file:hashes.MD5 = '0123456789abcdef0123456789abcdef'] OR "
        "([file:hashes.'SHA-1' = 'da39a3ee5e6b4b0d3255bfef95601890afd80709'])",
        "[url:value = 'http://bro.icir.org/download/']",
        "[ipv4-addr:value = '10.1.0.0/16']")
    r = load_indicators(text, source="b.json")
    assert r.format == "stix" and r.problems == [] and r.ignored == []
    assert vars(r.indicators) == {
        "ips": ["192.150.187.43", "2001:db8::/32", "10.1.0.0/16"],
        "domains": ["bro.icir.org", "a.example", "b.example"],
        "urls": ["http://bro.icir.org/download/"], "ja3": [], "ja4": [],
        "sha256": [SHA256], "md5": ["0123456789abcdef0123456789abcdef"],
        "sha1": ["da39a3ee5e6b4b0d3255bfef95601890afd80709"]}


def test_stix_unsupported_patterns_are_reported_with_the_object_id():
    bad = ["[network-traffic:dst_port = 443]",
           "[ipv4-addr:value = '192.0.2.1'] WITHIN 5 SECONDS",
           "[ipv4-addr:value = '192.0.2.1'] AND [domain-name:value = 'x.example']",
           "[ipv4-addr:value != '192.0.2.1']",
           "[x509-certificate:hashes.'SHA-1' = 'da39a3ee5e6b4b0d3255bfef95601890afd80709']",
           "[domain-name:value = 'not a domain']"]
    text = _bundle("[ipv4-addr:value = '192.0.2.9']", *bad)
    ids = [o["id"] for o in json.loads(text)["objects"]]
    with pytest.raises(IndicatorImportError) as err:
        load_indicators(text, "stix", "b.json")
    msgs = [str(p) for p in err.value.problems]
    assert [m.split(": ")[1] for m in msgs] == [f"objects[{i}] {ids[i]}" for i in range(2, 8)]
    assert "object path network-traffic:dst_port" in msgs[0]
    assert "qualifier WITHIN 5 SECONDS" in msgs[1]
    assert "AND of observations (only OR)" in msgs[2]
    assert "operator != on ipv4-addr" in msgs[3]
    assert "object path x509-certificate:hashes.SHA-1" in msgs[4]
    assert "'not a domain' is no domain name" in msgs[5]
    assert str(err.value).endswith("b.json: nothing imported (6 problem(s)); fix them, or skip "
                                   "the bad entries (--skip-bad)")
    # skipping: the good one imports, the bad ones stay listed
    r = load_indicators(text, "stix", "b.json", skip_bad=True)
    assert r.indicators.ips == ["192.0.2.9"] and len(r.problems) == 6


def test_stix_other_pattern_types_revoked_and_bad_documents():
    r = load_indicators(_bundle("[ipv4-addr:value = '192.0.2.1']", revoked=True), "auto", "r")
    assert r.indicators.count() == 0 and [p.message for p in r.ignored] == ["revoked"]
    with pytest.raises(IndicatorImportError, match="unsupported pattern type 'suricata'"):
        load_indicators(_bundle("alert ip any any -> any any (sid:1;)",
                                pattern_type="suricata"), "stix", "s")
    with pytest.raises(IndicatorImportError, match="x.json: not a STIX bundle"):
        load_indicators('{"type": "indicator"}', "stix", "x.json")
    with pytest.raises(ind.ConfigError, match=r"^x.json:1:2: not JSON"):
        load_indicators("{oops", "stix", "x.json")
    broken = json.loads(_bundle("[ipv4-addr:value = '192.0.2.1']"))
    broken["objects"][1]["pattern"] = "[ipv4-addr:value = ]"
    with pytest.raises(IndicatorImportError, match=r"objects\[1\] indicator--.*: invalid "
                       "indicator: Invalid value for Indicator 'pattern'"):
        load_indicators(json.dumps(broken), "auto", "x.json")


def test_misp_event_with_objects_to_ids_and_ignored_entries():
    r = load_indicator_file(MISP_EVENT)
    assert r.format == "misp" and r.problems == []
    assert vars(r.indicators) == {
        "ips": ["192.150.187.43", "198.51.100.9", "203.0.113.5", "2001:db8::10"],
        "domains": ["bro.icir.org", "update.example"],
        "urls": ["http://bro.icir.org/download/bro-2.1.tar.gz"],
        "ja3": ["e7eca2baf4458d095b7f45da28c16c34"], "ja4": [], "sha256": [SHA256],
        "md5": ["0123456789abcdef0123456789abcdef"],
        "sha1": ["da39a3ee5e6b4b0d3255bfef95601890afd80709"]}
    assert [(p.where.split(" ")[0], p.message.split(": ")[-1]) for p in r.ignored] == [
        ("Event.Attribute[6]", "to_ids is not set (not for detection)"),
        ("Event.Attribute[7]", "to_ids is not set (not for detection)"),
        ("Event.Attribute[8]", "type 'regkey' is nothing a trigger matches in packets"),
        ("Event.Attribute[9]", "deleted"),
        ("Event.Object[0].Attribute[0]", "to_ids is not set (not for detection)")]
    # a search result wrapping the same event reads the same
    doc = {"response": [json.loads(MISP_EVENT.read_text())]}
    again = load_indicators(json.dumps(doc), "auto", "search.json")
    assert vars(again.indicators) == vars(r.indicators)


def test_misp_bad_values_name_the_attribute():
    event = {"Event": {"Attribute": [
        {"uuid": "u1", "type": "ip-dst", "to_ids": True, "value": "300.1.1.1"},
        {"uuid": "u2", "type": "ip-dst|port", "to_ids": True, "value": "192.0.2.1"},
        {"uuid": "u3", "type": "domain", "to_ids": True, "value": "ok.example"}],
        "Object": [{"Attribute": [{"type": "sha256", "to_ids": True, "value": "abc"}]}]}}
    with pytest.raises(IndicatorImportError) as err:
        load_indicators(json.dumps(event), "misp", "e.json")
    assert [str(p) for p in err.value.problems] == [
        "e.json: Event.Attribute[0] (u1): ip: '300.1.1.1' is no IP address or CIDR network",
        "e.json: Event.Attribute[1] (u2): ip-dst|port '192.0.2.1': expected 2 part(s) "
        "separated by '|'",
        "e.json: Event.Object[0].Attribute[0]: sha256: 'abc' is no sha256 (64 hex digits)"]
    with pytest.raises(IndicatorImportError, match="not a MISP event"):
        load_indicators('{"Attribute": []}', "misp", "e.json")


def test_text_kinds_comments_defanged_and_prefixes():
    text = ("# campaign 7\n\n192.150.187.43\n10.0.0.0/8   # lab net\nhxxp://evil[.]example/x\n"
            "Evil.Example\nja3:E7ECA2BAF4458D095B7F45DA28C16C34\n"
            "e7eca2baf4458d095b7f45da28c16c34\n2001:db8::1\n"
            "t13d1516h2_8daaf6152771_02713d6af862\n" + "A" * 64 + "\n" + "b" * 40 + "\n"
            "domain:c2.example\n")
    r = load_indicators(text, source="iocs.txt")
    assert r.format == "text"
    assert vars(r.indicators) == {
        "ips": ["192.150.187.43", "10.0.0.0/8", "2001:db8::1"],
        "domains": ["evil.example", "c2.example"], "urls": ["http://evil.example/x"],
        "ja3": ["e7eca2baf4458d095b7f45da28c16c34"],
        "ja4": ["t13d1516h2_8daaf6152771_02713d6af862"], "sha256": ["a" * 64],
        "md5": ["e7eca2baf4458d095b7f45da28c16c34"], "sha1": ["b" * 40]}


def test_text_bad_lines_stop_the_import_unless_skipped(tmp_path):
    f = tmp_path / "iocs.txt"
    f.write_text("192.0.2.1\nbad..name\nfoo:bar\ntwo words\n" + "x" * (ind.MAX_LINE_CHARS + 1)
                 + "\nok.example\n")
    with pytest.raises(IndicatorImportError) as err:
        load_indicator_file(f)
    assert str(err.value).splitlines() == [
        f"{f}:2: domain: 'bad..name' is no domain name (a leading '*.' matches subdomains)",
        f"{f}:3: 'foo:bar': unknown kind 'foo'; known: ip, domain, url, ja3, ja4, sha256, "
        "sha1, md5",
        f"{f}:4: 'two words': one indicator per line (found 2 words)",
        f"{f}:5: line longer than {ind.MAX_LINE_CHARS} characters",
        f"{f}: nothing imported (4 problem(s)); fix them, or skip the bad entries "
        "(--skip-bad)"]
    r = load_indicator_file(f, skip_bad=True)
    assert (r.indicators.ips, r.indicators.domains) == (["192.0.2.1"], ["ok.example"])
    assert [p.line for p in r.problems] == [2, 3, 4, 5]


def test_limits(tmp_path, monkeypatch):
    many = "".join(f"bad{i}..x\n" for i in range(ind.MAX_PROBLEMS + 5))
    with pytest.raises(IndicatorImportError) as err:
        load_indicators(many, "text", "m.txt")
    assert len(err.value.problems) == ind.MAX_PROBLEMS
    assert err.value.result.more_problems == 5
    assert f"… and 5 more\nm.txt: nothing imported ({ind.MAX_PROBLEMS + 5} problem(s))" \
        in str(err.value)
    monkeypatch.setattr(ind, "MAX_INDICATOR_FILE_BYTES", 10)
    big = tmp_path / "big.txt"
    big.write_text("192.0.2.1\n192.0.2.2\n")
    with pytest.raises(ind.ConfigError, match=r"big.txt: 20 bytes, over the limit of 10 "
                       "bytes for an indicator file; split it"):
        load_indicator_file(big)
    with pytest.raises(ind.ConfigError, match="over the limit of 10 bytes"):
        load_indicators("192.0.2.1\n192.0.2.2\n", "text", "body")
    with pytest.raises(ind.ConfigError, match="format 'csv': one of auto, stix, misp, text"):
        load_indicators("", "csv", "x")


@pytest.mark.parametrize("value", [
    "1.2.3.4", " 10.0.0.1 ", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3", "1.2.3.256",
    "1.2.3.4/32", "1.2.3.7/24", "::1", "::ffff:1.2.3.4", "2001:DB8::1", "1.2.3.4.5", "a.b.c.d"])
def test_plain_ipv4_fast_path_normalises_as_ipaddress_does(value: str) -> None:
    """normalise_indicator skips ipaddress for IPv4 addresses already in its form: the
    result (or the refusal) is ipaddress's for every input."""
    import ipaddress

    from pcapwire.errors import ConfigError
    from pcapwire.triggers.model import normalise_indicator

    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
        expected = str(net.network_address) if net.num_addresses == 1 else str(net)
    except ValueError:
        with pytest.raises(ConfigError, match="is no IP address or CIDR network"):
            normalise_indicator("ips", value, "x")
        return
    assert normalise_indicator("ips", value, "x") == expected


TRICKY_IPS = ["1.2.3.4", " 10.0.0.1 ", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3",
              "1.2.3.256", "1.2.3.4/32", "1.2.3.7/24", "::1", "2001:DB8::1", "1.2.3.4.5",
              "1.2.3.4\n5.6.7.8", "10.0.0.1\n", "", "1.2.3.\u0661", "1.2.3.4\r"]


@pytest.mark.parametrize("value", TRICKY_IPS)
def test_a_list_checked_at_once_equals_each_checked_alone(value: str) -> None:
    """from_dict checks a list of canonical IPv4 addresses in one regular expression
    (model._canonical_ipv4_list); one value that is not (whitespace, a newline inside,
    a non-ASCII digit, a network, IPv6, nothing) sends the whole list the slow way: the
    definition (or the error, with the value's position) is the one each value checked
    alone by normalise_indicator gives."""
    from pcapwire.errors import ConfigError
    from pcapwire.triggers.model import _canonical_ipv4_list, from_dict, normalise_indicator

    values = ["192.0.2.1", "192.0.2.2", value, "192.0.2.1"]
    assert _canonical_ipv4_list(values) == (value in ("1.2.3.4", "0.0.0.0",
                                                       "255.255.255.255"))
    try:
        expected = list(dict.fromkeys(normalise_indicator("ips", v, f"t: indicators.ips[{i}]")
                                      for i, v in enumerate(values)))
    except ConfigError as exc:
        with pytest.raises(ConfigError) as err:
            from_dict({"name": "t", "indicators": {"ips": values}}, "t")
        assert str(err.value) == str(exc)
        assert "indicators.ips[2]" in str(err.value)
        return
    assert from_dict({"name": "t", "indicators": {"ips": values}}).indicators.ips == expected
