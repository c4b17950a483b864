"""The cluster file of a central API (``pcapwire serve --cluster FILE``), in TOML::

    [central]
    cert = "central.crt"   # client certificate the central presents to sensors
    key = "central.key"
    ca = "ca.crt"          # CA of the sensors' server certificates
    timeout_s = 10         # a sensor silent this long is reported missing
    [nats]                 # optional: where long jobs go
    url = "nats://127.0.0.1:4222"
    [[sensor]]
    name = "site-a"
    url = "https://127.0.0.1:8441"
    tenants = { acme = "site-a-acme.token" }  # tenant -> file holding the sensor's token

Relative paths are relative to the file. Each token file holds one token the sensor
issued (``pcapwire token create --tenant acme --role analyst`` there); its role is the
most the central may do there for that tenant. Unknown keys are errors; every error names
the file and the key (TOML syntax errors also the line).
"""

from __future__ import annotations

import ssl
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from pcapwire.api.authdb import TOKEN_RE
from pcapwire.errors import ConfigError
from pcapwire.names import NAME_RE

MAX_CLUSTER_FILE_BYTES = 1 * 2**20  # a cluster file larger than this is refused
MAX_SENSORS = 256  # [[sensor]] entries in one file
MAX_TENANTS_PER_SENSOR = 1024  # entries of one sensor's ``tenants``
MAX_TOKEN_FILE_BYTES = 4096  # a token file holds one token (~60 bytes)
DEFAULT_TIMEOUT_S = 10.0  # [central] timeout_s when not given
MAX_TIMEOUT_S = 3600.0  # largest [central] timeout_s
NATS_SCHEMES = ("nats", "tls")

KEYS = {"": {"central", "nats", "sensor"}, "central": {"cert", "key", "ca", "timeout_s"},
        "nats": {"url"}, "sensor": {"name", "url", "tenants"}}


@dataclass(frozen=True)
class CentralConfig:
    """The central's side of the mutual TLS, and how long a sensor may stay silent."""

    cert: Path
    key: Path
    ca: Path
    timeout_s: float = DEFAULT_TIMEOUT_S

    def ssl_context(self) -> ssl.SSLContext:
        """The client context for calling sensors (:func:`.tls.central_client_context`)."""
        from pcapwire.cluster.tls import central_client_context

        return central_client_context(self.cert, self.key, self.ca)


@dataclass(frozen=True)
class SensorConfig:
    """One sensor: its API's base URL and, per tenant it serves, the sensor's token."""

    name: str
    url: str  # https://host[:port], no path, no trailing slash
    tenants: Mapping[str, str] = field(repr=False)  # tenant -> token (a secret)


@dataclass(frozen=True)
class ClusterConfig:
    path: Path
    central: CentralConfig
    sensors: tuple[SensorConfig, ...]  # in file order
    nats_url: str | None = None

    def sensors_for(self, tenant: str) -> tuple[SensorConfig, ...]:
        """The sensors serving ``tenant``, in file order (none for an unknown tenant)."""
        return tuple(s for s in self.sensors if tenant in s.tenants)

    def sensor(self, name: str) -> SensorConfig:
        for s in self.sensors:
            if s.name == name:
                return s
        raise KeyError(name)


class _Reader:
    """Typed access to one table of the file, with errors naming file and key."""

    def __init__(self, path: Path, where: str, table: Any) -> None:
        self.path, self.where = path, where
        if not isinstance(table, dict):
            self.fail("", f"must be a table, not {type(table).__name__}")
        self.table: dict[str, Any] = table

    def fail(self, key: str, message: str) -> NoReturn:
        at = f"{self.where} key {key!r}" if key else self.where
        raise ConfigError(f"{self.path}: {at}: {message}")

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.table) - allowed)
        if unknown:
            self.fail(unknown[0], f"unknown key; use {', '.join(sorted(allowed))}")

    def text(self, key: str) -> str:
        if key not in self.table:
            self.fail(key, "missing")
        value = self.table[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, not {value!r}")
        return str(value).strip()

    def file(self, key: str, value: str | None = None) -> Path:
        """An existing regular file; relative paths are relative to the cluster file."""
        path = self.path.parent / (value if value is not None else self.text(key))
        if not path.is_file():
            self.fail(key, f"{path} is not a readable file")
        return path.resolve()


def _url(r: _Reader) -> str:
    text = r.text("url")
    url = urllib.parse.urlsplit(text)
    try:
        port = url.port
    except ValueError as exc:
        r.fail("url", f"{text!r}: {exc}")
    if url.scheme != "https" or not url.hostname or url.username or url.password \
            or url.path not in ("", "/") or url.query or url.fragment:
        r.fail("url", f"{text!r} must be https://HOST[:PORT] (a sensor serves mutual TLS; "
               "no path, user or query)")
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"https://{host}" + (f":{port}" if port is not None else "")


def _token(r: _Reader, tenant: str, value: Any) -> str:
    key = f"tenants.{tenant}"
    if not NAME_RE.fullmatch(tenant):
        r.fail(key, "invalid tenant name: use 1-63 characters a-z 0-9 _ -, starting with a "
               "letter or digit")
    if not isinstance(value, str) or not value.strip():
        r.fail(key, f"must be the name of a file holding the sensor's token, not {value!r}")
    path = r.file(key, value)
    if path.stat().st_size > MAX_TOKEN_FILE_BYTES:
        r.fail(key, f"{path} is larger than {MAX_TOKEN_FILE_BYTES} bytes; it must hold one "
               "token")
    try:
        token = path.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        r.fail(key, f"cannot read {path}: {exc}")
    if not TOKEN_RE.fullmatch(token):
        r.fail(key, f"{path} does not hold a pcapwire token (pwt_…); create one on the "
               f"sensor with `pcapwire token create --tenant {tenant} --role analyst`")
    return token


def _sensor(path: Path, index: int, table: Any) -> SensorConfig:
    r = _Reader(path, f"[[sensor]] #{index + 1}", table)
    r.check_keys(KEYS["sensor"])
    name = r.text("name")
    r.where += f" ({name})"
    if not NAME_RE.fullmatch(name):
        r.fail("name", "invalid sensor name: use 1-63 characters a-z 0-9 _ -, starting with "
               "a letter or digit")
    url = _url(r)
    tenants = r.table.get("tenants")
    if not isinstance(tenants, dict) or not tenants:
        r.fail("tenants", "must be a table of at least one tenant = \"TOKEN_FILE\"")
    if len(tenants) > MAX_TENANTS_PER_SENSOR:
        r.fail("tenants", f"{len(tenants)} tenants; at most {MAX_TENANTS_PER_SENSOR}")
    tokens = {tenant: _token(r, tenant, value) for tenant, value in tenants.items()}
    seen: dict[str, str] = {}
    for tenant, token in tokens.items():
        if token in seen:  # a token is bound to one tenant: one of the two is wrong
            r.fail(f"tenants.{tenant}", f"the same token as tenants.{seen[token]}; each "
                   "tenant needs its own token (a sensor token belongs to one tenant)")
        seen[token] = tenant
    return SensorConfig(name, url, MappingProxyType(tokens))


def _central(path: Path, table: Any) -> CentralConfig:
    r = _Reader(path, "[central]", table)
    r.check_keys(KEYS["central"])
    timeout = r.table.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not 0 < timeout <= MAX_TIMEOUT_S:
        r.fail("timeout_s", f"must be a number of seconds above 0 and at most "
               f"{MAX_TIMEOUT_S:g}, not {timeout!r}")
    central = CentralConfig(r.file("cert"), r.file("key"), r.file("ca"), float(timeout))
    try:
        central.ssl_context()
    except ConfigError as exc:
        r.fail("cert", str(exc))
    return central


def _nats(path: Path, table: Any) -> str:
    r = _Reader(path, "[nats]", table)
    r.check_keys(KEYS["nats"])
    url = r.text("url")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in NATS_SCHEMES or not parts.hostname:
        r.fail("url", f"{url!r} must be {' or '.join(s + '://HOST[:PORT]' for s in NATS_SCHEMES)}")
    return url


def load_cluster(path: Path) -> ClusterConfig:
    """Read and check a cluster file (token files and certificates included)."""
    path = Path(path).resolve()
    try:
        size = path.stat().st_size
        if size > MAX_CLUSTER_FILE_BYTES:
            raise ConfigError(f"{path}: {size} bytes; a cluster file may have at most "
                              f"{MAX_CLUSTER_FILE_BYTES}")
        doc = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the cluster file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text at byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    top = _Reader(path, "top level", doc)
    top.check_keys(KEYS[""])
    if "central" not in doc:
        top.fail("central", "missing: the [central] table names the central's certificate, "
                 "key and the sensors' CA")
    sensors = doc.get("sensor")
    if not isinstance(sensors, list) or not sensors:
        top.fail("sensor", "list at least one [[sensor]] table (name, url, tenants)")
    if len(sensors) > MAX_SENSORS:
        top.fail("sensor", f"{len(sensors)} sensors; at most {MAX_SENSORS}")
    central = _central(path, doc["central"])
    parsed = tuple(_sensor(path, i, s) for i, s in enumerate(sensors))
    for kind in ("name", "url"):
        values = [getattr(s, kind) for s in parsed]
        for i, value in enumerate(values):
            if value in values[:i]:
                raise ConfigError(f"{path}: [[sensor]] #{i + 1} key {kind!r}: {value!r} is "
                                  f"also sensor #{values.index(value) + 1}'s")
    nats = _nats(path, doc["nats"]) if "nats" in doc else None
    return ClusterConfig(path, central, parsed, nats)
