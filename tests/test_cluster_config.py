"""The cluster file (``pcapwire serve --cluster FILE``): the documented example loads, every
mistake is an error naming the file and the key, every limit holds at its value and fails
one past it; the sensor's ``--client-ca``/``--client-cert-sha256`` settings."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from conftest import REPO
from pcapwire.api import ApiConfig
from pcapwire.cli import build_parser
from pcapwire.cli.serve import config_from
from pcapwire.cluster import config as cc
from pcapwire.cluster.config import load_cluster
from pcapwire.errors import ConfigError
from pcapwire.testing.certs import KeyPair, make_ca


def fake_token() -> str:
    """A string of a pcapwire token's form (the cluster file checks only the form)."""
    return f"pwt_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def doc_block(lang: str) -> str:
    """The first ``lang`` code block of docs/cluster.md."""
    text = (REPO / "docs" / "cluster.md").read_text()
    found = re.search(rf"```{lang}\n(.*?)```", text, re.S)
    assert found is not None
    return found[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d)
    return {"ca": ca.files, "central": ca.client_cert("central"),
            "other": ca.client_cert("other")}


@pytest.fixture
def cluster_dir(tmp_path: Path, pki: dict[str, KeyPair]) -> Path:
    """A directory with the documented file names: certificates and two token files."""
    for name, pair in (("ca", pki["ca"]), ("central", pki["central"])):
        (tmp_path / f"{name}.crt").write_bytes(pair.cert.read_bytes())
        (tmp_path / f"{name}.key").write_bytes(pair.key.read_bytes())
    for name in ("site-a-acme", "site-a-globex"):
        (tmp_path / f"{name}.token").write_text(fake_token() + "\n")
    return tmp_path


def write(directory: Path, text: str) -> Path:
    path = directory / "cluster.toml"
    path.write_text(text)
    return path


def base(sensors: str = "", central: str = "", nats: str = "") -> str:
    return f"""\
[central]
cert = "central.crt"
key = "central.key"
ca = "ca.crt"
{central}
{nats}
{sensors or '''[[sensor]]
name = "site-a"
url = "https://127.0.0.1:8441"
tenants = { acme = "site-a-acme.token" }'''}
"""


def error(directory: Path, text: str) -> str:
    path = write(directory, text)
    with pytest.raises(ConfigError) as caught:
        load_cluster(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    return message[len(f"{path}: "):]


def test_the_documented_file_loads(cluster_dir: Path) -> None:
    path = write(cluster_dir, doc_block("toml"))
    token = (cluster_dir / "site-a-acme.token").read_text().strip()
    got = load_cluster(path)
    assert got.path == path
    assert got.central == cc.CentralConfig(cluster_dir / "central.crt",
                                           cluster_dir / "central.key", cluster_dir / "ca.crt",
                                           10.0)
    assert [(s.name, s.url, dict(s.tenants)) for s in got.sensors] == [
        ("site-a", "https://127.0.0.1:8441", {"acme": token})]
    assert got.nats_url is None
    assert got.sensors_for("acme") == got.sensors and got.sensors_for("globex") == ()
    assert got.sensor("site-a") is got.sensors[0]
    with pytest.raises(KeyError):
        got.sensor("site-b")
    assert token not in repr(got)  # a secret: never in logs
    assert got.central.ssl_context().check_hostname


def test_relative_paths_order_nats_and_urls(cluster_dir: Path) -> None:
    sub = cluster_dir / "conf"
    sub.mkdir()
    (cluster_dir / "b.token").write_text(fake_token())
    text = """\
[central]
cert = "../central.crt"
key = "../central.key"
ca = "../ca.crt"
timeout_s = 2.5
[nats]
url = "nats://127.0.0.1:4222"
[[sensor]]
name = "site-b"
url = "https://[::1]:8442/"
tenants = { globex = "../b.token", acme = "../site-a-acme.token" }
[[sensor]]
name = "site-a"
url = "https://Sensor-A.example.net"
tenants = { acme = "../site-a-acme.token" }
"""
    got = load_cluster(write(sub, text))
    assert got.central.cert == cluster_dir / "central.crt" and got.central.timeout_s == 2.5
    assert got.nats_url == "nats://127.0.0.1:4222"
    assert [s.url for s in got.sensors] == ["https://[::1]:8442", "https://sensor-a.example.net"]
    assert [s.name for s in got.sensors_for("acme")] == ["site-b", "site-a"]
    assert [s.name for s in got.sensors_for("globex")] == ["site-b"]


SENSOR = '[[sensor]]\nname = "{name}"\nurl = "{url}"\ntenants = {tenants}\n'


def sensor(name: str = "site-a", url: str = "https://127.0.0.1:8441",
           tenants: str = '{ acme = "site-a-acme.token" }') -> str:
    return SENSOR.format(name=name, url=url, tenants=tenants)


@pytest.mark.parametrize(("text", "expected"), [
    ("[central\n", "not valid TOML: Expected ']' at the end of a table declaration "
     "(at line 1, column 9)"),
    (sensor(), "top level key 'central': missing: the [central] table names"),
    (base(nats="[extra]\nx = 1"), "top level key 'extra': unknown key; use central, nats, "
     "sensor"),
    (base(central='certs = "x"'), "[central] key 'certs': unknown key; use ca, cert, key, "
     "timeout_s"),
    (base().replace('cert = "central.crt"\n', ""), "[central] key 'cert': missing"),
    (base().replace('"central.crt"', '"nope.crt"'), "[central] key 'cert': {dir}/nope.crt is "
     "not a readable file"),
    (base().replace('"central.crt"', '7'), "[central] key 'cert': must be a non-empty string, "
     "not 7"),
    (base().replace('"central.key"', '"site-a-acme.token"'), "[central] key 'cert': cannot use "
     "the central's client certificate {dir}/central.crt with key {dir}/site-a-acme.token"),
    (base().replace('ca = "ca.crt"', 'ca = "site-a-acme.token"'), "[central] key 'cert': "
     "cannot read the sensors' CA certificate {dir}/site-a-acme.token"),
    (base(central="timeout_s = 0"), "[central] key 'timeout_s': must be a number of seconds "
     "above 0 and at most 3600, not 0"),
    (base(central="timeout_s = true"), "[central] key 'timeout_s': must be a number"),
    (base(central='timeout_s = "10"'), "[central] key 'timeout_s': must be a number"),
    ("sensor = 3\n" + base(sensors="# none"), "top level key 'sensor': list at least one "
     "[[sensor]] table"),
    (base(sensors="[sensor]\nname = 'a'"), "top level key 'sensor': list at least one "
     "[[sensor]] table"),
    ("sensor = [3]\n" + base(sensors="# none"), "[[sensor]] #1: must be a table, not int"),
    (base(sensors=sensor(url="http://127.0.0.1:8441")), "[[sensor]] #1 (site-a) key 'url': "
     "'http://127.0.0.1:8441' must be https://HOST[:PORT] (a sensor serves mutual TLS"),
    (base(sensors=sensor(url="https://127.0.0.1:8441/api")), "[[sensor]] #1 (site-a) key "
     "'url': 'https://127.0.0.1:8441/api' must be https://HOST[:PORT]"),
    (base(sensors=sensor(url="https://u:p@h")), "[[sensor]] #1 (site-a) key 'url': "
     "'https://u:p@h' must be https://HOST[:PORT]"),
    (base(sensors=sensor(url="https://h:99999")), "[[sensor]] #1 (site-a) key 'url': "
     "'https://h:99999': Port out of range 0-65535"),
    (base(sensors=sensor(name="Site A")), "[[sensor]] #1 (Site A) key 'name': invalid sensor "
     "name"),
    (base(sensors=sensor() + 'token = "x"\n'), "[[sensor]] #1 key 'token': unknown key; use "
     "name, tenants, url"),
    (base(sensors=sensor(tenants="{}")), "[[sensor]] #1 (site-a) key 'tenants': must be a "
     "table of at least one tenant"),
    (base(sensors=sensor(tenants='{ ACME = "site-a-acme.token" }')), "[[sensor]] #1 (site-a) "
     "key 'tenants.ACME': invalid tenant name"),
    (base(sensors=sensor(tenants='{ acme = "gone.token" }')), "[[sensor]] #1 (site-a) key "
     "'tenants.acme': {dir}/gone.token is not a readable file"),
    (base(sensors=sensor(tenants='{ acme = "central.crt" }')), "[[sensor]] #1 (site-a) key "
     "'tenants.acme': {dir}/central.crt does not hold a pcapwire token (pwt_…); create one "
     "on the sensor with `pcapwire token create --tenant acme --role analyst`"),
    (base(sensors=sensor(tenants='{ acme = "site-a-acme.token", globex = '
                                 '"site-a-acme.token" }')),
     "[[sensor]] #1 (site-a) key 'tenants.globex': the same token as tenants.acme; each "
     "tenant needs its own token"),
    (base(sensors=sensor() + sensor(url="https://127.0.0.1:9")), "[[sensor]] #2 key 'name': "
     "'site-a' is also sensor #1's"),
    (base(sensors=sensor() + sensor(name="b", url="https://127.0.0.1:8441/")),
     "[[sensor]] #2 key 'url': 'https://127.0.0.1:8441' is also sensor #1's"),
    (base(nats='[nats]\nurl = "http://127.0.0.1:4222"'), "[nats] key 'url': "
     "'http://127.0.0.1:4222' must be nats://HOST[:PORT] or tls://HOST[:PORT]"),
    (base(nats="[nats]"), "[nats] key 'url': missing"),
])
def test_errors_name_file_and_key(cluster_dir: Path, text: str, expected: str) -> None:
    message = error(cluster_dir, text)
    assert message.startswith(expected.format(dir=cluster_dir)), message


def test_unreadable_files(cluster_dir: Path) -> None:
    missing = cluster_dir / "none.toml"
    with pytest.raises(ConfigError, match=rf"^cannot read the cluster file {missing}: No such "
                       "file or directory$"):
        load_cluster(missing)
    path = cluster_dir / "cluster.toml"
    path.write_bytes(b'[central]\ncert = "\xff"\n')
    with pytest.raises(ConfigError, match=rf"^{path}: not UTF-8 text at byte 18$"):
        load_cluster(path)


def test_file_size_limit(cluster_dir: Path) -> None:
    text = base()
    pad = cc.MAX_CLUSTER_FILE_BYTES - len(text) - 1
    path = write(cluster_dir, text + "#" * pad + "\n")
    assert path.stat().st_size == cc.MAX_CLUSTER_FILE_BYTES
    assert len(load_cluster(path).sensors) == 1
    path.write_text(text + "#" * (pad + 1) + "\n")
    with pytest.raises(ConfigError, match=f"{cc.MAX_CLUSTER_FILE_BYTES + 1} bytes; a cluster "
                       f"file may have at most {cc.MAX_CLUSTER_FILE_BYTES}$"):
        load_cluster(path)


def test_sensor_count_limit(cluster_dir: Path) -> None:
    many = "".join(sensor(f"s{i}", f"https://127.0.0.1:{i + 1}")
                   for i in range(cc.MAX_SENSORS))
    assert len(load_cluster(write(cluster_dir, base(sensors=many))).sensors) == cc.MAX_SENSORS
    too_many = many + sensor("one-more", "https://127.0.0.1:9999")
    assert error(cluster_dir, base(sensors=too_many)) == \
        f"top level key 'sensor': {cc.MAX_SENSORS + 1} sensors; at most {cc.MAX_SENSORS}"


def test_tenant_count_limit(cluster_dir: Path) -> None:
    tenants = []
    for i in range(cc.MAX_TENANTS_PER_SENSOR):
        (cluster_dir / f"t{i}.token").write_text(fake_token())
        tenants.append(f't{i} = "t{i}.token"')
    table = "{ " + ", ".join(tenants) + " }"
    got = load_cluster(write(cluster_dir, base(sensors=sensor(tenants=table))))
    assert len(got.sensors[0].tenants) == cc.MAX_TENANTS_PER_SENSOR
    table = table[:-2] + ', more = "t0.token" }'
    assert error(cluster_dir, base(sensors=sensor(tenants=table))) == \
        f"[[sensor]] #1 (site-a) key 'tenants': {cc.MAX_TENANTS_PER_SENSOR + 1} tenants; " \
        f"at most {cc.MAX_TENANTS_PER_SENSOR}"


def test_token_file_size_limit(cluster_dir: Path) -> None:
    token_file = cluster_dir / "site-a-acme.token"
    token = fake_token()
    token_file.write_text(token + " " * (cc.MAX_TOKEN_FILE_BYTES - len(token) - 1) + "\n")
    assert token_file.stat().st_size == cc.MAX_TOKEN_FILE_BYTES
    assert load_cluster(write(cluster_dir, base())).sensors[0].tenants == {"acme": token}
    token_file.write_text(token + " " * (cc.MAX_TOKEN_FILE_BYTES - len(token)) + "\n")
    assert error(cluster_dir, base()) == (
        f"[[sensor]] #1 (site-a) key 'tenants.acme': {token_file} is larger than "
        f"{cc.MAX_TOKEN_FILE_BYTES} bytes; it must hold one token")


def test_timeout_limit(cluster_dir: Path) -> None:
    top = base(central=f"timeout_s = {cc.MAX_TIMEOUT_S}")
    assert load_cluster(write(cluster_dir, top)).central.timeout_s == cc.MAX_TIMEOUT_S
    assert error(cluster_dir, base(central=f"timeout_s = {cc.MAX_TIMEOUT_S + 0.5}")) == (
        "[central] key 'timeout_s': must be a number of seconds above 0 and at most "
        f"{cc.MAX_TIMEOUT_S:g}, not {cc.MAX_TIMEOUT_S + 0.5}")
    assert load_cluster(write(cluster_dir, base())).central.timeout_s == cc.DEFAULT_TIMEOUT_S


def test_serve_flags(cluster_dir: Path, pki: dict[str, KeyPair]) -> None:
    def config(*flags: str) -> ApiConfig:
        argv = ["--data-dir", str(cluster_dir / "data"), "serve", *flags]
        return config_from(build_parser(argv).parse_args(argv))

    tls = ("--tls-cert", str(pki["central"].cert), "--tls-key", str(pki["central"].key))
    pin = pki["central"].sha256
    colons = ":".join(pin[i:i + 2] for i in range(0, 64, 2)).upper()
    got = config(*tls, "--client-ca", str(pki["ca"].cert), "--client-cert-sha256", colons,
                 "--client-cert-sha256", f"sha256 Fingerprint={pki['other'].sha256}")
    assert got.client_ca == pki["ca"].cert
    assert got.client_cert_sha256 == (pin, pki["other"].sha256)
    assert got.cluster is None and config().client_ca is None
    path = write(cluster_dir, base())
    assert config("--cluster", str(path)).cluster == load_cluster(path)
    with pytest.raises(ConfigError, match=r"^--client-ca needs --tls-cert and --tls-key"):
        config("--client-ca", str(pki["ca"].cert))
    with pytest.raises(ConfigError, match=r"^--client-cert-sha256 needs --client-ca"):
        config(*tls, "--client-cert-sha256", pin)
    with pytest.raises(ConfigError, match=r"^invalid SHA-256 fingerprint 'abc': give 64 hex"):
        config(*tls, "--client-ca", str(pki["ca"].cert), "--client-cert-sha256", "abc")
    with pytest.raises(ConfigError, match=rf"^{cluster_dir}/gone.toml|cannot read the cluster "
                       rf"file {cluster_dir}/gone.toml"):
        config("--cluster", str(cluster_dir / "gone.toml"))
